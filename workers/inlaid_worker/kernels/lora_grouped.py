"""Multi-LoRA over per-row batches (block_m = 1, the decode graphs' form) with each adapter's rows grouped on the
device, so a shared adapter's A / B are read once per 16 rows instead of once per row.

Why: a decode graph is captured once per batch bucket, so its LoraBatch is one single-row block per row (slot and
row count staged per step, kernels.lora_batch); the BGMV kernels (kernels.lora_fused) then read the adapter of
every row, so 32 rows of ONE rank-64 all-linear adapter read its 10 MB per layer 32 times (through L2).
Here every program rebuilds the grouping from the staged metadata (a few dozen ints): row j's position among the
earlier live rows of its adapter, tiles of GROUP_BM rows of one adapter (tile = every GROUP_BM-th row of a group),
and walks a dynamic list of work items (tile x segment x rank block x K split for the shrink, tile x N tile for the
expand) with a fixed grid (programs per SM), so the static graph fits any mix: one adapter gives 2 tiles at 32
rows, 32 adapters 32 tiles (each row alone, as BGMV, on tensor cores). The shrink's K split is chosen in the kernel
from the live tile count (SHRINK_ITEMS items), so few tiles still spread over the SMs; partials meet by atomics
in a zeroed fp32 v. Same results as lora_fused.lora_apply_fused (same segments, cols, v layout).
PDL (kernels.pdl): the staged metadata loads before griddepcontrol.wait (as in lora_fused), x / v / y and every
store after it; nothing is prefetched.
Measured (H200, 7B int4, batch 32, decode graphs, A/B in one process, 8 rounds; bench/results/
decode-2026-12-01-s18-lora-all.md): one adapter for every row, rank 64 on all 7 linears 10.10 -> 7.16 ms (1.93x ->
1.37x the base step; LoRA kernels 4.60 -> 1.66 ms), rank 16 all 7 0.93x, rank 16 q/k/v/o 0.97x (lower in 8/8
rounds each); but 32 distinct adapters got slower: rank 16 q/k/v/o 1.056x, all 7 1.117x (0/8), and a second
decomposition (2048 items, 256-wide N tiles, one resident wave) 1.078x at q/k/v/o. A graph cannot know at capture
how many adapters its rows will share, but the host knows it per step: model.decode_graphs keeps a bucket's graph
captured with these kernels next to its BGMV one and replays it where model.kernel_lora.pick_grouped says the rows
share adapters enough (at least 24 LoRA rows, 4 per distinct adapter): 0.709x / 0.987x the BGMV step where it picks
these, 1.000x where it does not (bench/results/decode-2026-12-01-s18-lora-auto.md). The rule ships on
(kernel_lora.GROUPED AUTO) since session 19, whose H200 run of its GPU tests passed (bench/results/
decode-2026-12-01-s19-lora.md: against the base step 1.36x for that rank-64 adapter, 1.15x for rank 16 q/k/v/o).
Precision: the tiles multiply with tl.dot, which on CUDA runs fp32 operands in TF32 (Triton's default), where BGMV
(block_m 1: tl.sum of fp32 products) is exact fp32; so fp32 on CUDA is refused (grouped_ok) and stays with BGMV.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from .device_caps import sm_count
from .lora_batch import LoraBatch, LoraPool
from .lora_fused import _expand_tile, _shrink_tile, check_segments, expand_tiles, segment_args
from .pdl import gdc_start, gdc_wait, launch_kw

GROUP_BM = 16  # rows per tile (the smallest tl.dot M)
MAX_ROWS = 64  # blocks (rows) above this: the BGMV kernels (the grouping is an [rows, rows] compare per program)
SHRINK_ITEMS = 512  # the shrink's K split targets this many work items over the live tiles
SHRINK_BLOCK_K = 128
EXPAND_BLOCK_N = 128
PROGRAMS_PER_SM = (4, 8)  # (shrink, expand) grid: programs per SM, each walking work items


@triton.jit
def _row_groups(badp_ptr, blen_ptr, tok_ptr, bstart_ptr, NB, NB_P: tl.constexpr, BM: tl.constexpr):
    """Per block j (one row each): adapter, live, token, position among the earlier live blocks of its adapter,
    whether it leads a tile (position % BM == 0), its tile's index among the leaders; and the tile count."""
    j = tl.arange(0, NB_P)
    in_b = j < NB
    ad = tl.load(badp_ptr + j, mask=in_b, other=-1)
    live = tl.load(blen_ptr + j, mask=in_b, other=0) > 0
    tk = tl.load(tok_ptr + tl.load(bstart_ptr + j, mask=live, other=0), mask=live, other=0)
    before = (ad[:, None] == ad[None, :]) & live[None, :] & (j[None, :] < j[:, None])
    pos = tl.sum(before.to(tl.int32), axis=1)
    lead = (live & (pos % BM == 0)).to(tl.int32)
    tile_idx = tl.cumsum(lead, axis=0) - 1
    return ad, live, tk, pos, lead, tile_idx, tl.sum(lead, axis=0)


