"""Small-batch paged decode attention with a short per-warp chain (Triton): paged_decode's impl "row".

Same contract as paged_decode.paged_decode (one query token per sequence, paged KV cache [num_blocks, block_size,
kv_heads, head_dim], block tables, context lengths, grouped-query heads; a row with context 0 gets zeros).

Why (bench/results/decode-2026-11-30-s10-attn.md): at batch 1 the tiles kernel's busy warps each run ~1,700
dependent instructions (a 128-token tensor-core tile for one query row padded to 16) at ~1.4 warps a scheduler,
so the attention costs ~6 us a layer whatever the context. Here:

- a fixed, context-independent partitioning: program (part, KV head, sequence) takes the BLOCK_N-token tiles part,
  part + NUM_PARTS, ... (NUM_PARTS from the batch, not the context: row_parts, ~8 programs an SM), so at any
  context the busy tiles spread over all the SMs, each program walking few tiles;
- a small tile (16 tokens, one warp by default) and CUDA-core products for the query rows (q . K as an elementwise
  product + tl.sum, P.V likewise, fp32): no padding to 16 rows, a few hundred instructions a tile;
- where a tile lies inside one cache block (BLOCK_SIZE % BLOCK_N == 0) its block-table entry is one scalar load;
- under PDL (kernels.pdl) the lengths, the first tile's table entry and its K/V rows of earlier steps are loaded
  BEFORE griddepcontrol.wait (PREFETCH 1, as impl "split"); the row of position context_len - 1 (this step's token,
  written by rope_cache just before) is loaded after the wait by the one program whose first tile holds it. The
  loop keeps the next tile's K/V in flight while it computes the current one;
- a partition whose first tile starts past the context reads only the length (before the wait) and exits: no wait,
  no write (partition 0 always runs and waits, so the kernel completes after its predecessor);
- the partitions of a (sequence, KV head) meet inside the kernel: each busy one writes (max, sum, unnormalised
  output) and bumps an arrival counter (decode_fused.counters, left at 0); the last of the n_busy =
  min(NUM_PARTS, ceil(context / BLOCK_N)) to arrive merges. When one partition covers the context it writes the
  output itself (no partials, no counter). The merge (option merge 1, _merge_cg) loads every partial at once with
  ld.global.cg after the arrival atomic's acquire, all issued before any arithmetic in the PTX, instead of merge 0's
  chain of volatile loads (the maxima, then 8 partitions at a time). In the sm_90a build of the 7B batch-1 launch
  ptxas still puts the maxima's warp reduction between their load and the others' (two round trips; at batch 2 most
  loads go out first). Session 16 issued every load first (volatile loads, which ptxas keeps in order, outputs and sums
  before the maxima: bench/kernels/s16_b1_merge.py, no instruction between the loads in the SASS): the step did not
  change (batch 1 1.0000x, 4/8 rounds lower; batch 2 1.0015x; the kernel alone -0.03 us at batch 1, +0.05 at batch 2;
  bench/results/decode-2026-12-01-s16-b1.md), so merge 1 stays as it is. 7B int4 step, H200, alternating rounds
  (bench/results/decode-2026-12-01-s15-merge.md): batch 1 1.518 -> 1.480 ms (-38 us, 8/8 rounds), batch 2 -12.5 us
  (8/8); the kernel alone 7.87 -> 6.66 us (batch 1, 32 partitions).

Exceptions to kernels.pdl's rule list, as impl "split" and the tiles kernel's SKIP_EMPTY: the step metadata
(lengths, the first tile's block-table entry: the decode graph's staged buffer) and, with PREFETCH, the KV cache rows
of earlier steps are read before the wait (pinned by test_decode_row's offline PTX test; the GPU test
test_row_reads_the_new_token_after_the_pdl_wait clobbers the new slots before a PDL replay, with a control). Precondition, as in every engine decode step: nothing else a step writes lies in a decode row's context.

Rotary inside (row_rope_decode, ROPE 1: rope_cache + this kernel in one launch; model.llama_fast takes it where the
options say rope=1): the input is the fused projection output qkv (q | k | v) with cos / sin rows [S, D] (the
activation dtype, model.rope.cos_sin). Every program rotates its query rows itself (rope_cache's formula: each
product rounded to the activation dtype, then their sum; as in rope_cache, the sm_90 build FMA-contracts one product
per pair, not always the same one as rope_cache's build: rope(q), rope(k) agree with rope_cache's to ~1 ulp, the
attention output to ~3.5e-4 relative at 7B fp16 shapes). The cache is read only below position context_len - 1; the
one partition whose tiles hold that position (the owner: tile (ctx - 1) // BLOCK_N modulo NUM_PARTS) rotates the new
token's K from qkv, writes rope(k), v at slot_mapping[s] (-1: not written) and adds that token to its softmax from
registers. Precondition: slot_mapping[s] is the cache slot of position context_len[s] - 1 through block_tables[s]
(as in every engine decode step). Under PDL qkv, cos / sin and the slots are read after the wait, the cache write
comes after it, and nothing in the launch reads the slot it writes (the next reader is the next step's graph).

From the qkv GEMV's sums (row_rope_decode's `sums`, SUMS 1; the "+q" decode fusion, kernels.consumer_finish.gemv_sums):
qkv is the split-K GEMV's fp32 sums (it only added its partials: no arrival counter, no last program) and every read
of it rounds to the activation dtype first, fp16(sum), the value the GEMV's own finish would have stored. The sums are
not cleared here (many programs read each head's q): a later kernel of the layer does (fused_norm's `clear`).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import triton
import triton.language as tl

from .decode_fused import _rope_rows
from .pdl import gdc_late, gdc_start, gdc_wait


@triton.jit
def _rope_in(row_ptrs, d, d_rot, mask, cos, sin, dt_ptr, SUMS: tl.constexpr, rn=1.0):
    """decode_fused._rope_rows; SUMS: the row is fp32 sums, each value rounded to dt_ptr's dtype as it is loaded
    (SUMS 2: times the deferred norm's r, rn, first)."""
    if SUMS:
        dt = dt_ptr.dtype.element_ty
        x = tl.load(row_ptrs + d, mask=mask, other=0.0)
        partner = tl.load(row_ptrs + d_rot, mask=mask, other=0.0)
        if SUMS == 2:
            x = x * rn
            partner = partner * rn
        x = x.to(dt)
        partner = partner.to(dt).to(tl.float32)
        rot = tl.where(d < d_rot, -partner, partner)
        return ((x.to(tl.float32) * cos).to(dt).to(tl.float32) + (rot * sin).to(dt).to(tl.float32)).to(dt)
    else:
        return _rope_rows(row_ptrs, d, d_rot, mask, cos, sin)


@triton.jit
def _tile_addr(bt_row, t, ar, ctx, kvh, stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh,
               BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr):  # fmt: skip
    """Row offsets [BLOCK_N] of tile t's K and V rows (head kvh) and which tokens lie in the context."""
    offs = t * BLOCK_N + ar
    valid = offs < ctx
    if BLOCK_SIZE % BLOCK_N == 0:  # the tile lies in one cache block: one scalar table entry
        blk = tl.load(bt_row + (t * BLOCK_N) // BLOCK_SIZE, mask=t * BLOCK_N < ctx, other=0).to(tl.int64)
        within = (t * BLOCK_N) % BLOCK_SIZE + ar
        k_row = blk * stride_kb + kvh * stride_kh + within * stride_ks
        v_row = blk * stride_vb + kvh * stride_vh + within * stride_vs
    else:
        blk = tl.load(bt_row + offs // BLOCK_SIZE, mask=valid, other=0).to(tl.int64)
        within = offs % BLOCK_SIZE
        k_row = blk * stride_kb + kvh * stride_kh + within * stride_ks
        v_row = blk * stride_vb + kvh * stride_vh + within * stride_vs
    return k_row, v_row, valid


@triton.jit
def _tile_1(q, k, v, valid, m_i, l_i, acc):
    """One query row (q [D] fp32, pre-scaled): online softmax over the tile's valid tokens (k, v [BLOCK_N, D])."""
    scores = tl.sum(k.to(tl.float32) * q[None, :], axis=1)  # [BLOCK_N]
    scores = tl.where(valid, scores, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(scores, axis=0))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # no valid token so far: p = 0
    alpha = tl.exp(m_i - m_safe)
    p = tl.exp(scores - m_safe)
    l_i = l_i * alpha + tl.sum(p, axis=0)
    acc = acc * alpha + tl.sum(p[:, None] * v.to(tl.float32), axis=0)
    return m_new, l_i, acc


@triton.jit
def _tile_n(q, k, v, valid, m_i, l_i, acc):
    """Grouped query rows (q [REP_PAD, D] fp32, pre-scaled): as _tile_1 per row."""
    scores = tl.sum(q[:, None, :] * k.to(tl.float32)[None, :, :], axis=2)  # [REP_PAD, BLOCK_N]
    scores = tl.where(valid[None, :], scores, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(scores, axis=1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp(m_i - m_safe)
    p = tl.exp(scores - m_safe[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + tl.sum(p[:, :, None] * v.to(tl.float32)[None, :, :], axis=1)
    return m_new, l_i, acc


@triton.jit
def _tile(q, k, v, valid, m_i, l_i, acc, REP_PAD: tl.constexpr):
    if REP_PAD == 1:
        return _tile_1(q, k, v, valid, m_i, l_i, acc)
    else:
        return _tile_n(q, k, v, valid, m_i, l_i, acc)


@triton.jit
def _new_token(q, k_new, v_new, m_i, l_i, acc, REP_PAD: tl.constexpr):
    """ROPE: the new token (k_new, v_new [D] in the cache dtype, from registers) into the online softmax."""
    if REP_PAD == 1:
        s_new = tl.sum(q * k_new.to(tl.float32), axis=0)
        m_new = tl.maximum(m_i, s_new)
        p = tl.exp(s_new - m_new)
        alpha = tl.exp(m_i - m_new)
        return m_new, l_i * alpha + p, acc * alpha + p * v_new.to(tl.float32)
    else:
        s_new = tl.sum(q * k_new.to(tl.float32)[None, :], axis=1)  # [REP_PAD]
        m_new = tl.maximum(m_i, s_new)
        p = tl.exp(s_new - m_new)
        alpha = tl.exp(m_i - m_new)
        return m_new, l_i * alpha + p, acc * alpha[:, None] + p[:, None] * v_new.to(tl.float32)[None, :]


@triton.jit
def _row_kernel(
    q_ptr, k_ptr, v_ptr, bt_ptr, ctx_ptr, out_ptr, pm_ptr, pl_ptr, pacc_ptr, cnt_ptr, cos_ptr, sin_ptr, slot_ptr,
    scale, stride_qt, stride_qh, stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh, stride_bt,
    stride_ot, stride_oh, stride_cs, rs_ptr, rs_k, rs_eps,
    HEADS: tl.constexpr, KV_HEADS: tl.constexpr, REP: tl.constexpr, REP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
    D_PAD: tl.constexpr, BLOCK_SIZE: tl.constexpr, NUM_PARTS: tl.constexpr, BLOCK_N: tl.constexpr,
    MERGE_CHUNK: tl.constexpr, PREFETCH: tl.constexpr = 1, LOOKAHEAD: tl.constexpr = 1, ROPE: tl.constexpr = 0,
    USE_GDC: tl.constexpr = 0, SUMS: tl.constexpr = 0, MERGE: tl.constexpr = 0,
):  # fmt: skip
    part = tl.program_id(0)
    kvh = tl.program_id(1)
    s = tl.program_id(2)
    gdc_start(USE_GDC)
    ctx = tl.load(ctx_ptr + s)  # the staged step metadata: read before the wait (module docstring)
    n_tiles = tl.cdiv(ctx, BLOCK_N)
    if (part < n_tiles) | (part == 0):  # a partition past the context exits here: no wait, no write
        ar = tl.arange(0, BLOCK_N)
        d = tl.arange(0, D_PAD)
        mask_d = d < HEAD_DIM
        bt_row = bt_ptr + s * stride_bt
        kv_end = ctx - ROPE  # ROPE: the new token's K/V come from qkv (registers), its cache slot is never read
        k_row, v_row, valid = _tile_addr(bt_row, part, ar, kv_end, kvh, stride_kb, stride_ks, stride_kh, stride_vb,
                                         stride_vs, stride_vh, BLOCK_SIZE, BLOCK_N)  # fmt: skip
        if PREFETCH:  # the first tile's rows of earlier steps before the wait; this step's token after it
            if PREFETCH == 1:
                old = (valid & (part * BLOCK_N + ar < ctx - 1))[:, None] & mask_d[None, :]
            else:  # 2: the new token too (unsafe: the tests' control)
                old = valid[:, None] & mask_d[None, :]
            k = tl.load(k_ptr + k_row[:, None] + d[None, :], mask=old, other=0.0)
            v = tl.load(v_ptr + v_row[:, None] + d[None, :], mask=old, other=0.0)
            gdc_wait(USE_GDC)
            if PREFETCH == 1:
                if ROPE == 0:  # (ROPE: the new token comes from registers)
                    if (part * BLOCK_N < ctx) & (ctx - 1 < part * BLOCK_N + BLOCK_N):  # the new token is in this tile
                        new = (part * BLOCK_N + ar == ctx - 1)[:, None] & mask_d[None, :]
                        k = tl.where(new, tl.load(k_ptr + k_row[:, None] + d[None, :], mask=new, other=0.0), k)
                        v = tl.where(new, tl.load(v_ptr + v_row[:, None] + d[None, :], mask=new, other=0.0), v)
        else:
            gdc_wait(USE_GDC)
            kv_mask = valid[:, None] & mask_d[None, :]
            k = tl.load(k_ptr + k_row[:, None] + d[None, :], mask=kv_mask, other=0.0)
            v = tl.load(v_ptr + v_row[:, None] + d[None, :], mask=kv_mask, other=0.0)
        if SUMS == 2:  # the deferred norm's r of this row (its slot is complete after the wait)
            rn = 1.0 / tl.sqrt(tl.load(rs_ptr + s) / rs_k + rs_eps)
        else:
            rn = 1.0
        if ROPE:  # q rotated here (rope_cache's formula); cos / sin rows [D] of this sequence
            d_rot = tl.where(d < HEAD_DIM // 2, d + HEAD_DIM // 2, d - HEAD_DIM // 2)  # rotate_half's partner
            cos = tl.load(cos_ptr + s * stride_cs + d, mask=mask_d, other=0.0).to(tl.float32)
            sin = tl.load(sin_ptr + s * stride_cs + d, mask=mask_d, other=0.0).to(tl.float32)
            # the partition whose tiles hold position ctx - 1 owns the new token: rope(k), v from qkv, the cache write
            owner = (ctx > 0) & (part == ((ctx - 1) // BLOCK_N) % NUM_PARTS)
            new_row = q_ptr + s * stride_qt + (HEADS + kvh) * HEAD_DIM  # this KV head's k columns of qkv
            k_new = _rope_in(new_row, d, d_rot, mask_d & owner, cos, sin, out_ptr, SUMS, rn).to(k_ptr.dtype.element_ty)
            v_new = tl.load(new_row + KV_HEADS * HEAD_DIM + d, mask=mask_d & owner, other=0.0)
            if SUMS == 2:
                v_new = v_new * rn
            if SUMS:
                v_new = v_new.to(out_ptr.dtype.element_ty)
            v_new = v_new.to(v_ptr.dtype.element_ty)
            slot = tl.load(slot_ptr + s, mask=owner, other=-1).to(tl.int64)
            if slot >= 0:  # the owner only (the others read -1)
                blk_new = slot // BLOCK_SIZE
                within_new = slot % BLOCK_SIZE
                tl.store(k_ptr + blk_new * stride_kb + within_new * stride_ks + kvh * stride_kh + d, k_new, mask=mask_d)
                tl.store(v_ptr + blk_new * stride_vb + within_new * stride_vs + kvh * stride_vh + d, v_new, mask=mask_d)
        if REP_PAD == 1:
            if ROPE:
                q = _rope_in(q_ptr + s * stride_qt + kvh * stride_qh, d, d_rot, mask_d, cos, sin, out_ptr, SUMS, rn)
                q = q.to(tl.float32) * scale
            else:
                q = tl.load(q_ptr + s * stride_qt + kvh * stride_qh + d, mask=mask_d, other=0.0).to(tl.float32)
                q = q * scale
            m_i = tl.max(tl.full((1,), float("-inf"), tl.float32), axis=0)
            l_i = tl.sum(tl.zeros((1,), tl.float32), axis=0)
            acc = tl.zeros((D_PAD,), tl.float32)
        else:
            r = tl.arange(0, REP_PAD)
            heads = kvh * REP + r
            q_mask = (r < REP)[:, None] & mask_d[None, :]
            if ROPE:
                q = _rope_in(q_ptr + s * stride_qt + heads[:, None] * stride_qh, d[None, :], d_rot[None, :], q_mask,
                             cos[None, :], sin[None, :], out_ptr, SUMS, rn).to(tl.float32) * scale  # fmt: skip
            else:
                q = tl.load(q_ptr + s * stride_qt + heads[:, None] * stride_qh + d[None, :], mask=q_mask,
                            other=0.0).to(tl.float32) * scale  # fmt: skip
            m_i = tl.full((REP_PAD,), float("-inf"), tl.float32)
            l_i = tl.zeros((REP_PAD,), tl.float32)
            acc = tl.zeros((REP_PAD, D_PAD), tl.float32)
        if LOOKAHEAD:  # the next tile's K/V in flight while this one computes
            for t in range(part + NUM_PARTS, n_tiles, NUM_PARTS):
                k_row, v_row, valid_n = _tile_addr(bt_row, t, ar, kv_end, kvh, stride_kb, stride_ks, stride_kh,
                                                   stride_vb, stride_vs, stride_vh, BLOCK_SIZE, BLOCK_N)  # fmt: skip
                kv_mask = valid_n[:, None] & mask_d[None, :]
                k_n = tl.load(k_ptr + k_row[:, None] + d[None, :], mask=kv_mask, other=0.0)
                v_n = tl.load(v_ptr + v_row[:, None] + d[None, :], mask=kv_mask, other=0.0)
                m_i, l_i, acc = _tile(q, k, v, valid, m_i, l_i, acc, REP_PAD)
                k = k_n
                v = v_n
                valid = valid_n
            m_i, l_i, acc = _tile(q, k, v, valid, m_i, l_i, acc, REP_PAD)
        else:  # fewer registers: each later tile loaded, then used
            m_i, l_i, acc = _tile(q, k, v, valid, m_i, l_i, acc, REP_PAD)
            for t in range(part + NUM_PARTS, n_tiles, NUM_PARTS):
                k_row, v_row, valid = _tile_addr(bt_row, t, ar, kv_end, kvh, stride_kb, stride_ks, stride_kh,
                                                 stride_vb, stride_vs, stride_vh, BLOCK_SIZE, BLOCK_N)  # fmt: skip
                kv_mask = valid[:, None] & mask_d[None, :]
                k = tl.load(k_ptr + k_row[:, None] + d[None, :], mask=kv_mask, other=0.0)
                v = tl.load(v_ptr + v_row[:, None] + d[None, :], mask=kv_mask, other=0.0)
                m_i, l_i, acc = _tile(q, k, v, valid, m_i, l_i, acc, REP_PAD)
        if ROPE:
            if owner:
                m_i, l_i, acc = _new_token(q, k_new, v_new, m_i, l_i, acc, REP_PAD)
        gdc_late(USE_GDC)
        _finish(out_ptr, pm_ptr, pl_ptr, pacc_ptr, cnt_ptr, m_i, l_i, acc, s, kvh, part, d, mask_d,
                tl.minimum(n_tiles, NUM_PARTS), stride_ot, stride_oh, HEADS, KV_HEADS, REP, REP_PAD, D_PAD,
                NUM_PARTS, MERGE_CHUNK, MERGE)  # fmt: skip


@triton.jit
def _finish(out_ptr, pm_ptr, pl_ptr, pacc_ptr, cnt_ptr, m_i, l_i, acc, s, kvh, part, d, mask_d, n_busy,
            stride_ot, stride_oh, HEADS: tl.constexpr, KV_HEADS: tl.constexpr, REP: tl.constexpr,
            REP_PAD: tl.constexpr, D_PAD: tl.constexpr, NUM_PARTS: tl.constexpr,
            MERGE_CHUNK: tl.constexpr, MERGE: tl.constexpr = 0):  # fmt: skip
    """The output when one partition covers the context; else the partial, and the last busy one to arrive merges
    (MERGE 0: volatile loads, the maxima first, then MERGE_CHUNK partitions at a time; 1: _merge_cg)."""
    if REP_PAD == 1:
        rows = s * HEADS + kvh
        o_ptrs = out_ptr + s * stride_ot + kvh * stride_oh + d
        o_mask = mask_d
        p_mask = True
        part_rows = rows * NUM_PARTS + part
        pacc_ptrs = pacc_ptr + part_rows * D_PAD + d
        l_div = tl.where(l_i > 0, l_i, 1.0)
    else:
        r = tl.arange(0, REP_PAD)
        heads = kvh * REP + r
        rows = s * HEADS + heads
        o_ptrs = out_ptr + s * stride_ot + heads[:, None] * stride_oh + d[None, :]
        o_mask = (r < REP)[:, None] & mask_d[None, :]
        p_mask = r < REP
        part_rows = rows * NUM_PARTS + part
        pacc_ptrs = pacc_ptr + part_rows[:, None] * D_PAD + d[None, :]
        l_div = tl.where(l_i > 0, l_i, 1.0)[:, None]
    if n_busy <= 1:  # one partition covers the context (or none: zeros)
        tl.store(o_ptrs, (acc / l_div).to(out_ptr.dtype.element_ty), mask=o_mask)
    else:
        tl.store(pm_ptr + part_rows, m_i, mask=p_mask)
        tl.store(pl_ptr + part_rows, l_i, mask=p_mask)
        tl.store(pacc_ptrs, acc, mask=o_mask)
        tl.debug_barrier()  # every thread's partial is stored before the (release) arrival below
        arrived = tl.atomic_add(cnt_ptr + s * KV_HEADS + kvh, 1, sem="acq_rel")
        if MERGE == 1:
            if arrived == n_busy - 1:  # the last busy partition to arrive merges
                _merge_cg(out_ptr, pm_ptr, pl_ptr, pacc_ptr, s, kvh, d, mask_d, n_busy, stride_ot, stride_oh, HEADS,
                          REP, D_PAD, NUM_PARTS, MERGE_CHUNK)  # fmt: skip
                tl.store(cnt_ptr + s * KV_HEADS + kvh, 0)  # self-cleaning: the next launch finds 0
        elif arrived == n_busy - 1:  # the last busy partition to arrive merges (volatile loads: straight from L2)
            parts = tl.arange(0, NUM_PARTS)
            pc = tl.arange(0, MERGE_CHUNK)
            for rr in tl.static_range(REP):
                h = kvh * REP + rr
                base = (s * HEADS + h) * NUM_PARTS
                m = tl.load(pm_ptr + base + parts, mask=parts < n_busy, other=float("-inf"), volatile=True)
                m_max = tl.max(m, axis=0)
                m_max = tl.where(m_max == float("-inf"), 0.0, m_max)
                total = tl.zeros((1,), tl.float32)
                o = tl.zeros((D_PAD,), tl.float32)
                for c0 in tl.static_range(0, NUM_PARTS, MERGE_CHUNK):  # a few partitions at a time (registers)
                    wrote = c0 + pc < n_busy
                    mc = tl.load(pm_ptr + base + c0 + pc, mask=wrote, other=float("-inf"), volatile=True)
                    w = tl.exp(mc - m_max)  # 0 for the partitions that did not write
                    total += tl.sum(tl.load(pl_ptr + base + c0 + pc, mask=wrote, other=0.0, volatile=True) * w,
                                    axis=0)  # fmt: skip
                    pacc = tl.load(pacc_ptr + (base + c0 + pc)[:, None] * D_PAD + d[None, :], mask=wrote[:, None],
                                   other=0.0, volatile=True)  # fmt: skip
                    o += tl.sum(pacc * w[:, None], axis=0)
                tot = tl.sum(total, axis=0)
                o = o / tl.where(tot > 0, tot, 1.0)
                tl.store(out_ptr + s * stride_ot + h * stride_oh + d, o.to(out_ptr.dtype.element_ty), mask=mask_d)
            tl.store(cnt_ptr + s * KV_HEADS + kvh, 0)  # self-cleaning: the next launch finds 0


@triton.jit
def _merge_cg(out_ptr, pm_ptr, pl_ptr, pacc_ptr, s, kvh, d, mask_d, n_busy, stride_ot, stride_oh,
              HEADS: tl.constexpr, REP: tl.constexpr, D_PAD: tl.constexpr, NUM_PARTS: tl.constexpr,
              MERGE_CHUNK: tl.constexpr):  # fmt: skip
    """The last arriver's merge (MERGE 1) of the n_busy partials of each of its REP heads: every load issued at once.
    The maxima, sums and (MERGE_CHUNK == NUM_PARTS, the launch's pick when the partials fit ~128 registers a thread) all
    the partial outputs are loaded together with non-volatile ld.global.cg (L2, never a stale L1 line), then combined.
    Visibility: every busy partition stored its partial, passed a CTA barrier and then its gpu-scope release
    (the acq_rel arrival atomic); this program's acquire (the same atomic, which returned n_busy - 1: every release is
    before it in the counter's order) makes them visible to its later loads, and the loads sit behind the branch on
    the atomic's result (they cannot issue before it returns). More chunks (registers): the later chunks' maxima are
    reloaded (.cg) rather than sliced out of the first load. Same sums as MERGE 0 up to fp32 reassociation."""
    parts = tl.arange(0, NUM_PARTS)
    wrote = parts < n_busy
    pc = tl.arange(0, MERGE_CHUNK)
    for rr in tl.static_range(REP):
        h = kvh * REP + rr
        base = (s * HEADS + h) * NUM_PARTS
        m = tl.load(pm_ptr + base + parts, mask=wrote, other=float("-inf"), cache_modifier=".cg")
        lp = tl.load(pl_ptr + base + parts, mask=wrote, other=0.0, cache_modifier=".cg")
        pacc = tl.load(pacc_ptr + (base + pc)[:, None] * D_PAD + d[None, :], mask=(pc < n_busy)[:, None], other=0.0,
                       cache_modifier=".cg")  # fmt: skip
        m_max = tl.max(m, axis=0)
        m_max = tl.where(m_max == float("-inf"), 0.0, m_max)
        w = tl.exp(m - m_max)  # 0 for the partitions that did not write
        tot = tl.sum(lp * w, axis=0)
        if MERGE_CHUNK == NUM_PARTS:
            o = tl.sum(pacc * w[:, None], axis=0)
        else:
            o = tl.sum(pacc * tl.exp(tl.load(pm_ptr + base + pc, mask=pc < n_busy, other=float("-inf"),
                                             cache_modifier=".cg") - m_max)[:, None], axis=0)  # fmt: skip
            for c0 in tl.static_range(MERGE_CHUNK, NUM_PARTS, MERGE_CHUNK):
                wc = c0 + pc < n_busy
                mc = tl.load(pm_ptr + base + c0 + pc, mask=wc, other=float("-inf"), cache_modifier=".cg")
                pc_acc = tl.load(pacc_ptr + (base + c0 + pc)[:, None] * D_PAD + d[None, :], mask=wc[:, None],
                                 other=0.0, cache_modifier=".cg")  # fmt: skip
                o += tl.sum(pc_acc * tl.exp(mc - m_max)[:, None], axis=0)
        o = o / tl.where(tot > 0, tot, 1.0)
        tl.store(out_ptr + s * stride_ot + h * stride_oh + d, o.to(out_ptr.dtype.element_ty), mask=mask_d)


# block_n: tokens a tile; num_warps a program; per_sm: programs an SM that row_parts aims at (the partition count,
# a power of two); parts: a fixed partition count instead (0: row_parts); prefetch: the first tile before the PDL wait;
# lookahead: the next tile's K/V in flight in the loop; maxnreg: a register cap a thread (0: none; ptxas's choice);
# rope: model.llama_fast runs row_rope_decode (rotary and the new token's K/V write inside this kernel) instead of
# rope_cache + paged_decode where "row" is paged_decode's default (paged_decode.row_rope_for; 0: the two launches);
# merge: the last arriver's merge of the partitions (1, measured faster: _merge_cg, every partial loaded at once with
# .cg loads; 0: the earlier volatile loads, maxima first, 8 partitions a chunk: kept for A/B benchmarks)
ROW_DEFAULTS = dict(block_n=16, num_warps=1, per_sm=8, parts=0, prefetch=1, lookahead=1, maxnreg=0, rope=0, merge=1)


def _pow2(v: int, lo: int, hi: int) -> bool:
    return lo <= v <= hi and v & (v - 1) == 0


# what INLAID_DECODE_ROW_OPTS may set (tests reach the other values, e.g. prefetch=2's PDL-order control, by keyword)
ROW_ENV_CHECKS: dict[str, tuple[str, Callable[[int], bool]]] = {
    "block_n": ("a power of two in 16..128", lambda v: _pow2(v, 16, 128)),
    "num_warps": ("a power of two in 1..8", lambda v: _pow2(v, 1, 8)),
    "per_sm": ("in 1..64", lambda v: 1 <= v <= 64),
    "parts": ("0 or a power of two up to 64", lambda v: v == 0 or _pow2(v, 1, 64)),
    "prefetch": ("0 or 1", lambda v: v in (0, 1)),
    "lookahead": ("0 or 1", lambda v: v in (0, 1)),
    "maxnreg": ("0 or 24..255", lambda v: v == 0 or 24 <= v <= 255),
    "rope": ("0 or 1", lambda v: v in (0, 1)),
    "merge": ("0 or 1", lambda v: v in (0, 1)),
}


def row_env() -> dict[str, int]:
    """INLAID_DECODE_ROW_OPTS, e.g. "block_n=32,num_warps=2,per_sm=4": overrides of ROW_DEFAULTS (benchmarks); read
    when a call (or a graph capture) runs. A key or value outside ROW_ENV_CHECKS is a ValueError naming it."""
    raw = os.environ.get("INLAID_DECODE_ROW_OPTS", "").strip()
    out: dict[str, int] = {}
    for item in filter(None, (x.strip() for x in raw.split(","))):
        key, _, value = (p.strip() for p in item.partition("="))
        if key not in ROW_DEFAULTS or not value.isdigit():
            raise ValueError(f"INLAID_DECODE_ROW_OPTS: {item!r} is not one of {tuple(ROW_DEFAULTS)} = integer")
        what, ok = ROW_ENV_CHECKS[key]
        if not ok(int(value)):
            raise ValueError(f"INLAID_DECODE_ROW_OPTS: {key} must be {what}, got {value}")
        out[key] = int(value)
    return out


def row_options(base: dict[str, int] | None = None, **opts: int) -> dict[str, int]:
    """ROW_DEFAULTS, then `base` (paged_decode's ROW_TABLE entry), then the env INLAID_DECODE_ROW_OPTS, then `opts`
    (tests, benchmarks)."""
    if set(opts) - set(ROW_DEFAULTS):
        raise ValueError(f"row_decode: unknown options {sorted(set(opts) - set(ROW_DEFAULTS))}")
    return {**ROW_DEFAULTS, **(base or {}), **row_env(), **opts}


def row_parts(num_seqs: int, kv_heads: int, sms: int, per_sm: int) -> int:
    """Partitions per (sequence, KV head): the largest power of two with at most per_sm programs an SM, 1..64
    (H200, 132 SMs, 32 KV heads, per_sm 8: 32 / 16 / 8 at batch 1 / 2 / 4)."""
    fit = max(1, per_sm * sms // max(1, num_seqs * kv_heads))
    return min(64, 1 << (fit.bit_length() - 1))


def _launch(
    q: torch.Tensor, stride_qt: int, stride_qh: int, heads: int, k_cache: torch.Tensor, v_cache: torch.Tensor,
    block_tables: torch.Tensor, context_lens: torch.Tensor, scale: float, out: torch.Tensor, num_parts: int | None,
    opt: dict[str, int], rope: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None, sums: bool = False,
    rnorm: tuple[torch.Tensor, int, float] | None = None,
) -> torch.Tensor:  # fmt: skip
    """One _row_kernel launch: q rows [S] with heads at stride_qh (rope: the qkv rows, q heads first), -> out."""
    from .decode_fused import counters
    from .paged_decode import workspace
    from .pdl import launch_kw

    s, hd = out.shape[0], k_cache.shape[3]
    kv_heads = k_cache.shape[2]
    rep = heads // kv_heads
    if num_parts is None:
        num_parts = opt["parts"] or (
            row_parts(s, kv_heads, torch.cuda.get_device_properties(q.device).multi_processor_count, opt["per_sm"])
            if q.is_cuda else 1)  # fmt: skip
    block_n = int(opt["block_n"])
    if num_parts < 1 or num_parts & (num_parts - 1) or block_n < 1 or block_n & (block_n - 1):
        raise ValueError(f"row_decode: num_parts {num_parts} and block_n {block_n} must be powers of two")
    d_pad = triton.next_power_of_2(hd)
    merge = int(opt["merge"])
    if merge not in (0, 1):
        raise ValueError(f"row_decode: merge must be 0 or 1, got {merge}")
    # merge 1: all partials at once where they fit ~128 fp32 registers a thread (7B, one warp: 32 x 128), else chunks
    chunk = min(num_parts, max(1, 4096 * int(opt["num_warps"]) // d_pad)) if merge else min(num_parts, 8)
    if num_parts > 1:
        pm, pl, pacc = workspace(s * heads * num_parts, d_pad, q.device)
    else:
        pm = pl = pacc = out
    cnt = counters(q.device, s * kv_heads)
    cos, sin, slots = rope if rope is not None else (cnt, cnt, cnt)
    rs = (rnorm[0], int(rnorm[1]), float(rnorm[2])) if rnorm is not None else (cnt, 1, 0.0)  # (slot, K, eps)
    _row_kernel[(num_parts, kv_heads, s)](
        q, k_cache, v_cache, block_tables, context_lens, out, pm, pl, pacc, cnt, cos, sin, slots, scale,
        stride_qt, stride_qh, k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), v_cache.stride(0),
        v_cache.stride(1), v_cache.stride(2), block_tables.stride(0), out.stride(0), out.stride(1),
        cos.stride(0) if rope is not None else 0, *rs,
        HEADS=heads, KV_HEADS=kv_heads, REP=rep, REP_PAD=triton.next_power_of_2(rep), HEAD_DIM=hd, D_PAD=d_pad,
        BLOCK_SIZE=k_cache.shape[1], NUM_PARTS=num_parts, BLOCK_N=block_n, MERGE_CHUNK=chunk,
        PREFETCH=int(opt["prefetch"]), LOOKAHEAD=int(opt["lookahead"]), ROPE=int(rope is not None),
        SUMS=2 if rnorm is not None else int(sums),
        MERGE=merge,
        num_warps=int(opt["num_warps"]), num_stages=1, **({"maxnreg": int(opt["maxnreg"])} if opt["maxnreg"] else {}),
        **launch_kw(),
    )  # fmt: skip
    return out


def row_decode(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
    context_lens: torch.Tensor, scale: float, out: torch.Tensor, num_parts: int | None = None,
    base: dict[str, int] | None = None, **opts: int,
) -> torch.Tensor:  # fmt: skip
    """paged_decode's impl "row" (checked shapes come from paged_decode): q [S, heads, D] -> out. num_parts: a
    power of two (default: row_parts on CUDA, 1 on the CPU). Options: row_options(base, **opts) (option rope is
    the caller's: model.llama_fast)."""
    opt = row_options(base, **opts)
    return _launch(q, q.stride(0), q.stride(1), q.shape[1], k_cache, v_cache, block_tables, context_lens, scale, out,
                   num_parts, opt, None)  # fmt: skip


def row_rope_decode(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, slot_mapping: torch.Tensor, k_cache: torch.Tensor,
    v_cache: torch.Tensor, block_tables: torch.Tensor, context_lens: torch.Tensor, scale: float, heads: int,
    num_parts: int | None = None, base: dict[str, int] | None = None, sums: bool = False,
    rnorm: tuple[torch.Tensor, int, float] | None = None, **opts: int,
) -> torch.Tensor:  # fmt: skip
    """rope_cache.rope_and_cache + impl "row" in one launch (module docstring, "Rotary inside"): qkv [S, (heads +
    2 * kv_heads) * D] (q | k | v), cos / sin [S, D] (model.rope.cos_sin, the activation dtype), slot_mapping [S];
    returns the attention output [S, heads, D] and writes rope(k), v of each row at its slot (-1: not written).
    sums: qkv is a GEMV's fp32 sums (row-major), read as fp16 / bf16(sum) of cos's dtype (module docstring).
    rnorm (slot, norm_k, eps; with sums; the "+dn2" fusion, kernels.deferred_norm): the sums carry no RMSNorm scale
    yet: every value is read as fp16(sum * r), r = rsqrt(slot[s] / norm_k + eps) of its row (slot fp32 [>= S])."""
    s = qkv.shape[0]
    kv_heads, hd = k_cache.shape[2], k_cache.shape[3]
    if (qkv.shape[1] != (heads + 2 * kv_heads) * hd or qkv.stride(1) != 1 or heads % kv_heads or hd % 2
            or cos.shape != (s, hd) or sin.shape != (s, hd) or cos.stride(1) != 1 or sin.stride() != cos.stride()
            or slot_mapping.shape != (s,) or block_tables.shape[0] != s or context_lens.shape != (s,)):  # fmt: skip
        raise ValueError(f"row_rope_decode: qkv {tuple(qkv.shape)}, cos {tuple(cos.shape)}, slots "
                         f"{tuple(slot_mapping.shape)}, tables {tuple(block_tables.shape)}, {heads} heads over cache "
                         f"{tuple(k_cache.shape)} do not match")  # fmt: skip
    if not (k_cache.is_contiguous() and v_cache.is_contiguous() and block_tables.stride(1) == 1):
        raise ValueError("row_rope_decode needs contiguous caches and block-table rows")
    if rnorm is not None and (not sums or rnorm[0].dtype != torch.float32 or not rnorm[0].is_contiguous()
                              or rnorm[0].numel() < s or int(rnorm[1]) <= 0):  # fmt: skip
        raise ValueError("row_rope_decode: rnorm needs sums and a contiguous fp32 slot of at least S values")
    if sums and (qkv.dtype != torch.float32 or cos.dtype not in (torch.float16, torch.bfloat16)):
        raise ValueError(f"row_rope_decode: sums are fp32 read as fp16 / bf16, got {qkv.dtype} with cos {cos.dtype}")
    out = torch.empty(s, heads, hd, dtype=cos.dtype if sums else qkv.dtype, device=qkv.device)
    if s == 0:
        return out
    return _launch(qkv, qkv.stride(0), hd, heads, k_cache, v_cache, block_tables, context_lens, scale, out,
                   num_parts, row_options(base, **opts), (cos, sin, slot_mapping), sums, rnorm)  # fmt: skip


def row_rope_reference(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, slot_mapping: torch.Tensor, k_cache: torch.Tensor,
    v_cache: torch.Tensor, block_tables: torch.Tensor, context_lens: torch.Tensor, scale: float, heads: int,
) -> torch.Tensor:  # fmt: skip
    """Pure torch, row_rope_decode's contract under its precondition (slot_mapping[s] is the slot of position
    context_lens[s] - 1, or -1 on a row of context 0): rope_cache's reference (writes the caches), then paged
    decode's reference."""
    from .paged_decode import paged_decode_reference
    from .rope_cache import rope_and_cache_reference

    q = rope_and_cache_reference(qkv, cos, sin, slot_mapping, k_cache, v_cache, heads)
    return paged_decode_reference(q, k_cache, v_cache, block_tables, context_lens, scale)
