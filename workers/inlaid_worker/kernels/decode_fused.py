"""Paged decode attention with the split merge folded in, optionally with rotary and the KV-cache write folded in
too (one Triton launch per layer for a pure decode step), plus the torch reference of the fused form.

decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale)
    Same contract as paged_decode.paged_decode. The `num_parts` partitions of one (sequence, KV head) meet
    inside the kernel: each program writes its partial (max, sum, unnormalised output), bumps an arrival
    counter, and the last to arrive merges all partials and writes the output (no second launch). The
    counters are left at 0 again by the merging program (no memset launch, CUDA-graph safe).

rope_decode_attention(qkv, positions, inv_freq, slot_mapping, k_cache, v_cache, block_tables, context_lens,
                      scale, heads)
    = rope_cache.rope_and_cache + paged_decode in that one launch. qkv [S, (heads + 2*kv_heads) * D] is the
    fused projection output (q | k | v). Each program rotates its query heads itself (cos/sin from positions
    and inv_freq exactly as model.rope.cos_sin computes them: fp32 angle, rounded to the activation dtype);
    the program whose partition holds position context_lens[s]-1 writes rope(k), v of the new token into the
    caches at slot_mapping[s] and attends to that token from registers (its slot is not read back in the
    launch that writes it). Precondition, as in every engine decode step: slot_mapping[s] is the cache slot
    of position context_lens[s]-1 through block_tables[s]; a row with slot -1 writes nothing and reads that
    position from the cache. A row with context 0 (CUDA-graph padding) gets zeros.

PDL (kernels.pdl): the kernel waits (griddepcontrol.wait) before its first load, as everything it reads comes from
earlier kernels or the step's metadata; dependents may launch at its start (mode 1).

vec_mha (both): with one query head per KV head (Llama-2-7B), score and P.V as CUDA-core products over one
query row instead of tensor-core tiles padded to 16 rows (the padded tiles take 160-255 registers a thread and
spill at BLOCK_N >= 64, ptxas for sm_90; see bench/results/decode-2026-11-29-fusion.md). Grouped heads
always use the tiles.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .pdl import gdc_enter, launch_kw
from .quant_common import cached_buffer


@triton.jit
def _rope_rows(row_ptrs, d, d_rot, mask, cos, sin):
    """rope(x) of rows x (pointers to element d of each row), rounded as rope_cache does (each product in the
    activation dtype, then their sum): x * cos + rotate_half(x) * sin."""
    x = tl.load(row_ptrs + d, mask=mask, other=0.0)
    partner = tl.load(row_ptrs + d_rot, mask=mask, other=0.0).to(tl.float32)
    dt = x.dtype
    rot = tl.where(d < d_rot, -partner, partner)  # d < half: -x[d + half]; else x[d - half]
    return ((x.to(tl.float32) * cos).to(dt).to(tl.float32) + (rot * sin).to(dt).to(tl.float32)).to(dt)


@triton.jit
def _fused_decode_kernel(
    q_ptr, k_ptr, v_ptr, bt_ptr, ctx_ptr, out_ptr, pm_ptr, pl_ptr, pacc_ptr, cnt_ptr, pos_ptr, invf_ptr, slot_ptr,
    scale, stride_qt, stride_qh, stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh, stride_bt,
    stride_ot, stride_oh,
    HEADS: tl.constexpr, KV_HEADS: tl.constexpr, REP: tl.constexpr, REP_PAD: tl.constexpr,
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, S_BUCKET, BLOCK_SIZE: tl.constexpr, NUM_PARTS: tl.constexpr,
    ROPE: tl.constexpr, DOT: tl.constexpr, IEEE: tl.constexpr, BLOCK_N: tl.constexpr, USE_GDC: tl.constexpr = 0,
):  # fmt: skip
    gdc_enter(USE_GDC)  # q/qkv, the cache, tables, lengths, positions, slots come from earlier kernels (kernels.pdl)
    s = tl.program_id(0)
    kvh = tl.program_id(1)
    part = tl.program_id(2)
    ctx = tl.load(ctx_ptr + s)
    r = tl.arange(0, REP_PAD)
    d = tl.arange(0, D_PAD)
    mask_h = r < REP
    mask_d = d < HEAD_DIM
    heads = kvh * REP + r
    q_rows = q_ptr + s * stride_qt + heads[:, None] * stride_qh
    q_mask = mask_h[:, None] & mask_d[None, :]
    chunk = tl.cdiv(tl.cdiv(ctx, NUM_PARTS), BLOCK_N) * BLOCK_N
    start = part * chunk
    end = tl.minimum(start + chunk, ctx)
    cache_end = end
    if ROPE:  # q rotated here; the new token's K/V from qkv (issued before the cache loads: their latency overlaps)
        half: tl.constexpr = HEAD_DIM // 2
        d_rot = tl.where(d < half, d + half, d - half)
        angle = tl.load(pos_ptr + s).to(tl.float32) * tl.load(invf_ptr + d % half, mask=mask_d, other=0.0)
        cos = tl.cos(angle).to(q_ptr.dtype.element_ty).to(tl.float32)
        sin = tl.sin(angle).to(q_ptr.dtype.element_ty).to(tl.float32)
        q = _rope_rows(q_rows, d[None, :], d_rot[None, :], q_mask, cos[None, :], sin[None, :])
        k_row = q_ptr + s * stride_qt + (HEADS + kvh) * HEAD_DIM
        k_new = _rope_rows(k_row, d, d_rot, mask_d, cos, sin)
        v_new = tl.load(k_row + KV_HEADS * HEAD_DIM + d, mask=mask_d, other=0.0)
        slot = tl.load(slot_ptr + s).to(tl.int64)
        owner = (start <= ctx - 1) & (ctx - 1 < end)  # this partition holds the new token's position
        if slot >= 0:
            cache_end = tl.minimum(end, ctx - 1)
            if owner | ((ctx == 0) & (part == 0)):
                blk_new = slot // BLOCK_SIZE
                within_new = slot % BLOCK_SIZE
                tl.store(k_ptr + blk_new * stride_kb + within_new * stride_ks + kvh * stride_kh + d,
                         k_new.to(k_ptr.dtype.element_ty), mask=mask_d)  # fmt: skip
                tl.store(v_ptr + blk_new * stride_vb + within_new * stride_vs + kvh * stride_vh + d,
                         v_new.to(v_ptr.dtype.element_ty), mask=mask_d)  # fmt: skip
    else:
        q = tl.load(q_rows + d[None, :], mask=q_mask, other=0.0)
    m_i = tl.full((REP_PAD,), float("-inf"), tl.float32)
    l_i = tl.zeros((REP_PAD,), tl.float32)
    acc = tl.zeros((REP_PAD, D_PAD), tl.float32)
    for j0 in range(start, cache_end, BLOCK_N):
        offs = j0 + tl.arange(0, BLOCK_N)
        valid = offs < cache_end
        blk = tl.load(bt_ptr + s * stride_bt + offs // BLOCK_SIZE, mask=valid, other=0).to(tl.int64)
        within = offs % BLOCK_SIZE
        kv_mask = valid[:, None] & mask_d[None, :]
        k = tl.load(k_ptr + (blk * stride_kb + within * stride_ks + kvh * stride_kh)[:, None] + d[None, :],
                    mask=kv_mask, other=0.0)  # fmt: skip
        # V is issued with K (one round trip when the partition is one tile)
        v = tl.load(v_ptr + (blk * stride_vb + within * stride_vs + kvh * stride_vh)[:, None] + d[None, :],
                    mask=kv_mask, other=0.0)  # fmt: skip
        if not DOT:  # one query head per KV head (REP_PAD 1): CUDA-core products, no 16-row padding
            scores = tl.sum(q.to(tl.float32)[:, None, :] * k.to(tl.float32)[None, :, :], axis=2)
        elif IEEE:
            scores = tl.dot(q, tl.trans(k), input_precision="ieee")
        else:
            scores = tl.dot(q, tl.trans(k))
        scores = tl.where(valid[None, :], scores * scale, float("-inf"))  # [REP_PAD, BLOCK_N]
        m_new = tl.maximum(m_i, tl.max(scores, axis=1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(scores - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if not DOT:
            pv = tl.sum(p[:, :, None] * v.to(tl.float32)[None, :, :], axis=1)
        elif IEEE:
            pv = tl.dot(p, v.to(tl.float32), input_precision="ieee")
        else:
            pv = tl.dot(p.to(v.dtype), v)
        acc = acc * alpha[:, None] + pv
        m_i = m_new
    if ROPE:
        if (slot >= 0) & owner:  # the new token, from registers
            s_new = tl.sum(q.to(tl.float32) * k_new.to(tl.float32)[None, :], axis=1) * scale  # [REP_PAD]
            m_new = tl.maximum(m_i, s_new)
            alpha = tl.exp(m_i - m_new)
            p_new = tl.exp(s_new - m_new)
            l_i = l_i * alpha + p_new
            acc = acc * alpha[:, None] + p_new[:, None] * v_new.to(tl.float32)[None, :]
            m_i = m_new
    if NUM_PARTS == 1:
        out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
        tl.store(out_ptr + s * stride_ot + heads[:, None] * stride_oh + d[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=q_mask)  # fmt: skip
    else:
        row = (s * HEADS + heads) * NUM_PARTS + part  # [S, heads, parts] flat
        tl.store(pm_ptr + row, m_i, mask=mask_h)
        tl.store(pl_ptr + row, l_i, mask=mask_h)
        tl.store(pacc_ptr + row[:, None] * D_PAD + d[None, :], acc, mask=mask_h[:, None])
        tl.debug_barrier()  # every thread's partial is stored before the (release) arrival below
        arrived = tl.atomic_add(cnt_ptr + s * KV_HEADS + kvh, 1, sem="acq_rel")
        if arrived == NUM_PARTS - 1:  # the last to arrive merges (volatile loads: straight from L2)
            parts = tl.arange(0, NUM_PARTS)
            for rr in tl.static_range(REP):
                h = kvh * REP + rr
                rows = (s * HEADS + h) * NUM_PARTS + parts
                m = tl.load(pm_ptr + rows, volatile=True)
                m_max = tl.max(m, axis=0)
                m_max = tl.where(m_max == float("-inf"), 0.0, m_max)
                w = tl.exp(m - m_max)  # 0 for empty partitions
                total = tl.sum(tl.load(pl_ptr + rows, volatile=True) * w, axis=0)
                part_acc = tl.load(pacc_ptr + rows[:, None] * D_PAD + d[None, :], volatile=True)
                o = tl.sum(part_acc * w[:, None], axis=0) / tl.where(total > 0, total, 1.0)
                tl.store(out_ptr + s * stride_ot + h * stride_oh + d, o.to(out_ptr.dtype.element_ty), mask=mask_d)
            tl.store(cnt_ptr + s * KV_HEADS + kvh, 0)  # self-cleaning: the next launch finds 0


_TUNE = [triton.Config({"BLOCK_N": bn}, num_warps=w, num_stages=st)
         for bn, w, st in ((16, 4, 1), (32, 4, 2), (64, 4, 3), (128, 4, 2), (128, 8, 2))]  # fmt: skip


def _bench(kernel_call, quantiles):  # type: ignore[no-untyped-def]  # short: ~25 ms per config
    return triton.testing.do_bench(kernel_call, warmup=5, rep=20, quantiles=quantiles)


# vec_mha: K/V tiles live in registers (no tensor-core staging); these keep ptxas (sm_90, head_dim 128) at
# 80-175 registers a thread with no spills, where BLOCK_N 64 at 4-8 warps takes 255 and spills
_VEC_TUNE = [triton.Config({"BLOCK_N": bn}, num_warps=w, num_stages=st)
             for bn, w, st in ((16, 4, 1), (16, 4, 2), (32, 8, 1), (32, 8, 2), (64, 16, 1))]  # fmt: skip
_KEY = ["S_BUCKET", "REP", "HEAD_DIM", "NUM_PARTS", "ROPE", "DOT"]

# the kernel is idempotent (same cache writes, self-cleaning counters), so the tuner may rerun it freely
_fused_tuned = triton.autotune(_TUNE, key=_KEY, do_bench=_bench)(_fused_decode_kernel)
_vec_tuned = triton.autotune(_VEC_TUNE, key=_KEY, do_bench=_bench)(_fused_decode_kernel)


def fused_parts_for(num_seqs: int, kv_heads: int, sms: int) -> int:
    """Partitions per (sequence, KV head) for the fused kernels: the largest power of two that keeps the grid
    within about two programs per SM (one wave). H200, batch 1, 32 KV heads, context 512, rope fusion
    (bench/results/decode-2026-11-29-fusion.md): 8 parts 8.9 us a layer, 16 parts 16.8, 32 parts 12.6 (the
    unfused kernel's 4-waves rule gives 32; the merge is paid by one of the programs, so fewer is better)."""
    fit = max(1, 2 * sms // max(1, num_seqs * kv_heads))
    return min(32, 1 << (fit.bit_length() - 1))


def choose_fused_parts(num_seqs: int, kv_heads: int, device: torch.device) -> int:
    """fused_parts_for on this device (1 on the CPU)."""
    if device.type != "cuda":
        return 1
    return fused_parts_for(num_seqs, kv_heads, torch.cuda.get_device_properties(device).multi_processor_count)


_COUNTERS: dict[torch.device, torch.Tensor] = {}  # int32 arrival counters per (sequence, KV head), kept at 0


def counters(device: torch.device, n: int) -> torch.Tensor:
    """Zeroed int32 counters (at least n); the kernel leaves them zeroed. A larger call replaces the buffer
    (a CUDA graph that captured the old one keeps it alive: model.decode_graphs.KERNEL_BUFFERS)."""
    cnt = _COUNTERS.get(device)
    if cnt is None or cnt.numel() < n:
        cnt = cached_buffer(max(n, 256), torch.int32, device)
        _COUNTERS[device] = cnt
    return cnt


def _launch(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
            context_lens: torch.Tensor, scale: float, heads: int, num_parts: int | None, tune: bool,
            rope: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None, vec_mha: bool) -> torch.Tensor:  # fmt: skip
    s, kv_heads, hd = q.shape[0], k_cache.shape[2], k_cache.shape[3]
    out = torch.empty(s, heads, hd, dtype=q.dtype, device=q.device)
    if s == 0:
        return out
    parts = num_parts or choose_fused_parts(s, kv_heads, q.device)
    if parts & (parts - 1):
        raise ValueError(f"num_parts must be a power of two, got {parts}")
    rep, d_pad = heads // kv_heads, max(16, triton.next_power_of_2(hd))
    dot = rep > 1 or not vec_mha  # grouped heads: tensor-core tiles of >= 16 (padded) query rows
    if parts > 1:
        pm = torch.empty(s * heads * parts, dtype=torch.float32, device=q.device)
        pl = torch.empty_like(pm)
        pacc = torch.empty(s * heads * parts, d_pad, dtype=torch.float32, device=q.device)
    else:
        pm = pl = pacc = out
    cnt = counters(q.device, s * kv_heads)
    pos, inv_freq, slots = rope if rope is not None else (cnt, cnt, cnt)
    q_stride_h = hd if rope is not None else q.stride(1)
    args = (q, k_cache, v_cache, block_tables, context_lens, out, pm, pl, pacc, cnt, pos, inv_freq, slots, scale,
            q.stride(0), q_stride_h, k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
            v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), block_tables.stride(0),
            out.stride(0), out.stride(1))  # fmt: skip
    meta = dict(HEADS=heads, KV_HEADS=kv_heads, REP=rep, REP_PAD=max(16, triton.next_power_of_2(rep)) if dot else 1,
                HEAD_DIM=hd, D_PAD=d_pad, S_BUCKET=triton.next_power_of_2(s), BLOCK_SIZE=k_cache.shape[1],
                NUM_PARTS=parts, ROPE=rope is not None, DOT=dot, IEEE=q.dtype == torch.float32,
                **launch_kw())  # fmt: skip
    if q.is_cuda and tune:
        (_fused_tuned if dot else _vec_tuned)[(s, kv_heads, parts)](*args, **meta)
    else:
        _fused_decode_kernel[(s, kv_heads, parts)](*args, **meta, BLOCK_N=64 if dot else 16, num_warps=4,
                                                   num_stages=2 if dot else 1)  # fmt: skip
    return out


def _check_cache(s: int, hd: int, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
                 context_lens: torch.Tensor) -> None:  # fmt: skip
    if k_cache.shape[3] != hd or block_tables.shape[0] != s or context_lens.shape != (s,):
        raise ValueError(f"decode_fused: cache {tuple(k_cache.shape)}, tables {tuple(block_tables.shape)}, "
                         f"lens {tuple(context_lens.shape)} do not match {s} rows of head_dim {hd}")  # fmt: skip
    if k_cache.stride(3) != 1 or v_cache.stride(3) != 1 or block_tables.stride(1) != 1:
        raise ValueError("decode_fused needs the head_dim (and block-table column) stride to be 1")


def decode_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
    context_lens: torch.Tensor, scale: float, num_parts: int | None = None, tune: bool = True, vec_mha: bool = False,
) -> torch.Tensor:  # fmt: skip
    """q [S, heads, D] -> [S, heads, D]: paged_decode with the merge inside the kernel (module docstring)."""
    s, heads, hd = q.shape
    _check_cache(s, hd, k_cache, v_cache, block_tables, context_lens)
    if heads % k_cache.shape[2] or q.stride(2) != 1:
        raise ValueError(f"decode_attention: {heads} query heads over {k_cache.shape[2]} KV heads, stride {q.stride()}")
    return _launch(q, k_cache, v_cache, block_tables, context_lens, scale, heads, num_parts, tune, None, vec_mha)


