"""Multi-LoRA batch metadata and adapter pool layout (pure torch, built once per step, shared by layers).

Tokens with an adapter are grouped by adapter (stable order) and cut into row blocks of `block_m`
tokens that never mix adapters; tokens with adapter -1 get no block at all. block_m=1 is the BGMV
(one token per program, decode) form: no padded rows; block_m>=16 is SGMV (tensor cores, prefill).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LoraBatch:
    token_ids: torch.Tensor  # int32 [T_lora]: indices into the batch, grouped by adapter
    blk_adapter: torch.Tensor  # int32 [B]: adapter slot of each row block
    blk_start: torch.Tensor  # int32 [B]: offset of the block's first row in token_ids
    blk_len: torch.Tensor  # int32 [B]: rows in the block (1..block_m)
    block_m: int
    num_tokens: int  # T, rows of x and y (adapter -1 rows included)
    max_rank: int  # largest rank among the adapters in this batch (0 when none)


@dataclass(frozen=True)
class LoraPool:
    """Rank-padded stacked adapters of one target module: slot l holds rank ranks[l] (rows past it are 0)."""

    a: torch.Tensor  # [L, R_MAX, K]  (PEFT lora_A.weight, zero-padded rows)
    b: torch.Tensor  # [L, R_MAX, N]  (PEFT lora_B.weight transposed, zero-padded rows)
    ranks: torch.Tensor  # int32 [L]
    scalings: torch.Tensor  # fp32 [L]  (lora_alpha / r)


def stack_adapters(
    adapters: Sequence[tuple[torch.Tensor, torch.Tensor, float]], r_max: int | None = None
) -> LoraPool:
    """Pool from (A [r, K], B [N, r], scaling) per slot, as PEFT stores lora_A / lora_B weights."""
    if not adapters:
        raise ValueError("stack_adapters needs at least one adapter")
    k = adapters[0][0].shape[1]
    n = adapters[0][1].shape[0]
    r_max = r_max or max(a.shape[0] for a, _, _ in adapters)
    ref = adapters[0][0]
    a_pool = torch.zeros(len(adapters), r_max, k, dtype=ref.dtype, device=ref.device)
    b_pool = torch.zeros(len(adapters), r_max, n, dtype=ref.dtype, device=ref.device)
    for slot, (a, b, _) in enumerate(adapters):
        r = a.shape[0]
        if a.shape != (r, k) or b.shape != (n, r) or r > r_max:
            raise ValueError(f"adapter {slot}: A {tuple(a.shape)} / B {tuple(b.shape)} do not fit [r,{k}] / [{n},r]")
        a_pool[slot, :r] = a
        b_pool[slot, :r] = b.t()
    ranks = torch.tensor([a.shape[0] for a, _, _ in adapters], dtype=torch.int32, device=ref.device)
    scalings = torch.tensor([s for _, _, s in adapters], dtype=torch.float32, device=ref.device)
    return LoraPool(a_pool, b_pool, ranks, scalings)


def choose_block_m(adapter_ids: Sequence[int]) -> int:
    """BGMV (1) unless adapters average 16+ tokens each, then SGMV tiles of 16/32/64 rows."""
    counts: dict[int, int] = {}
    for a in adapter_ids:
        if a >= 0:
            counts[a] = counts.get(a, 0) + 1
    if not counts:
        return 1
    mean = sum(counts.values()) / len(counts)
    return 1 if mean < 16 else 16 if mean < 64 else 32 if mean < 256 else 64


def make_lora_batch(
    adapter_ids: Sequence[int], ranks: Sequence[int], block_m: int, device: torch.device | str
) -> LoraBatch:
    """Metadata for tokens whose adapter slot is adapter_ids[t] (-1 = base model only)."""
    if block_m < 1 or (block_m > 1 and block_m % 16):
        raise ValueError(f"block_m must be 1 or a multiple of 16, got {block_m}")
    by_adapter: dict[int, list[int]] = {}
    for t, a in enumerate(adapter_ids):
        if a < -1 or a >= len(ranks):
            raise ValueError(f"token {t}: adapter slot {a} outside [-1, {len(ranks)})")
        if a >= 0:
            by_adapter.setdefault(a, []).append(t)
    tokens: list[int] = []
    blk_adapter: list[int] = []
    blk_start: list[int] = []
    blk_len: list[int] = []
    for a, toks in by_adapter.items():
        for i in range(0, len(toks), block_m):
            blk_adapter.append(a)
            blk_start.append(len(tokens) + i)
            blk_len.append(min(block_m, len(toks) - i))
        tokens.extend(toks)

    def as_i32(v: list[int]) -> torch.Tensor:
        return torch.tensor(v, dtype=torch.int32, device=device)

    return LoraBatch(
        token_ids=as_i32(tokens),
        blk_adapter=as_i32(blk_adapter),
        blk_start=as_i32(blk_start),
        blk_len=as_i32(blk_len),
        block_m=block_m,
        num_tokens=len(adapter_ids),
        max_rank=max((int(ranks[a]) for a in by_adapter), default=0),
    )
