"""Per-token multi-adapter LoRA: the torch reference behind one small function a kernel can replace.

Semantics of `lora_reference(y, x, mapping, weights)`:
    for each row t with slot a = adapter_ids[t] >= 0 and a in weights:
        y[t] += scale_a * ((x[t] @ A_a^T) @ B_a^T)        # A_a: [r_a, in], B_a: [out, r_a]
Rows with adapter -1 (the base model), and rows whose adapter does not target this module, are unchanged.
Adapters of different ranks share one batch; rows are grouped by adapter once per step (`LoraMapping`), so
each adapter costs one shrink (x @ A^T) and one expand (@ B^T) per module. The scale is applied after the
expand, as PEFT does, so results match PEFT to rounding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LoraWeights:
    a: torch.Tensor  # [rank, in_features]
    b: torch.Tensor  # [out_features, rank]
    scale: float


@dataclass(frozen=True)
class LoraMapping:
    """Rows of one step grouped by adapter slot; built once per step, used by every LoRA'd projection."""

    groups: tuple[tuple[int, torch.Tensor], ...]  # (slot, rows [n] int64), slots >= 0 only

    @staticmethod
    def build(adapter_ids: torch.Tensor) -> LoraMapping:
        """adapter_ids: [T] int64, -1 = no adapter."""
        slots = [int(s) for s in torch.unique(adapter_ids).tolist() if s >= 0]
        return LoraMapping(tuple((s, torch.nonzero(adapter_ids == s).flatten()) for s in slots))

    @property
    def empty(self) -> bool:
        return not self.groups


def lora_reference(
    y: torch.Tensor, x: torch.Tensor, mapping: LoraMapping, weights: Mapping[int, LoraWeights]
) -> None:
    """Add each row's adapter delta to y ([T, out], may be a column slice) in place; x: [T, in]."""
    for slot, rows in mapping.groups:
        w = weights.get(slot)
        if w is None:
            continue
        delta = F.linear(F.linear(x[rows], w.a), w.b) * w.scale  # [n, out]
        y.index_add_(0, rows, delta.to(y.dtype))
