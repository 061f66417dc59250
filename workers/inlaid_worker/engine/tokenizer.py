"""Prompt encoding: the model directory's tokenizer (transformers AutoTokenizer) and its chat template."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inlaid_worker.engine.detokenizer import decode


class PromptError(ValueError):
    """A prompt cannot be encoded (e.g. no chat template, or empty)."""


class PromptTokenizer:
    def __init__(self, tokenizer: Any) -> None:
        self.hf = tokenizer
        self._lock = (
            threading.Lock()
        )  # encoding may touch the Rust tokenizer's settings; gRPC threads share it

    @classmethod
    def from_model_dir(cls, model_dir: str | Path) -> PromptTokenizer:
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(str(model_dir)))

    def encode_prompt(self, prompt: str) -> list[int]:
        with self._lock:
            ids = list(self.hf(prompt)["input_ids"])
        if not ids:
            raise PromptError("the prompt is empty")
        return ids

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        if not messages:
            raise PromptError("messages must not be empty")
        if not getattr(self.hf, "chat_template", None):
            raise PromptError("this model's tokenizer has no chat template")
        with self._lock:
            text = self.hf.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
            # The template already holds every special token; don't let the tokenizer add a BOS again.
            return list(self.hf(text, add_special_tokens=False)["input_ids"])

    def decode(self, token_ids: list[int]) -> str:
        return decode(self.hf, token_ids)

    @property
    def eos_token_ids(self) -> set[int]:
        eos = self.hf.eos_token_id
        return set() if eos is None else {int(eos)}

    @property
    def vocab_size(self) -> int:
        return len(self.hf)
