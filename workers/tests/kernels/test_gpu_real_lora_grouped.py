"""Real-shape GPU tests (issue 4) of lora_grouped (_gshrink_kernel, _gexpand_kernel through lora_apply_grouped)
against lora_fused_reference (pure torch: fp32 math, output rounded to y's dtype) and the BGMV kernels
(lora_apply_fused), as test_lora_grouped.py and test_cpu_cov_lora_grouped.py check their small cases. Before, only
those small cases ran on CUDA (fp16).

Shapes: Llama-2-7B's LoRA targets: the fused q/k/v projection (K 4096, three 4096-wide segments), o (4096 -> 4096),
gate/up (4096 -> two 11008-wide segments) and down (11008 -> 4096); fp16 and bf16. Adapter pools as the engine stacks
them (lora_batch.stack_adapters, rank-padded to 64): slot s has rank (8, 16, 32, 64)[s % 4] and scaling (2 + s % 3) / r.
Batches: 1 row; 32 rows of one adapter (the grouped kernels' case: two full 16-row tiles); 32 rows of 8 adapters mixed
with base rows (adapter -1); 64 rows of 64 distinct adapters (MAX_ROWS: every row its own tile); all four staged as the
decode graphs stage a bucket (one row a block; base rows are blocks of slot 0 with no row); and 256 tokens of which
48, of 16 adapters, carry one (make_lora_batch: base rows get no block). At q/k/v and down also an adapter whose rows
fill one tile and part of a second (PARTIAL): 24 rows of one adapter (16 + 8) interleaved with 8 of another, staged;
17 rows of one adapter (16 + 1) among 15 base rows, make_lora_batch. (grouped_ok's MAX_ROWS refusal is host logic:
test_lora_grouped.py checks it on the CPU.)

Checks: the error relative to the LoRA delta (|y - ref| / |ref - y0|, Frobenius) against the reference and against
BGMV; base rows bit for bit y0's; grouped_ok takes the batch. Tolerances: fp16 2e-3 (4x fp16's unit roundoff
2^-11 = 4.9e-4), bf16 1e-2 (2.6x bf16's 2^-8 = 3.9e-3, cpu_cov_bf16.CUDA_BF16_TOL): the kernels round the fp32 shrink
output v to 16 bits before the tensor-core expand (BGMV does not), and y once. y0 (0.1 randn) is smaller than the
delta: |y0| / |delta| is 0.09-0.39 over the cases (the same recipe in fp32 on the CPU; largest where the rows'
adapters have the smallest delta, rank 64 / 32 at scaling 2 / r, and where base rows dominate), so |y| is within 8% of
|delta| and y's one rounding to 16 bits adds about the dtype's unit roundoff to the delta-relative error, no more;
each test records its own ratio (y0_over_delta). The shrink's K split
meets by fp32 atomics (order varies, fp32). Canary: the same batch with every block's adapter slot moved to the next
slot must be far off (> 0.3). Measured errors go to env INLAID_GPU_REAL_LOG's file when set. CUDA only: skipped on
the CPU."""

from __future__ import annotations

import zlib
from typing import Any

import pytest
import torch
from cpu_cov_bf16 import CUDA_BF16_TOL
from test_gpu_real_paged_decode import CANARY, DTYPES, record

CUDA = torch.cuda.is_available()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="real-shape kernel tests need CUDA (device tool)")]

RANKS = (8, 16, 32, 64)
R_MAX = 64
TOL = {"fp16": 2e-3, "bf16": CUDA_BF16_TOL}
# Llama-2-7B targets: (K, segment widths)
MODULES: dict[str, tuple[int, tuple[int, ...]]] = {
    "qkv": (4096, (4096, 4096, 4096)),
    "o": (4096, (4096,)),
    "gate_up": (4096, (11008, 11008)),
    "down": (11008, (4096,)),
}


def _sparse_256() -> list[int]:
    """256 tokens, 48 of them with one of 16 adapters (3 each) at random positions, the rest base rows."""
    g = torch.Generator().manual_seed(256)
    ids = [-1] * 256
    for i, pos in enumerate(torch.randperm(256, generator=g)[:48].tolist()):
        ids[pos] = i % 16
    return ids


def _scattered(n: int, t: int, slot: int, seed: int) -> list[int]:
    """t rows: n of adapter `slot` at random positions, the rest base rows (-1)."""
    ids = [-1] * t
    for pos in torch.randperm(t, generator=torch.Generator().manual_seed(seed))[:n].tolist():
        ids[pos] = slot
    return ids


# (rows' adapter slots (-1: base row), adapter slots in the pools, decode-graph staging)
BATCHES: dict[str, tuple[list[int], int, bool]] = {
    "t1": ([3], 4, True),
    "t32-one-adapter": ([5] * 32, 8, True),
    "t32-8-adapters-and-base": ([(i * 5) % 9 - 1 for i in range(32)], 8, True),
    "t64-64-adapters": (torch.randperm(64, generator=torch.Generator().manual_seed(64)).tolist(), 64, True),
    "t256-48-lora-rows": (_sparse_256(), 16, False),
}
# an adapter whose rows fill one 16-row tile (GROUP_BM) and part of a second: 24 rows of slot 3 (rank 64; tiles of 16
# and 8) interleaved with 8 of slot 6 (rank 32), decode-graph staging; 17 rows of slot 1 (rank 16; 16 and 1) among 15
# base rows, make_lora_batch. At two 7B targets: q/k/v (three segments, K 4096) and down (K 11008).
PARTIAL: dict[str, tuple[list[int], int, bool]] = {
    "t32-24-and-8-adapters": ([6 if i % 4 == 3 else 3 for i in range(32)], 8, True),
    "t32-17-lora-15-base": (_scattered(17, 32, 1, 17), 8, False),
}
PARTIAL_MODULES = ("qkv", "down")


