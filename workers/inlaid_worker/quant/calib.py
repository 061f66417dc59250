"""Calibration data: JSONL lines of {"text": ...} or {"messages": [...]} -> token id sequences.

Messages go through the model's chat template; text is tokenized as is (with the tokenizer's special
tokens). Sequences are truncated to `max_len`; `select` picks a seeded subset (calibration seeds).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch


def read_calibration(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSONL file; raises with the line number on malformed input."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"calibration file {p} not found")
    records: list[dict[str, Any]] = []
    for no, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}:{no}: not JSON ({e.msg})") from None
        if not isinstance(rec, dict) or not (isinstance(rec.get("text"), str) or isinstance(rec.get("messages"), list)):
            raise ValueError(f'{p}:{no}: expected {{"text": str}} or {{"messages": [...]}}')
        records.append(rec)
    if not records:
        raise ValueError(f"calibration file {p} is empty")
    return records


def tokenize_records(records: Sequence[dict[str, Any]], tokenizer: Any, max_len: int = 512) -> list[torch.Tensor]:
    """One int64 [S] tensor per record, S <= max_len; empty results are dropped."""
    if max_len <= 0:
        raise ValueError("max_len must be positive")
    out: list[torch.Tensor] = []
    for rec in records:
        if isinstance(rec.get("messages"), list):
            text = tokenizer.apply_chat_template(rec["messages"], tokenize=False)
        else:
            text = rec["text"]
        ids = tokenizer(text, add_special_tokens=True)["input_ids"][:max_len]
        if ids:
            out.append(torch.tensor(ids, dtype=torch.int64))
    if not out:
        raise ValueError("calibration data produced no tokens")
    return out


def select(seqs: Sequence[torch.Tensor], n: int | None, seed: int) -> list[torch.Tensor]:
    """A seeded subset of n sequences (all, shuffled, when n is None or larger)."""
    idx = list(range(len(seqs)))
    random.Random(seed).shuffle(idx)
    return [seqs[i] for i in idx[: n if n is not None else len(idx)]]


def load_calibration(
    path: str | Path, tokenizer: Any, max_len: int = 512, n: int | None = None, seed: int = 0
) -> list[torch.Tensor]:
    return select(tokenize_records(read_calibration(path), tokenizer, max_len), n, seed)
