"""KV-cache budget of one GPU serving a 4-bit model with LoRA adapters (pure arithmetic, no I/O).

budget = utilization * device bytes - quantized weights - adapter pool - activation/workspace reserve,
tokens = budget / KV bytes per token, blocks = tokens // block size. `utilization` is vLLM's
gpu_memory_utilization default (0.90: CUDA context, cuBLAS/Triton workspaces, allocator fragmentation).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from llama_shapes import LLAMA2_7B, Shape  # noqa: E402

ModelShape = Shape  # the name this module used before the shape moved to bench/engine/llama_shapes.py


def linear_shapes(s: Shape) -> list[tuple[int, int]]:
    """(in, out) of every quantized linear of one layer: fused qkv, o, fused gate_up, down."""
    head = s.hidden // s.heads
    return [(s.hidden, s.hidden + 2 * s.kv_heads * head), (s.hidden, s.hidden), (s.hidden, 2 * s.intermediate),
            (s.intermediate, s.hidden)]  # fmt: skip


def weight_bytes(s: Shape, bits: int = 4, group: int = 128) -> int:
    """Packed GPTQ linears (bits per weight, fp16 scale and packed zero per group) + fp16 embeddings, LM head, norms."""
    per_layer = 0
    for k, n in linear_shapes(s):
        per_layer += k * n * bits // 8 + (k // group) * n * 2 + (k // group) * n * bits // 8
    fp16 = 2 * s.vocab * s.hidden * 2 + (2 * s.layers + 1) * s.hidden * 2
    return s.layers * per_layer + fp16


def kv_bytes_per_token(s: Shape, element: int = 2) -> int:
    """K and V of one token over all layers."""
    return 2 * s.layers * s.kv_heads * (s.hidden // s.heads) * element


def adapter_bytes(s: Shape, rank: int, element: int = 2) -> int:
    """A and B of one adapter on q, k, v, o over all layers."""
    head = s.hidden // s.heads
    kv = s.kv_heads * head
    per_layer = rank * ((s.hidden + s.hidden) * 2 + (s.hidden + kv) * 2)
    return per_layer * s.layers * element


@dataclass(frozen=True)
class KvBudget:
    device_bytes: int
    utilization: float
    weight_bytes: int
    adapter_pool_bytes: int
    activation_bytes: int
    kv_bytes_per_token: int
    kv_bytes: int
    kv_tokens: int
    kv_blocks: int
    block_size: int

    def as_dict(self) -> dict:
        return asdict(self)


def kv_budget(
    device_bytes: int, shape: Shape = LLAMA2_7B, *, utilization: float = 0.90, bits: int = 4, group: int = 128,
    adapter_slots: int = 32, adapter_rank: int = 16, activation_bytes: int = 1 << 30, block_size: int = 16,
) -> KvBudget:  # fmt: skip
    if not 0 < utilization <= 1:
        raise ValueError("utilization must be in (0, 1]")
    w = weight_bytes(shape, bits, group)
    a = adapter_slots * adapter_bytes(shape, adapter_rank)
    per_tok = kv_bytes_per_token(shape)
    kv = int(device_bytes * utilization) - w - a - activation_bytes
    if kv <= per_tok * block_size:
        raise ValueError(
            f"no room for KV: {device_bytes} bytes hold weights {w}, adapters {a}, activations {activation_bytes}"
        )
    tokens = kv // per_tok
    return KvBudget(
        device_bytes, utilization, w, a, activation_bytes, per_tok, kv, tokens, tokens // block_size, block_size
    )
