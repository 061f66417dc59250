"""Tokenize examples for training: ChatML prompt + answer, labels only on the answer tokens (pure-ish)."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch

from ..tasks.chat import render_answer, render_prompt
from ..tasks.example import Example

IGNORE = -100


def encode(tokenizer: Any, ex: Example, max_len: int) -> tuple[list[int], list[int]]:
    """(input_ids, labels); prompt tokens get IGNORE. Over-long prompts are cut from the left."""
    prompt = tokenizer(render_prompt(ex.prompt), add_special_tokens=False)["input_ids"]
    answer = tokenizer(render_answer(ex.target), add_special_tokens=False)["input_ids"]
    if len(answer) >= max_len:
        answer = answer[: max_len // 2]
    prompt = prompt[-(max_len - len(answer)) :]
    return prompt + answer, [IGNORE] * len(prompt) + answer


def collate(batch: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors: input_ids, attention_mask, labels, each [B, S_max]."""
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (x, y) in enumerate(batch):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def balance_by_target(examples: Sequence[Example], seed: int) -> list[Example]:
    """Equal counts per target label (seeded downsampling), so a classifier cannot win by the majority."""
    groups: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        groups[ex.target].append(ex)
    if len(groups) < 2:
        raise ValueError("balancing needs at least two distinct targets")
    n = min(len(g) for g in groups.values())
    rng = random.Random(seed)
    picked = [ex for key in sorted(groups) for ex in rng.sample(groups[key], n)]
    rng.shuffle(picked)
    return picked