def rope_decode_attention(
    qkv: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor, slot_mapping: torch.Tensor,
    k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor, context_lens: torch.Tensor,
    scale: float, heads: int, num_parts: int | None = None, tune: bool = True, vec_mha: bool = False,
) -> torch.Tensor:  # fmt: skip
    """qkv [S, (heads + 2*kv_heads) * D] -> attention output [S, heads, D]; writes the new K/V (docstring)."""
    s = qkv.shape[0]
    kv_heads, hd = k_cache.shape[2], k_cache.shape[3]
    _check_cache(s, hd, k_cache, v_cache, block_tables, context_lens)
    if qkv.shape[1] != (heads + 2 * kv_heads) * hd or qkv.stride(1) != 1 or heads % kv_heads or hd % 2:
        raise ValueError(f"rope_decode_attention: qkv {tuple(qkv.shape)} does not hold {heads} + 2 x {kv_heads} "
                         f"heads of {hd}")  # fmt: skip
    if positions.shape != (s,) or slot_mapping.shape != (s,) or inv_freq.shape != (hd // 2,):
        raise ValueError(f"rope_decode_attention: positions {tuple(positions.shape)}, slots "
                         f"{tuple(slot_mapping.shape)}, inv_freq {tuple(inv_freq.shape)} for {s} rows")  # fmt: skip
    rope = (positions, inv_freq.to(torch.float32), slot_mapping)
    return _launch(qkv, k_cache, v_cache, block_tables, context_lens, scale, heads, num_parts, tune, rope, vec_mha)


def rope_decode_reference(
    qkv: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor, slot_mapping: torch.Tensor,
    k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor, context_lens: torch.Tensor,
    scale: float, heads: int,
) -> torch.Tensor:  # fmt: skip
    """Pure torch, same contract: model.rope.cos_sin + rope_cache's reference (writes the caches) + paged
    decode's reference."""
    from inlaid_worker.kernels.paged_decode import paged_decode_reference
    from inlaid_worker.kernels.rope_cache import rope_and_cache_reference
    from inlaid_worker.model.rope import cos_sin

    cos, sin = cos_sin(inv_freq, positions, qkv.dtype)
    q = rope_and_cache_reference(qkv, cos[:, 0], sin[:, 0], slot_mapping, k_cache, v_cache, heads)
    return paged_decode_reference(q, k_cache, v_cache, block_tables, context_lens, scale)
