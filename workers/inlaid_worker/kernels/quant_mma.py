"""Tensor-core GEMM for 4-bit GPTQ weights (any M), and a dequantize-to-fp16 + cuBLAS path (both widths).

MMA kernel: the weight is the A operand, so the product is computed transposed, y^T = W^T x^T: a program
owns a [BLOCK_N, BLOCK_M] tile of y^T (BLOCK_N >= 64 weight columns fill the MMA's M side, so a batch of
1..16 rows wastes no weight bytes). The packed [BLOCK_N, BLOCK_K/8] word tile is unpacked without any
reshape: for each nibble j, one [BLOCK_N, BLOCK_K/8] operand (rows 8i+j) is multiplied with the matching
columns of x, so the elementwise dequantization can run in the MMA operand layout. (q | magic) as a 16-bit
float is exactly magic + q; the magic and the zero point are removed per group with the sums of x.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .gptq_packing import GPTQWeight
from .quant_common import field_f32, group_zero, int_f32, split_launch, store_tile


@triton.jit
def _mma_kernel(
    x_ptr, qw_ptr, sc_ptr, qz_ptr, perm_ptr, y_ptr, ws_ptr, cnt_ptr,
    M, N, K, ZW, ITERS, SPLIT_K,
    stride_xm, stride_xk, stride_qk, stride_qn, stride_sg, stride_sn, stride_zg, stride_zn,
    stride_ym, stride_yn,
    GROUP: tl.constexpr, SYM: tl.constexpr, ZERO_OFFSET: tl.constexpr,
    HAS_PERM: tl.constexpr, USE_SPLIT: tl.constexpr, IS_BF16: tl.constexpr, FULL_DEQUANT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_m = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    MAGIC_BITS: tl.constexpr = 0x4300 if IS_BF16 else 0x6400  # as a 16-bit float: MAGIC + q, exactly
    MAGIC: tl.constexpr = 128.0 if IS_BF16 else 1024.0
    R: tl.constexpr = BLOCK_K // 8
    offs_r = tl.arange(0, R)
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    for it in range(0, ITERS):
        kt = pid_k * (ITERS * BLOCK_K) + it * BLOCK_K
        k_ok = kt < K
        k0 = tl.where(k_ok, kt, 0)
        p = tl.load(
            qw_ptr + offs_n[:, None] * stride_qn + (k0 // 8 + offs_r)[None, :] * stride_qk,
            mask=mask_n[:, None] & k_ok, other=0,
        )  # [BLOCK_N, R] int32  # fmt: skip
        g = k0 // GROUP
        s = tl.load(sc_ptr + g * stride_sg + offs_n * stride_sn, mask=mask_n, other=0.0).to(tl.float32)
        z = group_zero(qz_ptr, g, offs_n, mask_n, stride_zg, stride_zn, ZW, 4, SYM, ZERO_OFFSET, BLOCK_N) + MAGIC
        if FULL_DEQUANT:  # large M: (q - z) * s in the operand (16-bit rounding), one accumulator
            zw = z.to(x_ptr.dtype.element_ty)[:, None]
            sw = s.to(x_ptr.dtype.element_ty)[:, None]
        d = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
        xs = tl.zeros((BLOCK_M,), dtype=tl.float32)
        for j in tl.static_range(8):
            kk = k0 + offs_r * 8 + j
            if HAS_PERM:
                kk = tl.load(perm_ptr + kk, mask=k_ok, other=0)
            xj = tl.load(x_ptr + offs_m[None, :] * stride_xm + kk[:, None] * stride_xk,
                         mask=mask_m[None, :] & k_ok, other=0.0)  # [R, BLOCK_M]  # fmt: skip
            wj = (((p >> (4 * j)) & 0xF) | MAGIC_BITS).to(tl.int16).to(xj.dtype, bitcast=True)
            if FULL_DEQUANT:
                acc = tl.dot((wj - zw) * sw, xj, acc)
            else:
                d = tl.dot(wj, xj, d)
                xs += tl.sum(xj.to(tl.float32), axis=0)
        if not FULL_DEQUANT:
            acc += (d - z[:, None] * xs[None, :]) * s[:, None]

    tile = pid_m * tl.num_programs(0) + pid_n
    mask = mask_n[:, None] & mask_m[None, :]
    y_ptrs = y_ptr + offs_m[None, :] * stride_ym + offs_n[:, None] * stride_yn
    ws_ptrs = ws_ptr + offs_m[None, :] * N + offs_n[:, None]
    store_tile(acc, y_ptrs, ws_ptrs, mask, cnt_ptr, tile, SPLIT_K, USE_SPLIT)


def launch_mma(x2: torch.Tensor, w: GPTQWeight, block_m: int, block_n: int, block_k: int, split_k: int,
               num_warps: int, num_stages: int, y: torch.Tensor) -> None:  # fmt: skip
    """y[M, N] = x2[M, K] @ W on tensor cores (4-bit only)."""
    if w.bits != 4:
        raise ValueError("the MMA kernel takes 4-bit weights")
    grid, args, consts = split_launch(x2, w, y, block_m, block_n, block_k, split_k)
    _mma_kernel[grid](*args, **consts, IS_BF16=x2.dtype == torch.bfloat16, FULL_DEQUANT=block_m >= 64,
                      BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=num_warps,
                      num_stages=num_stages)  # fmt: skip


@triton.jit
def _dequant_kernel(
    qw_ptr, sc_ptr, qz_ptr, w_ptr, N, ZW,
    stride_qk, stride_qn, stride_sg, stride_sn, stride_zg, stride_zn, stride_wk, stride_wn,
    BITS: tl.constexpr, GROUP: tl.constexpr, SYM: tl.constexpr, ZERO_OFFSET: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """W[k, n] = (q - z) * s for one [BLOCK_K, BLOCK_N] tile, written in W's dtype."""
    k0 = tl.program_id(1) * BLOCK_K
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    g = k0 // GROUP
    s = tl.load(sc_ptr + g * stride_sg + offs_n * stride_sn, mask=mask_n, other=0.0).to(tl.float32)
    z = group_zero(qz_ptr, g, offs_n, mask_n, stride_zg, stride_zn, ZW, BITS, SYM, ZERO_OFFSET, BLOCK_N)
    R: tl.constexpr = BLOCK_K // 8 if BITS == 4 else BLOCK_K // 32
    offs_r = tl.arange(0, R)
    out = w_ptr + offs_n[None, :] * stride_wn
    dt = w_ptr.dtype.element_ty
    if BITS == 4:
        p = tl.load(qw_ptr + (k0 // 8 + offs_r)[:, None] * stride_qk + offs_n[None, :] * stride_qn, mask=mask_n[None, :])
        for j in tl.static_range(8):
            q = field_f32(p >> (4 * j), 0, 15)
            tl.store(out + (k0 + offs_r * 8 + j)[:, None] * stride_wk, ((q - z[None, :]) * s[None, :]).to(dt),
                     mask=mask_n[None, :])  # fmt: skip
    else:
        rows = (k0 // 32 + offs_r) * 3
        base = qw_ptr + rows[:, None] * stride_qk + offs_n[None, :] * stride_qn
        w0 = tl.load(base, mask=mask_n[None, :], other=0)
        w1 = tl.load(base + stride_qk, mask=mask_n[None, :], other=0)
        w2 = tl.load(base + 2 * stride_qk, mask=mask_n[None, :], other=0)
        for j in tl.static_range(32):
            if j < 10:
                v = (w0 >> (3 * j)) & 7
            elif j == 10:
                v = ((w0 >> 30) & 3) | ((w1 & 1) << 2)
            elif j < 21:
                v = (w1 >> (3 * j - 32)) & 7
            elif j == 21:
                v = ((w1 >> 31) & 1) | ((w2 & 3) << 1)
            else:
                v = (w2 >> (3 * j - 64)) & 7
            q = int_f32(v)
            tl.store(out + (k0 + offs_r * 32 + j)[:, None] * stride_wk, ((q - z[None, :]) * s[None, :]).to(dt),
                     mask=mask_n[None, :])  # fmt: skip


_SCRATCH: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}


def dequantize_to(w: GPTQWeight, dtype: torch.dtype, block_n: int = 256, out: torch.Tensor | None = None) -> torch.Tensor:
    """Dense W[K, N] in `dtype` (rows in packed order: apply x[:, perm] when w.perm is set)."""
    k, n = w.in_features, w.out_features
    if out is None:
        out = torch.empty(k, n, dtype=dtype, device=w.qweight.device)
    bk = 128 if w.group_size % 128 == 0 else 32
    _dequant_kernel[(triton.cdiv(n, block_n), k // bk)](
        w.qweight, w.scales, w.qzeros, out, n, w.qzeros.shape[1],
        w.qweight.stride(0), w.qweight.stride(1), w.scales.stride(0), w.scales.stride(1),
        w.qzeros.stride(0), w.qzeros.stride(1), out.stride(0), out.stride(1),
        BITS=w.bits, GROUP=w.group_size, SYM=w.sym, ZERO_OFFSET=w.zero_offset, BLOCK_N=block_n, BLOCK_K=bk,
        num_warps=4,
    )  # fmt: skip
    return out


def dequant_matmul(x2: torch.Tensor, w: GPTQWeight, y: torch.Tensor) -> None:
    """y = x2 @ W through a dense copy of W in a reused scratch buffer and cuBLAS (large M)."""
    key = (x2.device, x2.dtype)
    scratch = _SCRATCH.get(key)
    need = w.in_features * w.out_features
    if scratch is None or scratch.numel() < need:
        scratch = torch.empty(need, dtype=x2.dtype, device=x2.device)
        _SCRATCH[key] = scratch
    dense = dequantize_to(w, x2.dtype, out=scratch[:need].view(w.in_features, w.out_features))
    xg = x2[:, w.perm.long()] if w.perm is not None else x2
    torch.matmul(xg, dense, out=y)
