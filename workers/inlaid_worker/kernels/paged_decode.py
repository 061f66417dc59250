"""Paged-attention decode (Triton, flash-decoding) over the engine's block table, plus its torch reference.

One query token per sequence. KV cache of one layer: k_cache, v_cache [num_blocks, block_size, kv_heads,
head_dim]; sequence s reads its first context_lens[s] tokens through block_tables[s] (token j lives at block
block_tables[s, j // block_size], offset j % block_size). Grouped-query attention: query head h reads KV head
h // (heads // kv_heads); one program handles all query heads of one KV head, so each K/V tile is read once.

Each sequence's context is cut into `num_parts` equal partitions (sized at run time from its context_len, so
every program has work whatever the length); partitions write (max, sum, unnormalised output) and a second
kernel merges them. With num_parts == 1 the first kernel writes the output directly. A sequence with
context_len 0 (a padding row of a CUDA-graph bucket) gets zeros.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .pdl import gdc_enter, gdc_late, launch_kw


@triton.jit
def _decode_kernel(
    q_ptr, k_ptr, v_ptr, bt_ptr, ctx_ptr, out_ptr, pm_ptr, pl_ptr, pacc_ptr, scale,
    stride_qt, stride_qh, stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh, stride_bt,
    stride_ot, stride_oh,
    REP: tl.constexpr, REP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr,
    S_BUCKET, BLOCK_SIZE: tl.constexpr, NUM_PARTS: tl.constexpr, IEEE: tl.constexpr, BLOCK_N: tl.constexpr,
    USE_GDC: tl.constexpr = 0,
):  # fmt: skip
    gdc_enter(USE_GDC)  # q, the cache, tables and lengths come from earlier kernels (kernels.pdl)
    s = tl.program_id(0)
    kvh = tl.program_id(1)
    part = tl.program_id(2)
    ctx = tl.load(ctx_ptr + s)
    chunk = tl.cdiv(tl.cdiv(ctx, NUM_PARTS), BLOCK_N) * BLOCK_N
    start = part * chunk
    end = tl.minimum(start + chunk, ctx)
    r = tl.arange(0, REP_PAD)
    d = tl.arange(0, D_PAD)
    mask_h = r < REP
    mask_d = d < HEAD_DIM
    heads = kvh * REP + r
    q = tl.load(q_ptr + s * stride_qt + heads[:, None] * stride_qh + d[None, :],
                mask=mask_h[:, None] & mask_d[None, :], other=0.0)  # fmt: skip
    m_i = tl.full((REP_PAD,), float("-inf"), tl.float32)
    l_i = tl.zeros((REP_PAD,), tl.float32)
    acc = tl.zeros((REP_PAD, D_PAD), tl.float32)
    for j0 in range(start, end, BLOCK_N):
        offs = j0 + tl.arange(0, BLOCK_N)
        valid = offs < end
        blk = tl.load(bt_ptr + s * stride_bt + offs // BLOCK_SIZE, mask=valid, other=0).to(tl.int64)
        within = offs % BLOCK_SIZE
        kv_mask = valid[:, None] & mask_d[None, :]
        k = tl.load(k_ptr + (blk * stride_kb + within * stride_ks + kvh * stride_kh)[:, None] + d[None, :],
                    mask=kv_mask, other=0.0)  # fmt: skip
        if IEEE:
            scores = tl.dot(q, tl.trans(k), input_precision="ieee")
        else:
            scores = tl.dot(q, tl.trans(k))
        scores = tl.where(valid[None, :], scores * scale, float("-inf"))  # [REP_PAD, BLOCK_N]
        m_new = tl.maximum(m_i, tl.max(scores, axis=1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(scores - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_ptr + (blk * stride_vb + within * stride_vs + kvh * stride_vh)[:, None] + d[None, :],
                    mask=kv_mask, other=0.0)  # fmt: skip
        if IEEE:
            pv = tl.dot(p, v.to(tl.float32), input_precision="ieee")
        else:
            pv = tl.dot(p.to(v.dtype), v)
        acc = acc * alpha[:, None] + pv
        m_i = m_new
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
    pm_ptr, pl_ptr, pacc_ptr, out_ptr, stride_ot, stride_oh,
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, NUM_PARTS: tl.constexpr, USE_GDC: tl.constexpr = 0,
):  # fmt: skip
    gdc_enter(USE_GDC)  # kernels.pdl
    s = tl.program_id(0)
    h = tl.program_id(1)
    row = (s * tl.num_programs(1) + h) * NUM_PARTS + tl.arange(0, NUM_PARTS)
    d = tl.arange(0, D_PAD)
    m = tl.load(pm_ptr + row)
    m_max = tl.max(m, axis=0)
    m_max = tl.where(m_max == float("-inf"), 0.0, m_max)
    w = tl.exp(m - m_max)  # 0 for empty partitions
    total = tl.sum(tl.load(pl_ptr + row) * w, axis=0)
    acc = tl.sum(tl.load(pacc_ptr + row[:, None] * D_PAD + d[None, :]) * w[:, None], axis=0)
    out = acc / tl.where(total > 0, total, 1.0)
    gdc_late(USE_GDC)
    tl.store(out_ptr + s * stride_ot + h * stride_oh + d, out.to(out_ptr.dtype.element_ty), mask=d < HEAD_DIM)


def choose_num_parts(num_seqs: int, kv_heads: int, device: torch.device) -> int:
    """Partitions per sequence so that about four waves of programs cover the GPU (1 on the CPU)."""
    if device.type != "cuda":
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    want = -(-4 * sms // max(1, num_seqs * kv_heads))
    return int(min(32, triton.next_power_of_2(want)))


def paged_decode(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
    context_lens: torch.Tensor, scale: float, num_parts: int | None = None, out: torch.Tensor | None = None,
    tune: bool = True,
) -> torch.Tensor:  # fmt: skip
    """q [S, heads, head_dim] (one token per sequence) -> [S, heads, head_dim]; see the module docstring.
    tune: on CUDA, pick the tile by timing the first call of each batch bucket (never inside a graph capture)."""
    s, heads, hd = q.shape
    kv_heads = k_cache.shape[2]
    if heads % kv_heads or k_cache.shape[3] != hd or block_tables.shape[0] != s or context_lens.shape != (s,):
        raise ValueError(f"paged_decode: q {tuple(q.shape)}, cache {tuple(k_cache.shape)}, "
                         f"tables {tuple(block_tables.shape)}, lens {tuple(context_lens.shape)} do not match")  # fmt: skip
    if q.stride(2) != 1 or k_cache.stride(3) != 1 or v_cache.stride(3) != 1 or block_tables.stride(1) != 1:
        raise ValueError("paged_decode needs the head_dim (and block-table column) stride to be 1")
    out = torch.empty_like(q) if out is None else out
    if s == 0:
        return out
    parts = num_parts or choose_num_parts(s, kv_heads, q.device)
    if parts & (parts - 1):
        raise ValueError(f"num_parts must be a power of two, got {parts}")
    rep, d_pad = heads // kv_heads, max(16, triton.next_power_of_2(hd))
    if parts > 1:
        pm = torch.empty(s * heads * parts, dtype=torch.float32, device=q.device)
        pl = torch.empty_like(pm)
        pacc = torch.empty(s * heads * parts, d_pad, dtype=torch.float32, device=q.device)
    else:
        pm = pl = pacc = out
    args = (q, k_cache, v_cache, block_tables, context_lens, out, pm, pl, pacc, scale,
            q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
            v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), block_tables.stride(0),
            out.stride(0), out.stride(1))  # fmt: skip
    meta = dict(REP=rep, REP_PAD=max(16, triton.next_power_of_2(rep)), HEAD_DIM=hd, D_PAD=d_pad,
                S_BUCKET=triton.next_power_of_2(s), BLOCK_SIZE=k_cache.shape[1], NUM_PARTS=parts,
                IEEE=q.dtype == torch.float32, **launch_kw())  # fmt: skip
    if q.is_cuda and tune:
        _decode_tuned[(s, kv_heads, parts)](*args, **meta)
    else:
        _decode_kernel[(s, kv_heads, parts)](*args, **meta, BLOCK_N=64, num_warps=4, num_stages=2)
    if parts > 1:
        _merge_kernel[(s, heads)](pm, pl, pacc, out, out.stride(0), out.stride(1),
                                  HEAD_DIM=hd, D_PAD=d_pad, NUM_PARTS=parts, num_warps=1, **launch_kw())  # fmt: skip
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
