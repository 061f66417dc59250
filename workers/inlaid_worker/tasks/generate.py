"""Greedy, batched generation with a Hugging Face causal LM (left padding, stop at <|im_end|>)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .chat import IM_END


@torch.inference_mode()
def generate(
    model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int, batch_size: int = 64
) -> list[str]:
    """Completions of already-rendered ChatML prompts, decoded without special tokens, in input order."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    stop = tokenizer.convert_tokens_to_ids(IM_END)
    device = next(model.parameters()).device
    # longest prompts first: batches of similar length waste less padding
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tokenizer(
            [prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False
        )
        enc = {k: v.to(device) for k, v in enc.items()}
        gen = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stop,
            pad_token_id=tokenizer.pad_token_id,
        )  # gen: [B, S_prompt + S_new]
        new = gen[:, enc["input_ids"].shape[1] :]
        for i, row in zip(idx, new):
            out[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
    return out