def pools_for(k: int, widths: tuple[int, ...], slots: int, dtype: torch.dtype, g: torch.Generator) -> list[Any]:
    """One pool a segment (lora_batch.stack_adapters, rank-padded to R_MAX): slot s of rank RANKS[s % 4], A / sqrt(K)
    so that v is O(1), scaling (2 + s % 3) / r."""
    from inlaid_worker.kernels.lora_batch import stack_adapters

    pools = []
    for n in widths:
        adapters = []
        for s in range(slots):
            r = RANKS[s % len(RANKS)]
            a = (torch.randn(r, k, generator=g, device="cuda") / k**0.5).to(dtype)
            b = torch.randn(n, r, generator=g, device="cuda").to(dtype)
            adapters.append((a, b, (2.0 + s % 3) / r))
        pools.append(stack_adapters(adapters, R_MAX))
    return pools


def batch_for(ids: list[int], graph_rows: bool, ranks: list[int]) -> Any:
    """The LoraBatch: as decode_graphs stages a bucket (one row a block, base rows slot 0 with no row), else
    make_lora_batch (base rows get no block)."""
    from inlaid_worker.kernels.lora_batch import LoraBatch, make_lora_batch

    if not graph_rows:
        return make_lora_batch(ids, ranks, 1, "cuda")
    t = len(ids)
    ar = torch.arange(t, dtype=torch.int32, device="cuda")
    slot = torch.tensor([max(a, 0) for a in ids], dtype=torch.int32, device="cuda")
    rows = torch.tensor([int(a >= 0) for a in ids], dtype=torch.int32, device="cuda")
    return LoraBatch(ar, slot, ar, rows, 1, t, R_MAX)


def check_grouped(module: str, dtype: str, batch_id: str, ids: list[int], slots: int, graph_rows: bool) -> None:
    """lora_apply_grouped over `ids` at `module`'s 7B shape against lora_fused_reference and BGMV (module docstring)."""
    from dataclasses import replace

    from inlaid_worker.kernels.lora_fused import lora_apply_fused, lora_fused_reference
    from inlaid_worker.kernels.lora_grouped import grouped_ok, lora_apply_grouped

    k, widths = MODULES[module]
    dt = DTYPES[dtype]
    g = torch.Generator(device="cuda").manual_seed(zlib.crc32(f"{module}-{dtype}-{batch_id}".encode()))
    pools = pools_for(k, widths, slots, dt, g)
    t = len(ids)
    x = torch.randn(t, k, generator=g, device="cuda").to(dt)
    y0 = (0.1 * torch.randn(t, sum(widths), generator=g, device="cuda")).to(dt)
    cols = [sum(widths[:i]) for i in range(len(widths))]
    batch = batch_for(ids, graph_rows, [int(r) for r in pools[0].ranks])
    assert grouped_ok(batch, x), "the batch must take the grouped kernels"
    y = lora_apply_grouped(y0.clone(), x, pools, cols, batch)
    y_bgmv = lora_apply_fused(y0.clone(), x, pools, cols, batch)
    ref = lora_fused_reference(y0, x, pools, cols, torch.tensor(ids, device="cuda")).float()
    delta = (ref - y0.float()).norm()
    err = float((y.float() - ref).norm() / delta)
    vs_bgmv = float((y.float() - y_bgmv.float()).norm() / delta)
    base = torch.tensor([a < 0 for a in ids], device="cuda")
    wrong = replace(batch, blk_adapter=(batch.blk_adapter + 1) % slots)  # every block reads the next slot's adapter
    canary = float((lora_apply_grouped(y0.clone(), x, pools, cols, wrong).float() - ref).norm() / delta)
    finite = bool(torch.isfinite(y).all())
    record(f"lora_grouped[{module}-{dtype}-{batch_id}]", tol=TOL[dtype], err=err, vs_bgmv=vs_bgmv, canary=canary,
           blocks=int(batch.blk_len.numel()), y0_over_delta=float(y0.float().norm() / delta))  # fmt: skip
    assert finite and err < TOL[dtype] and vs_bgmv < TOL[dtype], (err, vs_bgmv)
    assert torch.equal(y[base], y0[base]), "rows without an adapter must keep y0's bits"
    assert canary > CANARY, f"a wrong adapter slot went unnoticed: {canary}"


@pytest.mark.parametrize("batch_id", list(BATCHES))
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("module", list(MODULES))
def test_lora_grouped_real_shapes(module: str, dtype: str, batch_id: str) -> None:
    check_grouped(module, dtype, batch_id, *BATCHES[batch_id])


@pytest.mark.parametrize("batch_id", list(PARTIAL))
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("module", PARTIAL_MODULES)
def test_lora_grouped_partly_filled_second_tile(module: str, dtype: str, batch_id: str) -> None:
    from inlaid_worker.kernels.lora_grouped import GROUP_BM

    ids = PARTIAL[batch_id][0]
    counts = [ids.count(a) for a in set(ids) if a >= 0]
    assert any(GROUP_BM < n < 2 * GROUP_BM for n in counts), (counts, "an adapter must fill 1 tile and part of 2")
    check_grouped(module, dtype, batch_id, *PARTIAL[batch_id])
