"""Prompt encoding: the model directory's tokenizer (transformers AutoTokenizer) and its chat template."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inlaid_worker.engine.detokenizer import decode, special_ids
from inlaid_worker.engine.error_kind import ErrorKind
from inlaid_worker.engine.tool_template import HERMES_FALLBACK, TOOL_MARKERS, ToolSupport, detect_tool_support


def _is_template_error(exc: Exception) -> bool:
    try:
        from jinja2 import TemplateError
    except ImportError:  # pragma: no cover - transformers' chat templates need jinja2
        return False
    return isinstance(exc, TemplateError)


class PromptError(ValueError):
    """A prompt cannot be encoded (e.g. no chat template, or empty)."""

    kind = ErrorKind.BAD_INPUT


class PromptTokenizer:
    def __init__(self, tokenizer: Any) -> None:
        self.hf = tokenizer
        self._lock = (
            threading.Lock()
        )  # encoding may touch the Rust tokenizer's settings; gRPC threads share it
        # Tool calling (engine/tool_template.py): detected from the chat template; the server applies
        # --tool-call-parser over it at start-up.
        self.tool_support: ToolSupport = self._detect_tools()
        self._marker_drops: dict[str, frozenset[int] | None] = {}  # parser -> marker_drop()

    def _detect_tools(self) -> ToolSupport:
        try:
            return detect_tool_support(self.hf)
        except Exception:  # an odd tokenizer (or a test double): the gateway's Hermes rendering
            return HERMES_FALLBACK

    @classmethod
    def from_model_dir(cls, model_dir: str | Path) -> PromptTokenizer:
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(str(model_dir)))

    def encode_prompt(self, prompt: str, add_special_tokens: bool = True) -> list[int]:
        with self._lock:
            ids = list(self.hf(prompt, add_special_tokens=add_special_tokens)["input_ids"])
        if not ids:
            raise PromptError("the prompt is empty")
        return ids

    def encode_chat(
        self,
        messages: Sequence[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        add_special_tokens: bool = False,
    ) -> list[int]:
        """`tools` and messages with tool_calls / tool_call_id go to the template only when it renders them itself.
        `add_generation_prompt` False and `add_special_tokens` True are for /tokenize only (generation always opens
        the assistant turn, and adds no special tokens on top of the template's: vLLM's defaults for chat)."""
        if not messages:
            raise PromptError("messages must not be empty")
        if not getattr(self.hf, "chat_template", None):
            raise PromptError("this model's tokenizer has no chat template")
        tool_fields = tools is not None or any("tool_calls" in m or "tool_call_id" in m for m in messages)
        if tool_fields and not self.tool_support.native:
            raise PromptError("this model's chat template does not render tools (the gateway renders them as text)")
        with self._lock:
            try:
                text = self.hf.apply_chat_template(
                    list(messages), tools=tools, add_generation_prompt=add_generation_prompt, tokenize=False
                )
            except Exception as exc:
                # a template's raise_exception (jinja2 TemplateError) on a conversation it does not accept: Llama
                # 3.1, one call per assistant message; Mistral, 9-character call ids; Gemma, no system role;
                # Llama 2 / Mistral, alternating roles. Bad input either way, never a server fault.
                if tool_fields:
                    raise PromptError(f"the chat template refused the tool-call conversation: {exc}") from exc
                if _is_template_error(exc):
                    raise PromptError(f"the chat template refused the conversation: {exc}") from exc
                raise
            # The template already holds every special token: by default the tokenizer adds no BOS again.
            return list(self.hf(text, add_special_tokens=add_special_tokens)["input_ids"])

    def marker_drop(self) -> frozenset[int] | None:
        """The special ids a request keeping its tool markers still drops (IncrementalDetokenizer's `drop`): all
        but those of the tool format's markers; None when no marker is a special token here (decode as usual)."""
        parser = self.tool_support.parser
        if parser not in self._marker_drops:
            special = special_ids(self.hf)
            vocab = self.hf.get_added_vocab() if hasattr(self.hf, "get_added_vocab") else {}
            keep = {vocab[m] for m in TOOL_MARKERS.get(parser, ()) if vocab.get(m) in special}
            self._marker_drops[parser] = special - keep if keep else None
        return self._marker_drops[parser]

    def decode(self, token_ids: list[int]) -> str:
        return decode(self.hf, token_ids)

    @property
    def eos_token_ids(self) -> set[int]:
        eos = self.hf.eos_token_id
        return set() if eos is None else {int(eos)}

    @property
    def vocab_size(self) -> int:
        return len(self.hf)
