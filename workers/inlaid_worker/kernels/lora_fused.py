"""Multi-LoRA over the fused QKV projection in two launches (Triton): one shrink for q, k and v (they share the
input x) and one expand over the whole qkv output, instead of a shrink and an expand per projection.

Segments are the projections that have a pool (q, k, v in output order; up to 3), each with its own pool
(kernels.lora_batch.LoraPool), rank per slot and output column range [col_s, col_s + N_s) of y:
    v[t, off_s : off_s + r]  = x[t] @ A_s[a]^T                 (fp32; r = ranks_s[a], a = row t's adapter)
    y[t, col_s + n]         += scaling_s[a] * v[t, off_s : off_s + r] @ B_s[a][:r, n]
Rows of adapter -1 are untouched. Same row-block metadata as kernels.lora_sgmv (kernels.lora_batch.LoraBatch).
PDL (kernels.pdl, inside decode graphs): the row metadata and the first A / B tile load before griddepcontrol.wait
(modes 1, 2; mode 3 waits first), x, v, y and every store after it; the loops then keep one A / B tile ahead.
Split-K partials: the shrink splits K over programs. Per-row batches (block_m 1) of at most PARTIALS_MAX_ROWS blocks
(the decode graphs' small buckets) store each split's partial in its own slice of v [T, split, R] and the expand sums
them while it loads v: no zero-fill launch before the shrink (a plain, non-PDL launch in the PDL chain) and no
atomics. Larger batches meet the partials by fp32 atomics in a zeroed v [T, R], as before. Measured (H200, 7B int4,
rank-16 q/k/v/o, decode graphs, 8 rounds on one runner; bench/results/decode-2026-12-01-s19-lora-b1.md): device ms
0.9916x the atomic path at batch 1 (lower in 7/8 rounds), 0.9592x at 4 (8/8), 0.9974x at 16 (8/8, within the
control's spread). The 32-way split (one 128-wide K tile per program) is kept: 16 or 8 splits at batch 1 were slower.
kernels.lora_early issues the same shrink / expand launches with the shrink ahead of the base GEMV (decode graphs,
at most 16 row blocks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .lora_batch import LoraBatch, LoraPool
from .lora_sgmv import lora_reference
from .pdl import gdc_late, gdc_start, gdc_wait, gdc_wait_first, launch_kw

SPLIT_PROGRAMS = 2048  # the shrink's split-K target (programs); a module constant so tests can reach the K walk small
# per-row (block_m 1) batches of at most this many blocks: split-K partials summed by the expand (no zero-fill, no
# atomics; the decode graphs' buckets <= 16); 0 = atomics everywhere (the path before session 19's batch-1 run)
PARTIALS_MAX_ROWS = 16


@triton.jit
def _shrink_tile(x_ptr, a_ptr, rank_ptr, v_ptr, toks, mask_t, adapter, rb, k_base, K, ITERS,
                 stride_xt, stride_al, stride_ar, stride_vt, v_off,
                 BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, USE_ATOMIC: tl.constexpr,
                 USE_GDC: tl.constexpr = 0):  # fmt: skip
    rank = tl.load(rank_ptr + adapter)
    offs_r = rb * BLOCK_R + tl.arange(0, BLOCK_R)
    mask_r = offs_r < rank
    acc = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    a_rows = a_ptr + adapter * stride_al + offs_r[:, None] * stride_ar
    if USE_GDC == 1 or USE_GDC == 2:  # PDL (kernels.pdl): the first A tile loads before the wait, then one ahead
        offs_k = k_base + tl.arange(0, BLOCK_K)
        a_next = tl.load(a_rows + offs_k[None, :], mask=mask_r[:, None] & (offs_k < K)[None, :], other=0.0)
        gdc_wait(USE_GDC)
        for i in range(0, ITERS):
            offs_k = k_base + i * BLOCK_K + tl.arange(0, BLOCK_K)
            mask_k = offs_k < K
            a = a_next
            offs_kn = offs_k + BLOCK_K
            a_next = tl.load(a_rows + offs_kn[None, :], mask=mask_r[:, None] & ((offs_kn < K) & (i + 1 < ITERS))[None, :],
                             other=0.0)  # fmt: skip
            x = tl.load(x_ptr + toks[:, None] * stride_xt + offs_k[None, :], mask=mask_t[:, None] & mask_k[None, :],
                        other=0.0)  # fmt: skip
            if BLOCK_M >= 16:
                acc += tl.dot(x, tl.trans(a))
            else:
                acc += tl.sum(x[:, None, :].to(tl.float32) * a[None, :, :].to(tl.float32), axis=2)
    else:
        for i in range(0, ITERS):
            offs_k = k_base + i * BLOCK_K + tl.arange(0, BLOCK_K)
            mask_k = offs_k < K
            x = tl.load(x_ptr + toks[:, None] * stride_xt + offs_k[None, :], mask=mask_t[:, None] & mask_k[None, :],
                        other=0.0)  # fmt: skip
            a = tl.load(a_rows + offs_k[None, :], mask=mask_r[:, None] & mask_k[None, :], other=0.0)
            if BLOCK_M >= 16:
                acc += tl.dot(x, tl.trans(a))
            else:
                acc += tl.sum(x[:, None, :].to(tl.float32) * a[None, :, :].to(tl.float32), axis=2)
    gdc_late(USE_GDC)
    v_ptrs = v_ptr + toks[:, None] * stride_vt + v_off + offs_r[None, :]
    mask = mask_t[:, None] & mask_r[None, :]
    if USE_ATOMIC:
        tl.atomic_add(v_ptrs, acc, mask=mask, sem="relaxed")
    else:
        tl.store(v_ptrs, acc, mask=mask)


@triton.jit
def _shrink3_kernel(
    x_ptr, a0, a1, a2, r0, r1, r2, v_ptr, tok_ptr, badp_ptr, bstart_ptr, blen_ptr,
    K, ITERS, RB, stride_xt, sal0, sar0, sal1, sar1, sal2, sar2, stride_vt, stride_vs, off1, off2,
    BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, USE_ATOMIC: tl.constexpr,
    USE_GDC: tl.constexpr = 0,
):  # fmt: skip
    # PDL (kernels.pdl): the row metadata (the step's staged buffer) and the pools are written before the graph
    # replays, never by a kernel of the step: they (and the first A tile) may load before the wait in _shrink_tile
    gdc_start(USE_GDC)
    gdc_wait_first(USE_GDC)  # mode 3 (ablation): no prefetch
    blk = tl.program_id(0)
    seg = tl.program_id(1) // RB
    rb = tl.program_id(1) % RB
    n_rows = tl.load(blen_ptr + blk)
    adapter = tl.load(badp_ptr + blk)
    rows = tl.arange(0, BLOCK_M)
    mask_t = rows < n_rows
    toks = tl.load(tok_ptr + tl.load(bstart_ptr + blk) + rows, mask=mask_t, other=0)
    k_base = tl.program_id(2) * ITERS * BLOCK_K
    v_ptr += tl.program_id(2) * stride_vs  # the split's own partial (stride_vs 0: one v, atomics)
    if seg == 0:
        _shrink_tile(x_ptr, a0, r0, v_ptr, toks, mask_t, adapter, rb, k_base, K, ITERS, stride_xt, sal0, sar0,
                     stride_vt, 0, BLOCK_M, BLOCK_R, BLOCK_K, USE_ATOMIC, USE_GDC)  # fmt: skip
    elif seg == 1:
        _shrink_tile(x_ptr, a1, r1, v_ptr, toks, mask_t, adapter, rb, k_base, K, ITERS, stride_xt, sal1, sar1,
                     stride_vt, off1, BLOCK_M, BLOCK_R, BLOCK_K, USE_ATOMIC, USE_GDC)  # fmt: skip
    else:
        _shrink_tile(x_ptr, a2, r2, v_ptr, toks, mask_t, adapter, rb, k_base, K, ITERS, stride_xt, sal2, sar2,
                     stride_vt, off2, BLOCK_M, BLOCK_R, BLOCK_K, USE_ATOMIC, USE_GDC)  # fmt: skip


@triton.jit
def _load_v(v_ptr, toks, mask_t, offs_r, mask_r, v_off, stride_vt, stride_vs, n_splits, BLOCK_S: tl.constexpr):
    """v[toks, v_off + offs_r] [BM, BR] fp32: one v (BLOCK_S 1), or the sum of the n_splits partials v[toks, s, ...]
    (BLOCK_S: n_splits' power of two; one load of [BM, BLOCK_S, BR])."""
    if BLOCK_S == 1:
        v = tl.load(v_ptr + toks[:, None] * stride_vt + v_off + offs_r[None, :],
                    mask=mask_t[:, None] & mask_r[None, :], other=0.0)  # fmt: skip
    else:
        offs_s = tl.arange(0, BLOCK_S)
        rows = v_ptr + toks[:, None, None] * stride_vt + v_off
        ptrs = rows + offs_s[None, :, None] * stride_vs + offs_r[None, None, :]
        mask = mask_t[:, None, None] & (offs_s < n_splits)[None, :, None] & mask_r[None, None, :]
        v = tl.sum(tl.load(ptrs, mask=mask, other=0.0), axis=1)
    return v


@triton.jit
def _expand_tile(v_ptr, b_ptr, rank_ptr, scale_ptr, y_ptr, toks, mask_t, adapter, n0, N, v_off, col,
                 stride_vt, stride_bl, stride_br, stride_yt,
                 BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr, USE_GDC: tl.constexpr = 0,
                 stride_vs=0, n_splits=1, BLOCK_S: tl.constexpr = 1):  # fmt: skip
    rank = tl.load(rank_ptr + adapter)
    scale = tl.load(scale_ptr + adapter)
    offs_n = n0 + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    b_cols = b_ptr + adapter * stride_bl + offs_n[None, :]
    if USE_GDC == 1 or USE_GDC == 2:  # PDL (kernels.pdl): B's first rank block loads before the wait, then one ahead
        offs_r = tl.arange(0, BLOCK_R)
        b_next = tl.load(b_cols + offs_r[:, None] * stride_br, mask=(offs_r < rank)[:, None] & mask_n[None, :],
                         other=0.0)  # fmt: skip
        gdc_wait(USE_GDC)
        for r0 in range(0, rank, BLOCK_R):
            offs_r = r0 + tl.arange(0, BLOCK_R)
            mask_r = offs_r < rank
            b = b_next
            b_next = tl.load(b_cols + (offs_r + BLOCK_R)[:, None] * stride_br,
                             mask=(offs_r + BLOCK_R < rank)[:, None] & mask_n[None, :], other=0.0)  # fmt: skip
            v = _load_v(v_ptr, toks, mask_t, offs_r, mask_r, v_off, stride_vt, stride_vs, n_splits, BLOCK_S)
            if BLOCK_M >= 16:
                acc += tl.dot(v.to(b.dtype), b)
            else:
                acc += tl.sum(v[:, :, None] * b[None, :, :].to(tl.float32), axis=1)
    else:
        for r0 in range(0, rank, BLOCK_R):
            offs_r = r0 + tl.arange(0, BLOCK_R)
            mask_r = offs_r < rank
            v = _load_v(v_ptr, toks, mask_t, offs_r, mask_r, v_off, stride_vt, stride_vs, n_splits, BLOCK_S)
            b = tl.load(b_cols + offs_r[:, None] * stride_br, mask=mask_r[:, None] & mask_n[None, :], other=0.0)
            if BLOCK_M >= 16:
                acc += tl.dot(v.to(b.dtype), b)
            else:
                acc += tl.sum(v[:, :, None] * b[None, :, :].to(tl.float32), axis=1)
    y_ptrs = y_ptr + toks[:, None] * stride_yt + col + offs_n[None, :]
    mask = mask_t[:, None] & mask_n[None, :]
    y = tl.load(y_ptrs, mask=mask, other=0.0).to(tl.float32)
    gdc_late(USE_GDC)
    tl.store(y_ptrs, (y + scale * acc).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _expand3_kernel(
    v_ptr, b0, b1, b2, r0, r1, r2, s0, s1, s2, y_ptr, tok_ptr, badp_ptr, bstart_ptr, blen_ptr,
    N0, N1, N2, T0, T1, off1, off2, col0, col1, col2, stride_vt, sbl0, sbr0, sbl1, sbr1, sbl2, sbr2, stride_yt,
    stride_vs, n_splits,
    BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_S: tl.constexpr,
    USE_GDC: tl.constexpr = 0,
):  # fmt: skip
    gdc_start(USE_GDC)  # PDL (kernels.pdl): metadata and B before the wait (see _shrink3_kernel), v and y after
    gdc_wait_first(USE_GDC)  # mode 3 (ablation): no prefetch
    blk = tl.program_id(0)
    tile = tl.program_id(1)  # N tiles of segment 0, then 1, then 2 (T0, T1: tiles of the first two)
    n_rows = tl.load(blen_ptr + blk)
    adapter = tl.load(badp_ptr + blk)
    rows = tl.arange(0, BLOCK_M)
    mask_t = rows < n_rows
    toks = tl.load(tok_ptr + tl.load(bstart_ptr + blk) + rows, mask=mask_t, other=0)
    if tile < T0:
        _expand_tile(v_ptr, b0, r0, s0, y_ptr, toks, mask_t, adapter, tile * BLOCK_N, N0, 0, col0,
                     stride_vt, sbl0, sbr0, stride_yt, BLOCK_M, BLOCK_R, BLOCK_N, USE_GDC, stride_vs, n_splits, BLOCK_S)  # fmt: skip
    elif tile < T0 + T1:
        _expand_tile(v_ptr, b1, r1, s1, y_ptr, toks, mask_t, adapter, (tile - T0) * BLOCK_N, N1, off1, col1,
                     stride_vt, sbl1, sbr1, stride_yt, BLOCK_M, BLOCK_R, BLOCK_N, USE_GDC, stride_vs, n_splits, BLOCK_S)  # fmt: skip
    else:
        _expand_tile(v_ptr, b2, r2, s2, y_ptr, toks, mask_t, adapter, (tile - T0 - T1) * BLOCK_N, N2, off2,
                     col2, stride_vt, sbl2, sbr2, stride_yt, BLOCK_M, BLOCK_R, BLOCK_N, USE_GDC, stride_vs, n_splits,
                     BLOCK_S)  # fmt: skip


def _pad3(items: list) -> list:  # type: ignore[type-arg]
    return items + [items[0]] * (3 - len(items))


@dataclass(frozen=True)
class SegmentArgs:
    """The segments' kernel operands padded to 3 segments, in the order the shrink / expand kernels here and in
    kernels.lora_grouped take them."""

    r_max: list[int]  # each segment's pool rank width (its v columns)
    v_offs: tuple[int, int]  # v's first column of segments 1 and 2
    a: tuple[torch.Tensor, ...]  # A pools then rank tables (a0, a1, a2, r0, r1, r2)
    a_strides: tuple[int, ...]  # (slot, rank) strides of each A pool
    b: tuple[torch.Tensor, ...]  # B pools, rank tables, scalings
    b_strides: tuple[int, ...]  # (slot, rank) strides of each B pool


def segment_args(pools: Sequence[LoraPool]) -> SegmentArgs:
    """The segments' operands for the kernels (lora_apply_fused's and lora_grouped's): see SegmentArgs."""
    r_max = [p.a.shape[1] for p in pools]
    p3 = _pad3(list(pools))
    ranks = tuple(p.ranks for p in p3)
    return SegmentArgs(r_max, (r_max[0], r_max[0] + (r_max[1] if len(r_max) > 1 else 0)),
                       (*(p.a for p in p3), *ranks), tuple(d for p in p3 for d in p.a.stride()[:2]),
                       (*(p.b for p in p3), *ranks, *(p.scalings for p in p3)),
                       tuple(d for p in p3 for d in p.b.stride()[:2]))  # fmt: skip


def expand_tiles(widths: Sequence[int], cols: Sequence[int], block_n: int) -> tuple[tuple[int, ...], list[int], int]:
    """The expand's (N0, N1, N2, T0, T1): widths padded to 3 and the N tiles of segments 0 and 1 (T1 0 for one
    segment); the columns padded to 3; and the total N tile count."""
    tiles = [triton.cdiv(w, block_n) for w in widths]
    w3 = _pad3(list(widths))
    return (*w3, tiles[0], tiles[1] if len(tiles) > 1 else 0), _pad3(list(cols)), sum(tiles)


def check_segments(y: torch.Tensor, x: torch.Tensor, pools: Sequence[LoraPool], cols: Sequence[int],
                   batch: LoraBatch, caller: str = "lora_apply_fused") -> list[int]:  # fmt: skip
    """The segments' output widths, after checking shapes, strides and that their column ranges do not overlap.
    caller: the entry point named in the errors (lora_grouped shares these checks)."""
    if not 1 <= len(pools) <= 3 or len(cols) != len(pools):
        raise ValueError(f"{caller} takes 1 to 3 pools and one column offset each")
    t, k = x.shape
    widths = [p.b.shape[2] for p in pools]
    if any(p.a.shape[2] != k for p in pools) or y.shape[0] != t or t != batch.num_tokens:
        raise ValueError("x/y rows or features do not match the pools / batch")
    spans = sorted(zip(cols, widths, strict=True))
    if any(c0 + w0 > c1 for (c0, w0), (c1, _) in zip(spans, spans[1:])) or spans[0][0] < 0:
        raise ValueError(f"segments {spans} overlap")
    if spans[-1][0] + spans[-1][1] > y.shape[1] or x.stride(1) != 1 or y.stride(1) != 1:
        raise ValueError("y too narrow for the segments, or x/y not row-major")
    return widths


@dataclass(frozen=True)
class ShrinkPlan:
    """The shrink's launch: rank block, K tile, rank blocks per segment, K split and K tiles per program; partials:
    each split stores its own partial in v [T, split, R] (summed by the expand), else atomics into a zeroed v [T, R]."""

    block_r: int
    block_k: int
    rb: int
    split: int
    iters: int
    partials: bool


def shrink_plan(batch: LoraBatch, s: SegmentArgs, k: int, n_seg: int) -> ShrinkPlan:
    """Decode rows are latency-bound chains of K tiles: split K until ~SPLIT_PROGRAMS programs run."""
    nb = batch.blk_len.numel()
    block_r = 16 if batch.max_rank <= 16 or batch.block_m > 1 else 32
    block_k = 128 if batch.block_m == 1 else 64
    rb = triton.cdiv(max(max(s.r_max), 1), block_r)
    k_tiles = triton.cdiv(k, block_k)
    split = max(1, min(k_tiles, SPLIT_PROGRAMS // max(1, nb * rb * n_seg)))
    iters = triton.cdiv(k_tiles, split)
    split = triton.cdiv(k_tiles, iters)
    partials = split > 1 and batch.block_m == 1 and nb <= PARTIALS_MAX_ROWS
    return ShrinkPlan(block_r, block_k, rb, split, iters, partials)


def alloc_v(t: int, width: int, plan: ShrinkPlan, device: torch.device) -> torch.Tensor:
    """The shrink's fp32 output: [T, split, width] partials (never zeroed: every read element is stored), or
    [T, width], zeroed where split partials meet by atomics."""
    if plan.partials:
        return torch.empty(t, plan.split, width, dtype=torch.float32, device=device)
    return (torch.zeros if plan.split > 1 else torch.empty)(t, width, dtype=torch.float32, device=device)


def launch_shrink(x: torch.Tensor, s: SegmentArgs, v: torch.Tensor, batch: LoraBatch, plan: ShrinkPlan,
                  n_seg: int) -> None:  # fmt: skip
    meta = (batch.token_ids, batch.blk_adapter, batch.blk_start, batch.blk_len)
    _shrink3_kernel[(batch.blk_len.numel(), plan.rb * n_seg, plan.split)](
        x, *s.a, v, *meta, x.shape[1], plan.iters, plan.rb, x.stride(0), *s.a_strides, v.stride(0),
        v.stride(1) if plan.partials else 0, *s.v_offs, BLOCK_M=batch.block_m, BLOCK_R=plan.block_r,
        BLOCK_K=plan.block_k, USE_ATOMIC=plan.split > 1 and not plan.partials, num_warps=4, **launch_kw(),
    )  # fmt: skip


def launch_expand(y: torch.Tensor, v: torch.Tensor, s: SegmentArgs, widths: Sequence[int], cols: Sequence[int],
                  batch: LoraBatch, plan: ShrinkPlan) -> None:  # fmt: skip
    meta = (batch.token_ids, batch.blk_adapter, batch.blk_start, batch.blk_len)
    block_n = 256 if batch.block_m == 1 else 128
    nt, c3, n_tiles = expand_tiles(widths, cols, block_n)
    _expand3_kernel[(batch.blk_len.numel(), n_tiles)](
        v, *s.b, y, *meta, *nt, *s.v_offs, *c3, v.stride(0), *s.b_strides, y.stride(0),
        v.stride(1) if plan.partials else 0, plan.split, BLOCK_M=batch.block_m, BLOCK_R=16, BLOCK_N=block_n,
        BLOCK_S=triton.next_power_of_2(plan.split) if plan.partials else 1, num_warps=4, **launch_kw(),
    )  # fmt: skip


def lora_apply_fused(y: torch.Tensor, x: torch.Tensor, pools: Sequence[LoraPool], cols: Sequence[int],
                     batch: LoraBatch) -> torch.Tensor:  # fmt: skip
    """In place: y[:, cols[s] : cols[s] + N_s] += LoRA_s(x) for each segment s (1 to 3 pools, shared x);
    the segments' column ranges must not overlap."""
    widths = check_segments(y, x, pools, cols, batch)
    if batch.blk_len.numel() == 0:
        return y
    s = segment_args(pools)
    plan = shrink_plan(batch, s, x.shape[1], len(pools))
    v = alloc_v(x.shape[0], sum(s.r_max), plan, x.device)
    launch_shrink(x, s, v, batch, plan, len(pools))
    launch_expand(y, v, s, widths, cols, batch, plan)
    return y


def lora_fused_reference(y: torch.Tensor, x: torch.Tensor, pools: Sequence[LoraPool], cols: Sequence[int],
                         adapter_ids: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """Pure torch: kernels.lora_sgmv.lora_reference on each segment's columns; returns a new tensor."""
    out = y.clone()
    for pool, col in zip(pools, cols, strict=True):
        n = pool.b.shape[2]
        out[:, col : col + n] = lora_reference(y[:, col : col + n], x, pool, adapter_ids)
    return out
