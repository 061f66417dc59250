"""Causal attention of any step's rows (prefill chunks and decode rows alike) over the paged KV cache, in query
tiles listed by a static device table (Triton): the grid is the table's size, not the step's, so a step of a
CUDA-graph bucket launches the same grid whatever its chunk layout (model.prefill_graphs).

Tile table `tiles` int32 [4, NT]: per tile its sequence (row of block_tables), first query row, number of query
rows n (0 = a padding tile: nothing read or written) and the absolute position p0 of its first row. Row i of a
tile (i < n) sits at position p0 + i and attends the sequence's cached tokens 0..p0 + i (the new tokens' K/V are
already in the cache). KV layout, block tables and grouped-query heads as kernels.paged_decode. Rows no tile
covers get zeros. One program per (tile, query head).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

TILE_M = 32  # query rows per tile (model.prefill_layout cuts chunks into tiles of this many rows)


@triton.jit
def _prefill_kernel(
    q_ptr, k_ptr, v_ptr, bt_ptr, tile_ptr, out_ptr, scale, NT,
    stride_qt, stride_qh, stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh, stride_bt,
    stride_ot, stride_oh,
    REP: tl.constexpr, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, IEEE: tl.constexpr,
):  # fmt: skip
    tile = tl.program_id(0)
    h = tl.program_id(1)
    seq = tl.load(tile_ptr + tile)
    row0 = tl.load(tile_ptr + NT + tile)
    n = tl.load(tile_ptr + 2 * NT + tile)
    p0 = tl.load(tile_ptr + 3 * NT + tile)
    m = tl.arange(0, BLOCK_M)
    d = tl.arange(0, D_PAD)
    mask_m = m < n
    mask_d = d < HEAD_DIM
    kvh = h // REP
    q = tl.load(q_ptr + (row0 + m)[:, None] * stride_qt + h * stride_qh + d[None, :],
                mask=mask_m[:, None] & mask_d[None, :], other=0.0)  # fmt: skip
    pos = p0 + m
    end = tl.where(n > 0, p0 + n, 0)  # keys 0..end-1
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, D_PAD), tl.float32)
    for j0 in range(0, end, BLOCK_N):
        offs = j0 + tl.arange(0, BLOCK_N)
        valid = offs < end
        blk = tl.load(bt_ptr + seq * stride_bt + offs // BLOCK_SIZE, mask=valid, other=0).to(tl.int64)
        within = offs % BLOCK_SIZE
        kv_mask = valid[:, None] & mask_d[None, :]
        k = tl.load(k_ptr + (blk * stride_kb + within * stride_ks + kvh * stride_kh)[:, None] + d[None, :],
                    mask=kv_mask, other=0.0)  # fmt: skip
        if IEEE:
            scores = tl.dot(q, tl.trans(k), input_precision="ieee")
        else:
            scores = tl.dot(q, tl.trans(k))
        causal = valid[None, :] & (offs[None, :] <= pos[:, None]) & mask_m[:, None]
        scores = tl.where(causal, scores * scale, float("-inf"))  # [BLOCK_M, BLOCK_N]
        m_new = tl.maximum(m_i, tl.max(scores, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing to attend yet
        alpha = tl.exp(m_i - m_safe)
        p = tl.exp(scores - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_ptr + (blk * stride_vb + within * stride_vs + kvh * stride_vh)[:, None] + d[None, :],
                    mask=kv_mask, other=0.0)  # fmt: skip
        if IEEE:
            pv = tl.dot(p, v.to(tl.float32), input_precision="ieee")
        else:
            pv = tl.dot(p.to(v.dtype), v)
        acc = acc * alpha[:, None] + pv
        m_i = m_new
    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(out_ptr + (row0 + m)[:, None] * stride_ot + h * stride_oh + d[None, :],
             out.to(out_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_d[None, :])  # fmt: skip


def paged_prefill(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
    tiles: torch.Tensor, scale: float,
) -> torch.Tensor:  # fmt: skip
    """q [T, heads, head_dim] -> [T, heads, head_dim] (see the module docstring); tiles int32 [4, NT]."""
    t, heads, hd = q.shape
    kv_heads = k_cache.shape[2]
    if heads % kv_heads or k_cache.shape[3] != hd or tiles.dim() != 2 or tiles.shape[0] != 4:
        raise ValueError(f"paged_prefill: q {tuple(q.shape)}, cache {tuple(k_cache.shape)}, "
                         f"tiles {tuple(tiles.shape)} do not match")  # fmt: skip
    if q.stride(2) != 1 or k_cache.stride(3) != 1 or block_tables.stride(1) != 1 or not tiles.is_contiguous():
        raise ValueError("paged_prefill needs unit head_dim / block-table column strides and a contiguous tile table")
    out = torch.zeros_like(q)
    nt = tiles.shape[1]
    if t == 0 or nt == 0:
        return out
    d_pad = max(16, triton.next_power_of_2(hd))
    _prefill_kernel[(nt, heads)](
        q, k_cache, v_cache, block_tables, tiles, out, scale, nt,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), block_tables.stride(0), out.stride(0), out.stride(1),
        REP=heads // kv_heads, HEAD_DIM=hd, D_PAD=d_pad, BLOCK_SIZE=k_cache.shape[1], BLOCK_M=TILE_M,
        BLOCK_N=32 if q.dtype == torch.float32 else 64, IEEE=q.dtype == torch.float32, num_warps=4, num_stages=2,
    )  # fmt: skip
    return out
