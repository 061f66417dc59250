"""Llama model shapes as plain numbers (no torch): shared by the engine benchmarks (random_model.py) and the
KV-budget arithmetic of the simulator (bench/sim/kv_budget.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int


LLAMA2_7B = Shape(4096, 11008, 32, 32, 32, 32000)
TINY = Shape(128, 256, 2, 4, 2, 512)