@triton.jit
def _tile_rows(t, ad, live, tk, pos, lead, tile_idx, NB_P: tl.constexpr, BM: tl.constexpr):
    """Tile t's adapter, its BM row slots' tokens and which slots hold a row."""
    sel = (lead > 0) & (tile_idx == t)
    adapter = tl.sum(tl.where(sel, ad, 0), axis=0)
    p0 = tl.sum(tl.where(sel, pos, 0), axis=0)
    member = live & (ad == adapter) & (pos >= p0) & (pos < p0 + BM)
    r = tl.arange(0, BM)
    hit = member[None, :] & ((pos - p0)[None, :] == r[:, None])  # [BM, NB_P]
    toks = tl.sum(tl.where(hit, tk[None, :], 0), axis=1)
    return adapter, toks, tl.sum(hit.to(tl.int32), axis=1) > 0


@triton.jit
def _gshrink_kernel(
    x_ptr, a0, a1, a2, r0, r1, r2, v_ptr, tok_ptr, badp_ptr, bstart_ptr, blen_ptr,
    NB, K, K_TILES, ITEMS, SEGS, RB, stride_xt, sal0, sar0, sal1, sar1, sal2, sar2, stride_vt, off1, off2,
    NB_P: tl.constexpr, BM: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, USE_GDC: tl.constexpr = 0,
):  # fmt: skip
    gdc_start(USE_GDC)
    ad, live, tk, pos, lead, tile_idx, n_tiles = _row_groups(badp_ptr, blen_ptr, tok_ptr, bstart_ptr, NB, NB_P, BM)
    gdc_wait(USE_GDC)  # every program waits (before x, v and the atomics)
    per_k = n_tiles * SEGS * RB
    split = tl.maximum(1, tl.minimum(K_TILES, ITEMS // tl.maximum(per_k, 1)))
    iters = (K_TILES + split - 1) // split
    split = (K_TILES + iters - 1) // iters
    for w in range(tl.program_id(0), per_k * split, tl.num_programs(0)):
        ks = w % split
        rest = w // split
        rb = rest % RB
        rest = rest // RB
        seg = rest % SEGS
        adapter, toks, mask_t = _tile_rows(rest // SEGS, ad, live, tk, pos, lead, tile_idx, NB_P, BM)
        k_base = ks * iters * BLOCK_K
        if seg == 0:
            _shrink_tile(x_ptr, a0, r0, v_ptr, toks, mask_t, adapter, rb, k_base, K, iters, stride_xt, sal0, sar0,
                         stride_vt, 0, BM, BLOCK_R, BLOCK_K, True, 0)  # fmt: skip
        elif seg == 1:
            _shrink_tile(x_ptr, a1, r1, v_ptr, toks, mask_t, adapter, rb, k_base, K, iters, stride_xt, sal1, sar1,
                         stride_vt, off1, BM, BLOCK_R, BLOCK_K, True, 0)  # fmt: skip
        else:
            _shrink_tile(x_ptr, a2, r2, v_ptr, toks, mask_t, adapter, rb, k_base, K, iters, stride_xt, sal2, sar2,
                         stride_vt, off2, BM, BLOCK_R, BLOCK_K, True, 0)  # fmt: skip


@triton.jit
def _gexpand_kernel(
    v_ptr, b0, b1, b2, r0, r1, r2, s0, s1, s2, y_ptr, tok_ptr, badp_ptr, bstart_ptr, blen_ptr,
    NB, N0, N1, N2, T0, T1, TN, off1, off2, col0, col1, col2, stride_vt, sbl0, sbr0, sbl1, sbr1, sbl2, sbr2,
    stride_yt, NB_P: tl.constexpr, BM: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
    USE_GDC: tl.constexpr = 0,
):  # fmt: skip
    gdc_start(USE_GDC)
    ad, live, tk, pos, lead, tile_idx, n_tiles = _row_groups(badp_ptr, blen_ptr, tok_ptr, bstart_ptr, NB, NB_P, BM)
    gdc_wait(USE_GDC)
    for w in range(tl.program_id(0), n_tiles * TN, tl.num_programs(0)):
        tile = w % TN  # consecutive programs: N tiles of one row tile (B streams in order)
        adapter, toks, mask_t = _tile_rows(w // TN, ad, live, tk, pos, lead, tile_idx, NB_P, BM)
        if tile < T0:
            _expand_tile(v_ptr, b0, r0, s0, y_ptr, toks, mask_t, adapter, tile * BLOCK_N, N0, 0, col0,
                         stride_vt, sbl0, sbr0, stride_yt, BM, BLOCK_R, BLOCK_N, 0)  # fmt: skip
        elif tile < T0 + T1:
            _expand_tile(v_ptr, b1, r1, s1, y_ptr, toks, mask_t, adapter, (tile - T0) * BLOCK_N, N1, off1, col1,
                         stride_vt, sbl1, sbr1, stride_yt, BM, BLOCK_R, BLOCK_N, 0)  # fmt: skip
        else:
            _expand_tile(v_ptr, b2, r2, s2, y_ptr, toks, mask_t, adapter, (tile - T0 - T1) * BLOCK_N, N2, off2,
                         col2, stride_vt, sbl2, sbr2, stride_yt, BM, BLOCK_R, BLOCK_N, 0)  # fmt: skip


def grouped_dtype_ok(dtype: torch.dtype, device: torch.device) -> bool:
    """fp16 / bf16 anywhere; fp32 only off CUDA. On CUDA tl.dot takes fp32 operands as TF32 (10-bit mantissa), where
    the BGMV kernels sum fp32 exactly; Triton's interpreter (the CPU tests) computes tl.dot as an fp32 matmul."""
    return dtype in (torch.float16, torch.bfloat16) or device.type != "cuda"


def grouped_ok(batch: LoraBatch, x: torch.Tensor) -> bool:
    """Per-row batches (block_m 1) of 1..MAX_ROWS blocks, whose x the grouped kernels multiply as precisely as BGMV
    (grouped_dtype_ok), take the grouped kernels."""
    return batch.block_m == 1 and 0 < batch.blk_len.numel() <= MAX_ROWS and grouped_dtype_ok(x.dtype, x.device)


def lora_apply_grouped(y: torch.Tensor, x: torch.Tensor, pools: Sequence[LoraPool], cols: Sequence[int],
                       batch: LoraBatch) -> torch.Tensor:  # fmt: skip
    """In place, as lora_fused.lora_apply_fused: y[:, cols[s] : cols[s] + N_s] += LoRA_s(x), for a block_m = 1
    batch of at most MAX_ROWS blocks (grouped_ok). A batch without blocks (base rows only) returns y unchanged, as
    lora_apply_fused does."""
    widths = check_segments(y, x, pools, cols, batch, "lora_apply_grouped")
    nb = batch.blk_len.numel()
    if nb == 0:
        return y
    if not grouped_ok(batch, x):
        raise ValueError(f"grouped LoRA takes block_m 1, 1..{MAX_ROWS} blocks and (on CUDA) fp16 / bf16")
    t, k = x.shape
    nb_p = max(GROUP_BM, triton.next_power_of_2(nb))
    s = segment_args(pools)
    block_r = min(64, max(16, triton.next_power_of_2(max(s.r_max))))
    sms = sm_count(x.device) if x.is_cuda else 2  # interpreted: 2 per-SM sets (programs walk items)
    v = torch.zeros(t, sum(s.r_max), dtype=torch.float32, device=x.device)
    meta = (batch.token_ids, batch.blk_adapter, batch.blk_start, batch.blk_len)
    _gshrink_kernel[(sms * PROGRAMS_PER_SM[0],)](
        x, *s.a, v, *meta, nb, k, triton.cdiv(k, SHRINK_BLOCK_K), SHRINK_ITEMS, len(pools),
        triton.cdiv(max(s.r_max), block_r), x.stride(0), *s.a_strides, v.stride(0), *s.v_offs,
        NB_P=nb_p, BM=GROUP_BM, BLOCK_R=block_r, BLOCK_K=SHRINK_BLOCK_K, num_warps=4, **launch_kw(),
    )  # fmt: skip
    nt, c3, n_tiles = expand_tiles(widths, cols, EXPAND_BLOCK_N)
    _gexpand_kernel[(sms * PROGRAMS_PER_SM[1],)](
        v, *s.b, y, *meta, nb, *nt, n_tiles, *s.v_offs, *c3, v.stride(0), *s.b_strides, y.stride(0),
        NB_P=nb_p, BM=GROUP_BM, BLOCK_R=block_r, BLOCK_N=EXPAND_BLOCK_N, num_warps=4, **launch_kw(),
    )  # fmt: skip
    return y
