"""Multi-LoRA shrink / expand (Triton, SGMV for row blocks >= 16, BGMV for one token per program).

shrink: v[t, :r_a] = x[t] @ A_a^T            (fp32 out; ranks past r_a are never read nor written)
expand: y[t] += scaling_a * v[t, :r_a] @ B_a^T   (in place; one program owns each (row block, N tile))
Tokens of adapter -1 belong to no block and are untouched. Pool layout: see lora_batch.LoraPool.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .lora_batch import LoraBatch, LoraPool


@triton.jit
def _shrink_kernel(
    x_ptr, a_ptr, v_ptr, tok_ptr, badp_ptr, bstart_ptr, blen_ptr, rank_ptr,
    K, ITERS, stride_xt, stride_xk, stride_al, stride_ar, stride_ak, stride_vt, stride_vr,
    BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, USE_ATOMIC: tl.constexpr,
):  # fmt: skip
    blk = tl.program_id(0)
    n_rows = tl.load(blen_ptr + blk)
    adapter = tl.load(badp_ptr + blk)
    rank = tl.load(rank_ptr + adapter)
    offs_r = tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)
    rows = tl.arange(0, BLOCK_M)
    mask_t = rows < n_rows
    mask_r = offs_r < rank
    toks = tl.load(tok_ptr + tl.load(bstart_ptr + blk) + rows, mask=mask_t, other=0)
    acc = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    k_base = tl.program_id(2) * ITERS * BLOCK_K
    for i in range(0, ITERS):
        offs_k = k_base + i * BLOCK_K + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        x = tl.load(
            x_ptr + toks[:, None] * stride_xt + offs_k[None, :] * stride_xk,
            mask=mask_t[:, None] & mask_k[None, :],
            other=0.0,
        )  # [BM, BK]
        a = tl.load(
            a_ptr + adapter * stride_al + offs_r[:, None] * stride_ar + offs_k[None, :] * stride_ak,
            mask=mask_r[:, None] & mask_k[None, :],
            other=0.0,
        )  # [BR, BK]
        if BLOCK_M >= 16:
            acc += tl.dot(x, tl.trans(a))
        else:
            acc += tl.sum(x[:, None, :].to(tl.float32) * a[None, :, :].to(tl.float32), axis=2)
    v_ptrs = v_ptr + toks[:, None] * stride_vt + offs_r[None, :] * stride_vr
    mask = mask_t[:, None] & mask_r[None, :]
    if USE_ATOMIC:
        tl.atomic_add(v_ptrs, acc, mask=mask, sem="relaxed")
    else:
        tl.store(v_ptrs, acc, mask=mask)


@triton.jit
def _expand_kernel(
    v_ptr, b_ptr, y_ptr, tok_ptr, badp_ptr, bstart_ptr, blen_ptr, rank_ptr, scale_ptr,
    N, stride_vt, stride_vr, stride_bl, stride_br, stride_bn, stride_yt, stride_yn,
    BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    blk = tl.program_id(0)
    n_rows = tl.load(blen_ptr + blk)
    adapter = tl.load(badp_ptr + blk)
    rank = tl.load(rank_ptr + adapter)
    scale = tl.load(scale_ptr + adapter)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    rows = tl.arange(0, BLOCK_M)
    mask_t = rows < n_rows
    toks = tl.load(tok_ptr + tl.load(bstart_ptr + blk) + rows, mask=mask_t, other=0)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for r0 in range(0, rank, BLOCK_R):
        offs_r = r0 + tl.arange(0, BLOCK_R)
        mask_r = offs_r < rank
        v = tl.load(
            v_ptr + toks[:, None] * stride_vt + offs_r[None, :] * stride_vr,
            mask=mask_t[:, None] & mask_r[None, :],
            other=0.0,
        )  # [BM, BR] fp32
        b = tl.load(
            b_ptr + adapter * stride_bl + offs_r[:, None] * stride_br + offs_n[None, :] * stride_bn,
            mask=mask_r[:, None] & mask_n[None, :],
            other=0.0,
        )  # [BR, BN]
        if BLOCK_M >= 16:
            acc += tl.dot(v.to(b.dtype), b)
        else:
            acc += tl.sum(v[:, :, None] * b[None, :, :].to(tl.float32), axis=1)
    y_ptrs = y_ptr + toks[:, None] * stride_yt + offs_n[None, :] * stride_yn
    mask = mask_t[:, None] & mask_n[None, :]
    y = tl.load(y_ptrs, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptrs, (y + scale * acc).to(y_ptr.dtype.element_ty), mask=mask)


def lora_shrink(x: torch.Tensor, pool: LoraPool, batch: LoraBatch, split_k: int = 0) -> torch.Tensor:
    """v [T, R_MAX] fp32 = x [T, K] @ A_a^T per token (rows of adapter -1 and ranks >= r_a: undefined)."""
    t, k = x.shape
    r_max = pool.a.shape[1]
    nb = batch.blk_len.numel()
    block_r = 16 if batch.max_rank <= 16 or batch.block_m > 1 else 32
    block_k = 128 if batch.block_m == 1 else 64
    k_tiles = triton.cdiv(k, block_k)
    if split_k <= 0:  # enough programs to cover the SMs when there are few blocks
        split_k = max(1, min(k_tiles, 256 // max(1, nb * triton.cdiv(batch.max_rank or 1, block_r))))
    iters = triton.cdiv(k_tiles, split_k)
    split_k = triton.cdiv(k_tiles, iters)
    alloc = torch.zeros if split_k > 1 else torch.empty
    v = alloc(t, r_max, dtype=torch.float32, device=x.device)
    if nb == 0:
        return v
    grid = (nb, triton.cdiv(max(batch.max_rank, 1), block_r), split_k)
    _shrink_kernel[grid](
        x, pool.a, v, batch.token_ids, batch.blk_adapter, batch.blk_start, batch.blk_len, pool.ranks,
        k, iters, x.stride(0), x.stride(1), pool.a.stride(0), pool.a.stride(1), pool.a.stride(2),
        v.stride(0), v.stride(1),
        BLOCK_M=batch.block_m, BLOCK_R=block_r, BLOCK_K=block_k, USE_ATOMIC=split_k > 1,
        num_warps=4,
    )  # fmt: skip
    return v


def lora_expand(y: torch.Tensor, v: torch.Tensor, pool: LoraPool, batch: LoraBatch) -> torch.Tensor:
    """In place: y [T, N] += scaling_a * v[t, :r_a] @ B_a^T for every token with an adapter; returns y."""
    t, n = y.shape
    nb = batch.blk_len.numel()
    if nb == 0:
        return y
    block_n = 256 if batch.block_m == 1 else 128
    grid = (nb, triton.cdiv(n, block_n))
    _expand_kernel[grid](
        v, pool.b, y, batch.token_ids, batch.blk_adapter, batch.blk_start, batch.blk_len, pool.ranks,
        pool.scalings, n, v.stride(0), v.stride(1), pool.b.stride(0), pool.b.stride(1), pool.b.stride(2),
        y.stride(0), y.stride(1),
        BLOCK_M=batch.block_m, BLOCK_R=16, BLOCK_N=block_n, num_warps=4,
    )  # fmt: skip
    return y


def lora_apply(y: torch.Tensor, x: torch.Tensor, pool: LoraPool, batch: LoraBatch) -> torch.Tensor:
    """y [T, N] += LoRA(x [T, K]) for each token's adapter, in place (shrink then expand)."""
    if x.shape[0] != batch.num_tokens or y.shape[0] != batch.num_tokens:
        raise ValueError(f"x/y rows {x.shape[0]}/{y.shape[0]} != batch tokens {batch.num_tokens}")
    if x.shape[1] != pool.a.shape[2] or y.shape[1] != pool.b.shape[2]:
        raise ValueError("x/y feature sizes do not match the pool's A [L, R, K] / B [L, R, N]")
    return lora_expand(y, lora_shrink(x, pool, batch), pool, batch)


def lora_reference(y: torch.Tensor, x: torch.Tensor, pool: LoraPool, adapter_ids: torch.Tensor) -> torch.Tensor:
    """Pure-torch reference, returns a new tensor.

    Semantics:
        for t: a = adapter_ids[t]; if a < 0: out[t] = y[t]
               else r = ranks[a]; out[t] = y[t] + scalings[a] * (x[t] @ A[a, :r].T) @ B[a, :r]   (fp32)
    """
    out = y.float().clone()
    ids = adapter_ids.to(x.device).long()
    for a in torch.unique(ids).tolist():
        if a < 0:
            continue
        r = int(pool.ranks[a])
        rows = (ids == a).nonzero().squeeze(1)
        v = x[rows].float() @ pool.a[a, :r].float().t()
        out[rows] += float(pool.scalings[a]) * (v @ pool.b[a, :r].float())
    return out.to(y.dtype)
