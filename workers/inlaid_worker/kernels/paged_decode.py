"""Paged-attention decode (Triton, flash-decoding) over the engine's block table, plus its torch reference.

One query token per sequence. KV cache of one layer: k_cache, v_cache [num_blocks, block_size, kv_heads,
head_dim]; sequence s reads its first context_lens[s] tokens through block_tables[s] (token j lives at block
block_tables[s, j // block_size], offset j % block_size). Grouped-query attention: query head h reads KV head
h // (heads // kv_heads); one program handles all query heads of one KV head, so each K/V tile is read once.

Three kernels (`impl`; default: env INLAID_DECODE_ATTN, else "row" where row_for() says so, else DEFAULT_IMPL =
"tiles"):

"tiles" (the shipped one): each sequence's context is cut into `num_parts` equal partitions (sized at run time from
its context_len, so every program has work whatever the length), each walked in tensor-core tiles (query heads
padded to 16 rows) with the tile and pipeline depth autotuned per batch bucket.

"split": partition p of `num_parts` takes the tiles p, p + num_parts, ... of BLOCK_N tokens (interleaved), so the
first tile's block-table entries are known before the context length is: a program issues the length, its table
entries and its first K/V tile at once; scores and P.V are CUDA-core products in fp32 (no 16-row padding); later
tiles keep the next tile's K/V and the block entries of the one after in flight (lookahead). Under PDL
(kernels.pdl) it loads the step metadata (lengths, block table: the decode graph's staged buffer) and its first
tile's cache rows BEFORE griddepcontrol.wait, except the row of position context_len - 1, which it loads after the
wait: that row is this step's token, written by the kernel just before (rope_cache); every older row was written
by earlier steps. Precondition, as in every engine decode step (and decode_fused's rope form): nothing else a
step writes lies in a decode row's context. An exception to kernels.pdl's rule list (the KV cache read after the
wait); the GPU test test_split_prefetch_reads_the_new_token_after_the_pdl_wait clobbers the new slots before a
PDL replay and checks both this kernel and a control that loads the new row early (which must fail).
Measured on the H200 (bench/results/attention-2026-11-30-s8-notes.md): at batch 1-4 and context 512 it saves
0.9-1.4 us a layer in a PDL chain of rope_cache + attention + merge, but it is 1.2-1.4x slower than "tiles" at
context 4096 from batch 2 up and its kernel alone is no faster at batch 1 (7.2 vs 6.2 us); the 7B int4 step moved
by -3% to +4% (noise: +-0.05 ms). So "tiles" stays the default; "split" is selectable (fusion "split",
INLAID_DECODE_ATTN=split, options INLAID_DECODE_SPLIT).

"tiles" under PDL can do the same (PREFETCH 1: lengths, its partition's first block-table entries and first K/V
tile before the wait, the new token's row after it; `tiles_prefetch`, env INLAID_DECODE_TILES_PREFETCH=1,
TILES_PREFETCH), but it is OFF: measured on the H200 (bench/results/pdl-2026-11-30-s8-notes.md) the peeled first
tile costs more than the early load saves (rope + attention under PDL at context 512: 9.72 vs 8.68 us a layer at
batch 1, 11.12 vs 10.82 at 2, 16.93 vs 16.13 at 4, 28.00 vs 24.69 at 8; the 7B int4 step at batch 8 3.08 vs
2.94 ms). The peeled first tile itself is the cost: with PDL off the same kernel takes 9.01 vs 7.73 us a layer
(batch 1 / 512), presumably because that tile now runs outside the loop's software pipeline.

"tiles" with SKIP_EMPTY (skip_empty_for: on the H200 at batch buckets 1-2, SKIP_EMPTY_UPTO): the partitions are
chunks of the context rounded up to whole tiles, so at short contexts most of them are empty (batch 1 / 512 tokens,
32 partitions, the tuned 128-token tile: 28 of 32). Such a program reads its length (the decode graph's staged
buffer, as "split" does) before griddepcontrol.wait and exits at once, neither waiting nor writing; partition 0
always runs and waits, so the kernel still completes after its predecessor; the merge kernel (CHUNK_N) reads only
the partitions that wrote. Another exception to kernels.pdl's rule list, pinned by
test_pdl_ptx_order.test_tiles_skip_empty_reads_only_the_lengths_before_the_wait. Why the batch-1 kernel costs ~6 us
at any context (bench/results/decode-2026-11-30-s10-attn.md, Nsight Compute): the tuned tile (128 tokens, 4 warps,
152 registers, 74 KB of shared memory: 3 programs an SM, 2.6 waves of 1,024) leaves 128 busy programs, one per SM,
each running ~1,700 dependent instructions a warp at ~1.4 active warps a scheduler (6.2 cycles an issued
instruction); the 896 empty ones ran ~650 instructions each and held the SMs the merge and the o GEMV launch into.

"row" (kernels.decode_row; the default at the batch buckets of ROW_TABLE: H200 buckets 1, 2 and 4): a fixed
partitioning of ~8 one-warp programs an SM (not cut by the context), 16-token tiles whose block-table entry is one
scalar load, CUDA-core products for the query rows (no 16-row padding), the first tile's older K/V rows before the PDL
wait and the next tile in flight in the loop, empty partitions exiting before the wait, and the merge done by the last
busy partition to arrive (none when one partition covers the context). Its own partition count: a default "row"
ignores num_parts (the graphs pass the tiles kernel's). Measured in bench/results/decode-2026-11-30-s11-attn.md and
-s11-attn2.md. With its option rope=1 (row_rope_for; ROW_TABLE at H200 buckets 1-2), model.llama_fast folds rope_cache
into it (decode_row.row_rope_decode: one launch).

"tiles" and "split": with num_parts > 1 partitions write (max, sum, unnormalised output) and a second kernel merges
them (split's MERGE 2: the last program of a (sequence, KV head) to arrive merges, as decode_fused); with
num_parts == 1 the first kernel writes the output directly. Every kernel: a sequence with context_len 0 (a padding
row of a CUDA-graph bucket) gets zeros.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from inlaid_worker.env_switch import env_switch

from .decode_fused import counters
from .decode_row import row_decode, row_options
from .device_caps import measured_device, measured_key
from .pdl import gdc_enter, gdc_late, gdc_start, gdc_wait, launch_kw


@triton.jit
def _tile_scores(q, k, valid, m_i, l_i, scale, IEEE: tl.constexpr):
    """impl "tiles", one tile's scores against k [BLOCK_N, D] (tensor cores): (new max, rescale, p, new sum)."""
    if IEEE:
        scores = tl.dot(q, tl.trans(k), input_precision="ieee")
    else:
        scores = tl.dot(q, tl.trans(k))
    scores = tl.where(valid[None, :], scores * scale, float("-inf"))  # [REP_PAD, BLOCK_N]
    m_new = tl.maximum(m_i, tl.max(scores, axis=1))
    alpha = tl.exp(m_i - m_new)
    p = tl.exp(scores - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    return m_new, alpha, p, l_i


@triton.jit
def _tile_pv(p, v, alpha, acc, IEEE: tl.constexpr):
    """impl "tiles", the tile's P.V into acc."""
    if IEEE:
        pv = tl.dot(p, v.to(tl.float32), input_precision="ieee")
    else:
        pv = tl.dot(p.to(v.dtype), v)
    return acc * alpha[:, None] + pv


@triton.jit
def _part_chunk(ctx, NUM_PARTS: tl.constexpr, BLOCK_N: tl.constexpr):
    """Tokens per partition of impl "tiles": the context cut into NUM_PARTS chunks rounded up to whole tiles."""
    return tl.cdiv(tl.cdiv(ctx, NUM_PARTS), BLOCK_N) * BLOCK_N


@triton.jit
def _part_busy(part, ctx, NUM_PARTS: tl.constexpr, BLOCK_N: tl.constexpr):
    """Whether partition `part` runs (writes its row) under SKIP_EMPTY: it starts inside the context, or is 0."""
    return (part * _part_chunk(ctx, NUM_PARTS, BLOCK_N) < ctx) | (part == 0)


@triton.jit
def _decode_kernel(
    q_ptr, k_ptr, v_ptr, bt_ptr, ctx_ptr, out_ptr, pm_ptr, pl_ptr, pacc_ptr, scale,
    stride_qt, stride_qh, stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh, stride_bt,
    stride_ot, stride_oh,
    REP: tl.constexpr, REP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr,
    S_BUCKET, BLOCK_SIZE: tl.constexpr, NUM_PARTS: tl.constexpr, IEEE: tl.constexpr, BLOCK_N: tl.constexpr,
    USE_GDC: tl.constexpr = 0, PREFETCH: tl.constexpr = 0, SKIP_EMPTY: tl.constexpr = 0,
):  # fmt: skip
    s = tl.program_id(0)
    kvh = tl.program_id(1)
    part = tl.program_id(2)
    if SKIP_EMPTY:  # a partition past the context exits at once, before the PDL wait, writing nothing (docstring)
        ctx = tl.load(ctx_ptr + s)
        busy = _part_busy(part, ctx, NUM_PARTS, BLOCK_N)
    else:
        busy = True
    if busy:
        _decode_body(q_ptr, k_ptr, v_ptr, bt_ptr, ctx_ptr, out_ptr, pm_ptr, pl_ptr, pacc_ptr, scale, s, kvh, part,
                     stride_qt, stride_qh, stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh,
                     stride_bt, stride_ot, stride_oh, REP, REP_PAD, HEAD_DIM, D_PAD, BLOCK_SIZE, NUM_PARTS, IEEE,
                     BLOCK_N, USE_GDC, PREFETCH)  # fmt: skip


@triton.jit
def _decode_body(
    q_ptr, k_ptr, v_ptr, bt_ptr, ctx_ptr, out_ptr, pm_ptr, pl_ptr, pacc_ptr, scale, s, kvh, part,
    stride_qt, stride_qh, stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh, stride_bt,
    stride_ot, stride_oh,
    REP: tl.constexpr, REP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, NUM_PARTS: tl.constexpr, IEEE: tl.constexpr, BLOCK_N: tl.constexpr,
    USE_GDC: tl.constexpr, PREFETCH: tl.constexpr,
):  # fmt: skip
    """One (sequence, KV head, partition) program of impl "tiles"."""
    r = tl.arange(0, REP_PAD)
    d = tl.arange(0, D_PAD)
    mask_h = r < REP
    mask_d = d < HEAD_DIM
    heads = kvh * REP + r
    m_i = tl.full((REP_PAD,), float("-inf"), tl.float32)
    l_i = tl.zeros((REP_PAD,), tl.float32)
    acc = tl.zeros((REP_PAD, D_PAD), tl.float32)
    if PREFETCH:  # under PDL: lengths, table entries and the first tile's older rows before the wait (docstring)
        gdc_start(USE_GDC)
        ctx = tl.load(ctx_ptr + s)
        chunk = _part_chunk(ctx, NUM_PARTS, BLOCK_N)
        start = part * chunk
        end = tl.minimum(start + chunk, ctx)
        offs = start + tl.arange(0, BLOCK_N)
        valid = offs < end
        blk = tl.load(bt_ptr + s * stride_bt + offs // BLOCK_SIZE, mask=valid, other=0).to(tl.int64)
        within = offs % BLOCK_SIZE
        k_row = (blk * stride_kb + within * stride_ks + kvh * stride_kh)[:, None] + d[None, :]
        v_row = (blk * stride_vb + within * stride_vs + kvh * stride_vh)[:, None] + d[None, :]
        if PREFETCH == 1:  # the new token (position ctx - 1, written by rope_cache just before) after the wait
            old = (valid & (offs < ctx - 1))[:, None] & mask_d[None, :]
        else:  # 2: the new token too (unsafe: the tests' control)
            old = valid[:, None] & mask_d[None, :]
        k = tl.load(k_ptr + k_row, mask=old, other=0.0)
        v = tl.load(v_ptr + v_row, mask=old, other=0.0)
        gdc_wait(USE_GDC)
        if PREFETCH == 1:
            new = (valid & (offs == ctx - 1))[:, None] & mask_d[None, :]
            k = tl.where(new, tl.load(k_ptr + k_row, mask=new, other=0.0), k)
            v = tl.where(new, tl.load(v_ptr + v_row, mask=new, other=0.0), v)
        q = tl.load(q_ptr + s * stride_qt + heads[:, None] * stride_qh + d[None, :],
                    mask=mask_h[:, None] & mask_d[None, :], other=0.0)  # fmt: skip
        if start < end:  # the first tile, then the loop from the second
            m_i, alpha, p, l_i = _tile_scores(q, k, valid, m_i, l_i, scale, IEEE)
            acc = _tile_pv(p, v, alpha, acc, IEEE)
        first = start + BLOCK_N
    else:
        gdc_enter(USE_GDC)  # q, the cache, tables and lengths come from earlier kernels (kernels.pdl)
        ctx = tl.load(ctx_ptr + s)
        chunk = _part_chunk(ctx, NUM_PARTS, BLOCK_N)
        start = part * chunk
        end = tl.minimum(start + chunk, ctx)
        q = tl.load(q_ptr + s * stride_qt + heads[:, None] * stride_qh + d[None, :],
                    mask=mask_h[:, None] & mask_d[None, :], other=0.0)  # fmt: skip
        first = start
    for j0 in range(first, end, BLOCK_N):
        offs = j0 + tl.arange(0, BLOCK_N)
        valid = offs < end
        blk = tl.load(bt_ptr + s * stride_bt + offs // BLOCK_SIZE, mask=valid, other=0).to(tl.int64)
        within = offs % BLOCK_SIZE
        kv_mask = valid[:, None] & mask_d[None, :]
        k = tl.load(k_ptr + (blk * stride_kb + within * stride_ks + kvh * stride_kh)[:, None] + d[None, :],
                    mask=kv_mask, other=0.0)  # fmt: skip
        m_i, alpha, p, l_i = _tile_scores(q, k, valid, m_i, l_i, scale, IEEE)
        v = tl.load(v_ptr + (blk * stride_vb + within * stride_vs + kvh * stride_vh)[:, None] + d[None, :],
                    mask=kv_mask, other=0.0)  # fmt: skip
        acc = _tile_pv(p, v, alpha, acc, IEEE)
    gdc_late(USE_GDC)
    if NUM_PARTS == 1:
        out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
        tl.store(out_ptr + s * stride_ot + heads[:, None] * stride_oh + d[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=mask_h[:, None] & mask_d[None, :])  # fmt: skip
    else:
        row = (s * (tl.num_programs(1) * REP) + heads) * NUM_PARTS + part  # [S, heads, parts] flat
        tl.store(pm_ptr + row, m_i, mask=mask_h)
        tl.store(pl_ptr + row, l_i, mask=mask_h)
        tl.store(pacc_ptr + row[:, None] * D_PAD + d[None, :], acc, mask=mask_h[:, None])


# on CUDA the tile and pipeline depth are tuned once per (batch bucket, partitions, heads layout)
_TUNE = [triton.Config({"BLOCK_N": bn}, num_warps=w, num_stages=st)
         for bn, w, st in ((32, 4, 2), (64, 4, 2), (64, 4, 3), (128, 4, 2), (128, 8, 2), (64, 8, 3))]  # fmt: skip
def _bench(kernel_call, quantiles):  # type: ignore[no-untyped-def]  # short: ~25 ms per config
    return triton.testing.do_bench(kernel_call, warmup=5, rep=20, quantiles=quantiles)


_decode_tuned = triton.autotune(_TUNE, key=["S_BUCKET", "REP", "HEAD_DIM", "NUM_PARTS"], do_bench=_bench)(_decode_kernel)


@triton.jit
def _merge_kernel(
    pm_ptr, pl_ptr, pacc_ptr, out_ptr, ctx_ptr, stride_ot, stride_oh,
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, NUM_PARTS: tl.constexpr, USE_GDC: tl.constexpr = 0,
    CHUNK_N: tl.constexpr = 0,
):  # fmt: skip
    """CHUNK_N > 0 (the tiles kernel's SKIP_EMPTY with BLOCK_N = CHUNK_N): only the partitions that start inside
    the context (and partition 0) wrote; the others' rows are not read."""
    gdc_enter(USE_GDC)  # kernels.pdl
    s = tl.program_id(0)
    h = tl.program_id(1)
    parts = tl.arange(0, NUM_PARTS)
    row = (s * tl.num_programs(1) + h) * NUM_PARTS + parts
    d = tl.arange(0, D_PAD)
    if CHUNK_N:
        ctx = tl.load(ctx_ptr + s)
        wrote = _part_busy(parts, ctx, NUM_PARTS, CHUNK_N)
    else:
        wrote = parts >= 0
    m = tl.load(pm_ptr + row, mask=wrote, other=float("-inf"))
    m_max = tl.max(m, axis=0)
    m_max = tl.where(m_max == float("-inf"), 0.0, m_max)
    w = tl.exp(m - m_max)  # 0 for empty partitions
    total = tl.sum(tl.load(pl_ptr + row, mask=wrote, other=0.0) * w, axis=0)
    acc = tl.sum(tl.load(pacc_ptr + row[:, None] * D_PAD + d[None, :], mask=wrote[:, None], other=0.0) * w[:, None],
                 axis=0)  # fmt: skip
    out = acc / tl.where(total > 0, total, 1.0)
    gdc_late(USE_GDC)
    tl.store(out_ptr + s * stride_ot + h * stride_oh + d, out.to(out_ptr.dtype.element_ty), mask=d < HEAD_DIM)


@triton.jit
def _split_tile(q, k, v, valid, m_i, l_i, acc):
    """One tile of impl "split": online softmax over its valid tokens (q pre-scaled, fp32; k, v [BLOCK_N, D])."""
    scores = tl.sum(q[:, None, :] * k.to(tl.float32)[None, :, :], axis=2)  # [REP_PAD, BLOCK_N]
    scores = tl.where(valid[None, :], scores, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(scores, axis=1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a tile with no valid token so far: p = 0
    alpha = tl.exp(m_i - m_safe)
    p = tl.exp(scores - m_safe[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + tl.sum(p[:, :, None] * v.to(tl.float32)[None, :, :], axis=1)
    return m_new, l_i, acc


@triton.jit
def _split_kernel(
    q_ptr, k_ptr, v_ptr, bt_ptr, ctx_ptr, out_ptr, pm_ptr, pl_ptr, pacc_ptr, cnt_ptr, scale, table_w,
    stride_qt, stride_qh, stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh, stride_bt,
    stride_ot, stride_oh,
    HEADS: tl.constexpr, KV_HEADS: tl.constexpr, REP: tl.constexpr, REP_PAD: tl.constexpr,
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, BLOCK_SIZE: tl.constexpr, NUM_PARTS: tl.constexpr,
    MERGE: tl.constexpr, PREFETCH: tl.constexpr, LOOKAHEAD: tl.constexpr, BLOCK_N: tl.constexpr,
    USE_GDC: tl.constexpr = 0,
):  # fmt: skip
    """impl "split" (module docstring): program (part, kv head, sequence) takes the tiles part, part + NUM_PARTS,
    ... of BLOCK_N tokens; scores and P.V as CUDA-core products (fp32)."""
    part = tl.program_id(0)
    kvh = tl.program_id(1)
    s = tl.program_id(2)
    r = tl.arange(0, REP_PAD)
    d = tl.arange(0, D_PAD)
    mask_h = r < REP
    mask_d = d < HEAD_DIM
    heads = kvh * REP + r
    q_mask = mask_h[:, None] & mask_d[None, :]
    # the first tile's block-table entries do not depend on the context length: issued together with it
    offs = part * BLOCK_N + tl.arange(0, BLOCK_N)
    bt_row = bt_ptr + s * stride_bt
    bi = offs // BLOCK_SIZE
    within = offs % BLOCK_SIZE
    k_off = kvh * stride_kh + d[None, :]
    v_off = kvh * stride_vh + d[None, :]
    if PREFETCH:  # before the PDL wait: step metadata and the cache rows of earlier steps (module docstring)
        gdc_start(USE_GDC)
        blk = tl.load(bt_row + bi, mask=bi < table_w, other=0).to(tl.int64)
        ctx = tl.load(ctx_ptr + s)
        if PREFETCH == 1:  # the new token (position ctx - 1) is loaded after the wait
            old = (offs < ctx - 1)[:, None] & mask_d[None, :]
        else:  # 2: the new token too (unsafe: the tests' control)
            old = (offs < ctx)[:, None] & mask_d[None, :]
        k = tl.load(k_ptr + (blk * stride_kb + within * stride_ks)[:, None] + k_off, mask=old, other=0.0)
        v = tl.load(v_ptr + (blk * stride_vb + within * stride_vs)[:, None] + v_off, mask=old, other=0.0)
        gdc_wait(USE_GDC)
        if PREFETCH == 1:  # this step's token, written by the kernel before (rope_cache)
            new = (offs == ctx - 1)[:, None] & mask_d[None, :]
            k = tl.where(new, tl.load(k_ptr + (blk * stride_kb + within * stride_ks)[:, None] + k_off, mask=new,
                                      other=0.0), k)  # fmt: skip
            v = tl.where(new, tl.load(v_ptr + (blk * stride_vb + within * stride_vs)[:, None] + v_off, mask=new,
                                      other=0.0), v)  # fmt: skip
    else:
        gdc_enter(USE_GDC)
        blk = tl.load(bt_row + bi, mask=bi < table_w, other=0).to(tl.int64)
        ctx = tl.load(ctx_ptr + s)
        kv_mask = (offs < ctx)[:, None] & mask_d[None, :]
        k = tl.load(k_ptr + (blk * stride_kb + within * stride_ks)[:, None] + k_off, mask=kv_mask, other=0.0)
        v = tl.load(v_ptr + (blk * stride_vb + within * stride_vs)[:, None] + v_off, mask=kv_mask, other=0.0)
    k_first = k
    v_first = v
    q = tl.load(q_ptr + s * stride_qt + heads[:, None] * stride_qh + d[None, :], mask=q_mask, other=0.0)
    q = q.to(tl.float32) * scale
    m_i = tl.full((REP_PAD,), float("-inf"), tl.float32)
    l_i = tl.zeros((REP_PAD,), tl.float32)
    acc = tl.zeros((REP_PAD, D_PAD), tl.float32)
    valid = offs < ctx
    n_tiles = tl.cdiv(ctx, BLOCK_N)
    ar = tl.arange(0, BLOCK_N)
    if LOOKAHEAD:  # longer contexts: the K/V of the next tile and the block entries of the one after are in flight
        t1 = part + NUM_PARTS
        offs = t1 * BLOCK_N + ar
        blk = tl.load(bt_row + offs // BLOCK_SIZE, mask=offs < ctx, other=0).to(tl.int64)
        kv_mask = (offs < ctx)[:, None] & mask_d[None, :]
        within = offs % BLOCK_SIZE
        k = tl.load(k_ptr + (blk * stride_kb + within * stride_ks)[:, None] + k_off, mask=kv_mask, other=0.0)
        v = tl.load(v_ptr + (blk * stride_vb + within * stride_vs)[:, None] + v_off, mask=kv_mask, other=0.0)
        offs = (t1 + NUM_PARTS) * BLOCK_N + ar
        blk_next = tl.load(bt_row + offs // BLOCK_SIZE, mask=offs < ctx, other=0).to(tl.int64)
        m_i, l_i, acc = _split_tile(q, k_first, v_first, valid, m_i, l_i, acc)  # the first tile, meanwhile
        for t in range(t1, n_tiles, NUM_PARTS):
            offs = (t + 2 * NUM_PARTS) * BLOCK_N + ar  # block entries two tiles ahead
            blk_after = tl.load(bt_row + offs // BLOCK_SIZE, mask=offs < ctx, other=0).to(tl.int64)
            offs = (t + NUM_PARTS) * BLOCK_N + ar  # K/V one tile ahead
            kv_mask = (offs < ctx)[:, None] & mask_d[None, :]
            within = offs % BLOCK_SIZE
            k_next = tl.load(k_ptr + (blk_next * stride_kb + within * stride_ks)[:, None] + k_off, mask=kv_mask,
                             other=0.0)  # fmt: skip
            v_next = tl.load(v_ptr + (blk_next * stride_vb + within * stride_vs)[:, None] + v_off, mask=kv_mask,
                             other=0.0)  # fmt: skip
            m_i, l_i, acc = _split_tile(q, k, v, (t * BLOCK_N + ar) < ctx, m_i, l_i, acc)
            k = k_next
            v = v_next
            blk_next = blk_after
    else:
        m_i, l_i, acc = _split_tile(q, k_first, v_first, valid, m_i, l_i, acc)
        for t in range(part + NUM_PARTS, n_tiles, NUM_PARTS):
            offs = t * BLOCK_N + ar
            valid = offs < ctx
            blk = tl.load(bt_row + offs // BLOCK_SIZE, mask=valid, other=0).to(tl.int64)
            within = offs % BLOCK_SIZE
            kv_mask = valid[:, None] & mask_d[None, :]
            k = tl.load(k_ptr + (blk * stride_kb + within * stride_ks)[:, None] + k_off, mask=kv_mask, other=0.0)
            v = tl.load(v_ptr + (blk * stride_vb + within * stride_vs)[:, None] + v_off, mask=kv_mask, other=0.0)
            m_i, l_i, acc = _split_tile(q, k, v, valid, m_i, l_i, acc)
    gdc_late(USE_GDC)
    if NUM_PARTS == 1:
        out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
        tl.store(out_ptr + s * stride_ot + heads[:, None] * stride_oh + d[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=q_mask)  # fmt: skip
    else:
        row = (s * HEADS + heads) * NUM_PARTS + part  # [S, heads, parts] flat, as _merge_kernel reads it
        tl.store(pm_ptr + row, m_i, mask=mask_h)
        tl.store(pl_ptr + row, l_i, mask=mask_h)
        tl.store(pacc_ptr + row[:, None] * D_PAD + d[None, :], acc, mask=mask_h[:, None])
        if MERGE == 2:  # the last program of (sequence, KV head) to arrive merges (as decode_fused)
            tl.debug_barrier()
            arrived = tl.atomic_add(cnt_ptr + s * KV_HEADS + kvh, 1, sem="acq_rel")
            if arrived == NUM_PARTS - 1:
                parts = tl.arange(0, NUM_PARTS)
                for rr in tl.static_range(REP):
                    h = kvh * REP + rr
                    rows = (s * HEADS + h) * NUM_PARTS + parts
                    m = tl.load(pm_ptr + rows, volatile=True)
                    m_max = tl.max(m, axis=0)
                    m_max = tl.where(m_max == float("-inf"), 0.0, m_max)
                    w = tl.exp(m - m_max)
                    total = tl.sum(tl.load(pl_ptr + rows, volatile=True) * w, axis=0)
                    part_acc = tl.load(pacc_ptr + rows[:, None] * D_PAD + d[None, :], volatile=True)
                    o = tl.sum(part_acc * w[:, None], axis=0) / tl.where(total > 0, total, 1.0)
                    tl.store(out_ptr + s * stride_ot + h * stride_oh + d, o.to(out_ptr.dtype.element_ty),
                             mask=mask_d)  # fmt: skip
                tl.store(cnt_ptr + s * KV_HEADS + kvh, 0)  # self-cleaning for the next launch


# The device tables below (ROW_TABLE, SKIP_EMPTY_UPTO, TILES_FIXED, FEWER_PARTS) are keyed by the name of the device
# they were measured on and apply through device_caps.measured_device (that device and its board variants only).

IMPLS = ("tiles", "split", "row")
# the kernel paged_decode runs when the caller names none: env INLAID_DECODE_ATTN, else "row" at the batch buckets of
# ROW_TABLE (row_for), else this (module docstring)
DEFAULT_IMPL = "tiles"


# impl "row" (kernels.decode_row: small fixed tiles, CUDA-core products, fixed partitioning, merge by the last
# partition to arrive) as the default, by device (measured_device) and batch bucket (the next power of two of the
# rows), with its options (decode_row.ROW_DEFAULTS overrides), only where the 7B int4 step measured faster in the
# same run (bench/results/decode-2026-11-30-s11-attn.md); elsewhere "tiles".
# H200 (7B int4 step, device time against "tiles", same runner, alternating, 6 rounds each; every round lower):
# batch 1 0.967x at 512 tokens and 0.979x at 2048 (s11-attn call 2), 0.990x / 0.970x at 512 (calls 3 / s11-attn2);
# batch 2 0.974x / 0.973x / 0.974x at 512; batch 4 0.979x at 512 and 0.957x at 2048 (s11-attn2; 0.941x at 512 in
# s11-attn call 3). Batch 8 is not taken: 0.981x at 512 but 1.007x at 2048 (0/6 rounds lower; 4 partitions walk 32
# tiles each). rope=1 (rotary and the KV write inside "row", model.llama_fast) at buckets 1-2: against "row" with
# rope_cache, device time 0.959x at batch 1 and 0.978x at batch 2 @ 512 (6/6 rounds lower, s11-attn2); not measured
# at bucket 4.
# Session 17 (bench/results/decode-2026-12-01-s17-attn.md, same protocol, 8 rounds): no other split of "row" beat these
# entries (many warps over few partitions, with and without a warp-groups kernel, bench/kernels/s17_attn_groups.patch: +15 to +175 us a step, 0/8 rounds
# lower, batches 1 / 2 / 4 at 512 and 2048 tokens). Bucket 8 again: "row" with its defaults 0.976x "tiles" at 512 (8/8)
# but 1.007x at 2048 (0/8), so it stays on "tiles".
_ROW16 = dict(block_n=16, num_warps=1, lookahead=1)
ROW_TABLE: dict[str, dict[int, dict[str, int]]] = {
    "NVIDIA H200": {1: dict(_ROW16, rope=1), 2: dict(_ROW16, rope=1), 4: dict(_ROW16)}}  # fmt: skip
# None: ROW_TABLE; 0 / 1: off / on (decode_row's defaults) at every bucket (benchmarks). Env INLAID_DECODE_ROW (1 / 0)
# overrides both; read when a call (or a graph capture) runs.
ROW: int | None = None


def row_for(bucket: int, device: torch.device) -> dict[str, int] | None:
    """impl "row"'s options when a launch of `bucket` rows takes it by default, else None: env INLAID_DECODE_ROW,
    else ROW (both: decode_row's defaults), else on CUDA ROW_TABLE of the device (measured_device)."""
    env = env_switch("INLAID_DECODE_ROW")
    if env is not None:
        return {} if env else None
    if ROW is not None:
        return {} if ROW else None
    if device.type != "cuda":
        return None
    return ROW_TABLE.get(measured_key(device) or "", {}).get(bucket)


def default_row(bucket: int, rep: int, device: torch.device) -> dict[str, int] | None:
    """impl "row"'s options (ROW_TABLE entry; {}: decode_row's defaults) when paged_decode without a named impl runs
    it for `bucket` rows with `rep` query heads a KV head, else None: env INLAID_DECODE_ATTN where set, else row_for."""
    if os.environ.get("INLAID_DECODE_ATTN", "").strip():
        return {} if rep == 1 and default_impl() == "row" else None
    return row_for(bucket, device)


def row_rope_for(rows: int, rep: int, device: torch.device) -> dict[str, int] | None:
    """The ROW_TABLE entry (or {}) to pass decode_row.row_rope_decode as `base` when a decode step of `rows` rows
    folds rotary and the KV write into impl "row" (model.llama_fast): "row" is paged_decode's default there and its
    options (decode_row.row_options: the entry, env INLAID_DECODE_ROW_OPTS) say rope=1; else None."""
    base = default_row(triton.next_power_of_2(max(rows, 1)), rep, device)
    return base if base is not None and row_options(base)["rope"] else None


def default_impl() -> str:
    """INLAID_DECODE_ATTN ("tiles", "split" or "row"), else DEFAULT_IMPL; read when a call (or a graph capture)
    runs."""
    impl = os.environ.get("INLAID_DECODE_ATTN", "").strip().lower() or DEFAULT_IMPL
    if impl not in IMPLS:
        raise ValueError(f"INLAID_DECODE_ATTN must be one of {IMPLS}, got {impl!r}")
    return impl


# impl "tiles" under PDL (modes 1 and 2): load the lengths, the first tile's block-table entries and its K/V rows
# of earlier steps before griddepcontrol.wait, as "split" does (PREFETCH 1; the new token's row after the wait).
# Env INLAID_DECODE_TILES_PREFETCH (1 = on); read when a call (or a graph capture) runs.
# bench/results/pdl-2026-11-30-s8-*.
TILES_PREFETCH = 0


def tiles_prefetch_for(use_gdc: int) -> int:
    """The tiles kernel's PREFETCH for a launch in PDL mode use_gdc (0 without PDL and in mode 3)."""
    env = env_switch("INLAID_DECODE_TILES_PREFETCH")
    on = TILES_PREFETCH if env is None else env
    return 1 if on and use_gdc in (1, 2) else 0


# impl "tiles" with more than one partition, SKIP_EMPTY: a partition that starts past its sequence's context (the
# context is cut into tiles of BLOCK_N, so at batch 1 / 512 tokens with the H200's tuned 128-token tile, 28 of 32)
# reads the length before the PDL wait and exits at once, writing nothing; the merge kernel reads only the
# partitions that wrote. Partition 0 always runs (and waits), so the kernel never completes before its predecessor.
# Only where measured, by device name: the largest batch bucket with SKIP_EMPTY on. H200 (7B int4 step, same runner,
# alternating; bench/results/decode-2026-11-30-s10-attn.md): device time batch 2 0.991x / 0.992x (8/8, 6/6 rounds
# in two runs), batch 1 0.997x / 0.998x (7/8, 5/6), batch 4 1.002x / 1.001x (not taken).
SKIP_EMPTY_UPTO: dict[str, int] = {"NVIDIA H200": 2}
# None: SKIP_EMPTY_UPTO; 0 / 1: off / on at every bucket (benchmarks). Env INLAID_DECODE_SKIP_EMPTY (1 / 0) overrides
# both; read when a call (or a graph capture) runs.
SKIP_EMPTY: int | None = None


def skip_empty_for(bucket: int, device: torch.device) -> int:
    """The tiles kernel's SKIP_EMPTY for a launch of `bucket` rows (env INLAID_DECODE_SKIP_EMPTY, else SKIP_EMPTY,
    else on CUDA for buckets up to SKIP_EMPTY_UPTO of the device (measured_device))."""
    env = env_switch("INLAID_DECODE_SKIP_EMPTY")
    if env is not None:
        return int(env)
    if SKIP_EMPTY is not None:
        return int(SKIP_EMPTY)
    if device.type != "cuda":
        return 0
    return int(bucket <= SKIP_EMPTY_UPTO.get(measured_key(device) or "", 0))


# impl "tiles" on CUDA: (BLOCK_N, num_warps, num_stages) instead of the autotuner's pick, by device (measured_device)
# and batch bucket (the next power of two of the rows), only where
# measured; elsewhere the autotuner picks (keyed by bucket, partitions and head layout, timed at the first call's
# context). Env INLAID_DECODE_TILES_CONFIG="64,4,2" sets one config for every bucket (benchmarks); read when a call
# (or a graph capture) runs.
TILES_FIXED: dict[str, dict[int, tuple[int, int, int]]] = {}


def tiles_config(bucket: int, device: torch.device) -> tuple[int, int, int] | None:
    """The fixed tiles config of a batch bucket on this device (env INLAID_DECODE_TILES_CONFIG, else TILES_FIXED),
    or None (autotune)."""
    raw = os.environ.get("INLAID_DECODE_TILES_CONFIG", "").strip()
    if raw:
        vals = tuple(int(v) for v in raw.split(","))
        if len(vals) != 3 or any(v < 1 for v in vals):
            raise ValueError(f"INLAID_DECODE_TILES_CONFIG must be 'BLOCK_N,num_warps,num_stages', got {raw!r}")
        return vals  # type: ignore[return-value]
    if not TILES_FIXED or device.type != "cuda":
        return None
    return TILES_FIXED.get(measured_key(device) or "", {}).get(bucket)


# the autotuner's keys (batch bucket, query heads per KV head, head_dim, partitions, dtypes) already tuned: it is
# keyed without SKIP_EMPTY, and SKIP_EMPTY was measured with the pick tuned with every partition running (empty ones
# exit at once when it is on, which would change what the autotuner times), so a new key is tuned with it off first
_TUNED_PLAIN: set[tuple] = set()


def workspace(n: int, d_pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The partitions' (max, sum, unnormalised output) rows: uninitialised (a test seam: tests fill them with NaN)."""
    pm = torch.empty(n, dtype=torch.float32, device=device)
    return pm, torch.empty_like(pm), torch.empty(n, d_pad, dtype=torch.float32, device=device)


Fewer = tuple[tuple[int, int], ...]
# By device (measured_device), only where measured; other devices: no divisor.
# (largest batch, divisor) in ascending order: parts_for divides its four-programs-per-SM count by this (a power of
# two; 1 past the last entry). By measurement on the H200 (7B int4 step, CUDA graph + PDL, every count of a batch
# taking turns on one runner, contexts 512 / 2048 / 4096; bench/results/decode-2026-11-30-s9-b1-profile.md): batch
# 3-4 with 4 instead of 8 partitions is 2.2-3.2% faster at every context; at batch 1 and 2 the rule's count
# (32 / 16) is the fastest (batch 1: 8 parts +1.3% at 512 tokens, +5% at 4096).
FEWER_PARTS: dict[str, Fewer] = {"NVIDIA H200": ((2, 1), (4, 2))}


def parts_for(num_seqs: int, kv_heads: int, sms: int, fewer: Fewer = ()) -> int:
    """Partitions per (sequence, KV head): the power of two that gives about four programs per SM (rounded up),
    1..32 (H200, 32 KV heads: 32 / 16 / 8 / 4 / 2 / 1 at batch 1 / 2 / 4 / 8 / 16 / 32), divided by `fewer`'s
    divisor at the smallest batches (FEWER_PARTS["NVIDIA H200"], 32 KV heads: batch 4 -> 4)."""
    want = -(-4 * sms // max(1, num_seqs * kv_heads))
    div = next((d for top, d in fewer if num_seqs <= top), 1)
    return int(max(1, min(32, triton.next_power_of_2(want)) // div))


def choose_num_parts(num_seqs: int, kv_heads: int, device: torch.device) -> int:
    """parts_for on this device (1 on the CPU), with FEWER_PARTS of its measured_device (none if not measured): both
    kernels use it."""
    if device.type != "cuda":
        return 1
    props = torch.cuda.get_device_properties(device)
    key = measured_device(props.name, props.multi_processor_count)
    return parts_for(num_seqs, kv_heads, props.multi_processor_count, FEWER_PARTS.get(key or "", ()))


# impl "split": tokens per tile and warps per program, and how partitions meet (MERGE 1: the merge kernel; 2: the
# last program to arrive merges) and whether the first tile is loaded before the PDL wait (prefetch) and the next
# tiles ahead (lookahead). One warp: the batch-1 pick of bench/results/attention-2026-11-30-s8b.json (least PDL
# chain time summed over contexts 512 / 2048 / 4096: 8.2 / 15.8 / 25.5 us against tiles' 8.7 / 16.0 / 27.2)
SPLIT_DEFAULTS = dict(block_n=16, num_warps=1, merge=1, prefetch=1, lookahead=1)
SPLIT_KEYS = (*SPLIT_DEFAULTS, "parts_scale", "parts_div")
LAST_SPLIT: list = [None]  # the compiled kernel of the last "split" launch (benchmarks read its registers)


def split_env() -> dict[str, int]:
    """INLAID_DECODE_SPLIT, e.g. "num_warps=2,merge=2,parts_div=2": overrides of SPLIT_DEFAULTS (parts_scale /
    parts_div multiply / divide the partition count); read when a call (or a graph capture) runs. For benchmarks."""
    raw = os.environ.get("INLAID_DECODE_SPLIT", "").strip()
    out: dict[str, int] = {}
    for item in filter(None, (x.strip() for x in raw.split(","))):
        key, _, value = item.partition("=")
        if key not in SPLIT_KEYS or not value.strip().isdigit():
            raise ValueError(f"INLAID_DECODE_SPLIT: {item!r} is not one of {SPLIT_KEYS} = integer")
        out[key] = int(value)
        if key in ("parts_scale", "parts_div") and out[key] < 1:
            raise ValueError(f"INLAID_DECODE_SPLIT: {key} must be at least 1, got {out[key]}")
    return out


def paged_decode(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
    context_lens: torch.Tensor, scale: float, num_parts: int | None = None, out: torch.Tensor | None = None,
    tune: bool = True, impl: str | None = None, tiles_prefetch: int | None = None, tiles_block_n: int = 64,
    skip_empty: int | None = None, **split: int,
) -> torch.Tensor:  # fmt: skip
    """q [S, heads, head_dim] (one token per sequence) -> [S, heads, head_dim]; see the module docstring.
    tune (impl "tiles"): on CUDA, pick the tile by timing the first call of each batch bucket (never inside a
    graph capture). impl: "tiles" or "split" (default: default_impl() for one query head per KV head, "tiles"
    for grouped heads). split: overrides of SPLIT_DEFAULTS (benchmarks). tiles_prefetch (impl "tiles"): 0 / 1 / 2
    (the tests' unsafe control), default tiles_prefetch_for() of the PDL mode; tiles_block_n: the untuned tile;
    skip_empty (impl "tiles"): empty partitions exit at once (default skip_empty_for() of the batch bucket)."""
    s, heads, hd = q.shape
    kv_heads = k_cache.shape[2]
    if heads % kv_heads or k_cache.shape[3] != hd or block_tables.shape[0] != s or context_lens.shape != (s,):
        raise ValueError(f"paged_decode: q {tuple(q.shape)}, cache {tuple(k_cache.shape)}, "
                         f"tables {tuple(block_tables.shape)}, lens {tuple(context_lens.shape)} do not match")  # fmt: skip
    if q.stride(2) != 1 or k_cache.stride(3) != 1 or v_cache.stride(3) != 1 or block_tables.stride(1) != 1:
        raise ValueError("paged_decode needs the head_dim (and block-table column) stride to be 1")
    rep = heads // kv_heads
    named = impl is not None
    row_base = None
    if impl is None:
        row_base = default_row(triton.next_power_of_2(s), rep, q.device)
        impl = "row" if row_base is not None else None
    impl = impl or (default_impl() if rep == 1 else "tiles")
    if impl not in IMPLS or (split and impl not in ("split", "row")):
        raise ValueError(f"paged_decode: impl must be one of {IMPLS} (options only for split / row), "
                         f"got {impl!r}")  # fmt: skip
    out = torch.empty_like(q) if out is None else out
    if s == 0:
        return out
    if impl == "row":  # its own partition count unless named with the impl (the graphs pass the tiles' count)
        return row_decode(q, k_cache, v_cache, block_tables, context_lens, scale, out,
                          num_parts if named else None, base=row_base, **split)  # fmt: skip
    opt = {**SPLIT_DEFAULTS, **split_env(), **split} if impl == "split" else {}
    parts = num_parts or max(1, choose_num_parts(s, kv_heads, q.device) * opt.get("parts_scale", 1)
                             // opt.get("parts_div", 1))  # fmt: skip
    if parts & (parts - 1):
        raise ValueError(f"num_parts must be a power of two, got {parts}")
    d_pad = max(16, triton.next_power_of_2(hd))
    if parts > 1:
        pm, pl, pacc = workspace(s * heads * parts, d_pad, q.device)
    else:
        pm = pl = pacc = out
    strides = (q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
               v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), block_tables.stride(0),
               out.stride(0), out.stride(1))  # fmt: skip
    merge = 1
    chunk_n = 0  # impl "tiles" with SKIP_EMPTY: its BLOCK_N, which the merge needs to know who wrote
    if impl == "split":
        merge = int(opt["merge"]) if parts > 1 else 0
        if merge not in (0, 1, 2):
            raise ValueError(f"paged_decode: merge must be 1 or 2, got {merge}")
        cnt = counters(q.device, s * kv_heads) if merge == 2 else pm
        LAST_SPLIT[0] = _split_kernel[(parts, kv_heads, s)](
            q, k_cache, v_cache, block_tables, context_lens, out, pm, pl, pacc, cnt, scale, block_tables.shape[1],
            *strides, HEADS=heads, KV_HEADS=kv_heads, REP=rep, REP_PAD=triton.next_power_of_2(rep), HEAD_DIM=hd,
            D_PAD=d_pad, BLOCK_SIZE=k_cache.shape[1], NUM_PARTS=parts, MERGE=merge, PREFETCH=int(opt["prefetch"]),
            LOOKAHEAD=bool(opt["lookahead"]), BLOCK_N=int(opt["block_n"]), num_warps=int(opt["num_warps"]),
            num_stages=1, **launch_kw())  # fmt: skip
    else:
        args = (q, k_cache, v_cache, block_tables, context_lens, out, pm, pl, pacc, scale, *strides)
        kw = launch_kw()
        pre = tiles_prefetch_for(kw["USE_GDC"]) if tiles_prefetch is None else int(tiles_prefetch)
        bucket = triton.next_power_of_2(s)
        if pre not in (0, 1, 2):
            raise ValueError(f"paged_decode: tiles_prefetch must be 0, 1 or 2, got {pre}")
        skip = (skip_empty_for(bucket, q.device) if skip_empty is None else int(skip_empty)) if parts > 1 else 0
        meta = dict(REP=rep, REP_PAD=max(16, triton.next_power_of_2(rep)), HEAD_DIM=hd, D_PAD=d_pad,
                    S_BUCKET=bucket, BLOCK_SIZE=k_cache.shape[1], NUM_PARTS=parts,
                    IEEE=q.dtype == torch.float32, **kw, **({"PREFETCH": pre} if pre else {}),
                    **({"SKIP_EMPTY": 1} if skip else {}))  # fmt: skip
        fixed = tiles_config(meta["S_BUCKET"], q.device) if q.is_cuda and tune else (tiles_block_n, 4, 2)
        if fixed is None:
            # as Triton's autotuner keys it: the key values and every tensor argument's dtype (decode graphs pass
            # int32 block tables, the eager mixed path int64: two tunings)
            tune_key = (bucket, rep, hd, parts, *(a.dtype for a in args if isinstance(a, torch.Tensor)))
            if skip and tune_key not in _TUNED_PLAIN:  # tune with every partition running, as measured (_TUNED_PLAIN)
                _decode_tuned[(s, kv_heads, parts)](*args, **{**meta, "SKIP_EMPTY": 0})
            _TUNED_PLAIN.add(tune_key)
            _decode_tuned[(s, kv_heads, parts)](*args, **meta)
            chunk_n = int(_decode_tuned.best_config.kwargs["BLOCK_N"]) if skip else 0
        else:
            bn, warps, stages = fixed
            _decode_kernel[(s, kv_heads, parts)](*args, **meta, BLOCK_N=bn, num_warps=warps, num_stages=stages)
            chunk_n = bn if skip else 0
    if parts > 1 and merge == 1:
        _merge_kernel[(s, heads)](pm, pl, pacc, out, context_lens, out.stride(0), out.stride(1), HEAD_DIM=hd,
                                  D_PAD=d_pad, NUM_PARTS=parts, num_warps=1, **launch_kw(),
                                  **({"CHUNK_N": chunk_n} if chunk_n else {}))  # fmt: skip
    return out


def paged_decode_reference(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
    context_lens: torch.Tensor, scale: float,
) -> torch.Tensor:  # fmt: skip
    """Pure-torch reference (fp32 math), one sequence at a time.

    Semantics: for sequence s, head h (KV head g = h // (heads // kv_heads)), context_len n:
        K[j] = k_cache[block_tables[s, j // bs], j % bs, g] for j < n   (V likewise)
        out[s, h] = softmax(q[s, h] . K[j] * scale) @ V   (0 when n == 0)
    """
    s, heads, hd = q.shape
    bs, kv_heads = k_cache.shape[1], k_cache.shape[2]
    rep = heads // kv_heads
    out = torch.zeros(s, heads, hd, dtype=torch.float32, device=q.device)
    for i in range(s):
        n = int(context_lens[i])
        if n == 0:
            continue
        j = torch.arange(n, device=q.device)
        blocks = block_tables[i].long()[j // bs]
        k = k_cache[blocks, j % bs].float().repeat_interleave(rep, dim=1)  # [n, heads, hd]
        v = v_cache[blocks, j % bs].float().repeat_interleave(rep, dim=1)
        att = torch.softmax(torch.einsum("hd,nhd->hn", q[i].float(), k) * scale, dim=-1)
        out[i] = torch.einsum("hn,nhd->hd", att, v)
    return out.to(q.dtype)
