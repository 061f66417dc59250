"""Tile configurations for quant_matmul and a once-per-shape tuner (CUDA only; first candidate elsewhere).

SPLIT_K is a run-time argument of the kernel, so trying several split factors costs no extra compile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import triton

from .gptq_packing import GPTQWeight


@dataclass(frozen=True)
class QMMConfig:
    block_m: int
    block_n: int
    block_k: int
    split_k: int
    num_warps: int
    num_stages: int
    use_dot: bool = True  # False: CUDA-core GEMV path (block_m <= 4)


def m_bucket(m: int) -> int:
    """Rows are tuned per power-of-two bucket (1, 2, 4, ..., 256, then 512 for everything larger)."""
    return min(triton.next_power_of_2(max(m, 1)), 512)


def _block_k(k: int, group: int, want: int) -> int:
    for bk in (want, 128, 64, 32):
        if bk <= want and k % bk == 0 and group % bk == 0:
            return bk
    raise ValueError(f"K={k} and group={group} admit no K tile (need a common multiple-of-32 divisor)")


def candidate_configs(m: int, n: int, k: int, group: int) -> list[QMMConfig]:
    """Ordered candidates (the first is the untuned default) for an [m, k] x [k, n] product."""
    mb = m_bucket(m)
    if mb <= 16:
        bk = _block_k(k, group, 128)
        out = [QMMConfig(16, bn, bk, s, 4, 4) for bn in (64, 128) for s in (8, 4, 16, 2, 1)]
        if mb <= 4:  # CUDA-core GEMV first (the untuned default); the tuner still sees the MMA tiles
            gemv_bk = _block_k(k, group, 64)
            out = [QMMConfig(mb, bn, gemv_bk, s, 4, 3, False) for bn in (64, 128) for s in (8, 16, 4)] + out
        return [out[0]] + [c for c in out[1:] if c.split_k * c.block_k <= k]
    if mb <= 64:
        bk = _block_k(k, group, 128)
        out = [QMMConfig(bm, bn, bk, s, 4, 4) for bm in (mb, 16) for bn in (64, 128) for s in (4, 2, 1, 8)]
        return [c for c in out if c.block_m <= mb]
    bk = _block_k(k, group, 64)
    return [
        QMMConfig(64, 128, bk, 1, 4, 4),
        QMMConfig(128, 128, bk, 1, 8, 3),
        QMMConfig(64, 256, bk, 1, 8, 3),
        QMMConfig(128, 64, bk, 1, 4, 4),
        QMMConfig(64, 64, bk, 2, 4, 4),
    ]


_TUNED: dict[tuple, QMMConfig] = {}


def pick_config(x2: torch.Tensor, w: GPTQWeight, run: Callable[[QMMConfig], None]) -> QMMConfig:
    """Best candidate for this shape, timed once on CUDA (cold L2) and cached; the default elsewhere."""
    m, k = x2.shape
    cands = candidate_configs(m, w.out_features, k, w.group_size)
    if not x2.is_cuda or len(cands) == 1 or m * w.out_features * k < 2**22:  # tiny: tuning costs more
        return cands[0]
    key = (x2.device, x2.dtype, m_bucket(m), w.out_features, k, w.bits, w.group_size, w.sym, w.perm is not None)
    best = _TUNED.get(key)
    if best is None:
        times = []
        for c in cands:
            try:
                times.append((triton.testing.do_bench(lambda c=c: run(c), warmup=5, rep=15), c))
            except triton.runtime.errors.OutOfResources:
                continue
        best = min(times, key=lambda t: t[0])[1]
        _TUNED[key] = best
    LAST_PICK[0] = best
    return best


LAST_PICK: list[QMMConfig | None] = [None]  # what the last tuned call chose (benchmark reporting)
