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
LLAMA2_13B = Shape(5120, 13824, 40, 40, 40, 32000)
TINY = Shape(128, 256, 2, 4, 2, 512)
TINY_MHA = Shape(128, 384, 1, 2, 2, 256)  # a second CPU-check shape: other sizes, heads == KV heads

SHAPES = {"7b": LLAMA2_7B, "13b": LLAMA2_13B, "tiny": TINY, "tiny-mha": TINY_MHA}  # names of --shapes
