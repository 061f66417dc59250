"""CUDA-core GEMV (one row of x per program) on the standard GPTQ layout, no repacking.

A program owns BLOCK_N output columns of one row and a run of K tiles (split-K). It keeps a [rows, BLOCK_N]
fp32 accumulator in registers and reduces over K only once, at the end. Each packed field becomes an exact
fp32 value with one LOP3 and one FFMA (quant_common.field_f32); the zero point is removed per group with
the sums of x, and the scale is applied per group:
    sum_k x[k] * (q[k] - z) * s  ==  s * (sum_k x[k] * q[k] - z * sum_k x[k]).
4-bit: word row i of a tile holds rows 8i..8i+7. 3-bit: words 3b..3b+2 hold rows 32b..32b+31 (a bit
stream), unpacked with static shifts from the three word rows loaded once each.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .gptq_packing import GPTQWeight
from .quant_common import field_f32, group_zero, int_f32, split_launch, store_tile


@triton.jit
def _x_cols(x_row, perm_ptr, kk, k_ok, stride_xk, HAS_PERM: tl.constexpr):
    """x[m, perm[kk]] as fp32 [len(kk)] (zero past K)."""
    if HAS_PERM:
        kk = tl.load(perm_ptr + kk, mask=k_ok, other=0)
    return tl.load(x_row + kk * stride_xk, mask=k_ok, other=0.0).to(tl.float32)


@triton.jit
def _field3(w, wh, S: tl.constexpr):
    """3-bit field at bit S of a word (wh = word >> 12 serves the fields above bit 20)."""
    if S <= 20:
        v = field_f32(w, S, 7)
    else:
        v = field_f32(wh, S - 12, 7)
    return v


@triton.jit
def _gemv_kernel(
    x_ptr, qw_ptr, sc_ptr, qz_ptr, perm_ptr, y_ptr, ws_ptr, cnt_ptr,
    M, N, K, ZW, ITERS, SPLIT_K,
    stride_xm, stride_xk, stride_qk, stride_qn, stride_sg, stride_sn, stride_zg, stride_zn,
    stride_ym, stride_yn,
    BITS: tl.constexpr, GROUP: tl.constexpr, SYM: tl.constexpr, ZERO_OFFSET: tl.constexpr,
    HAS_PERM: tl.constexpr, USE_SPLIT: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_m = tl.program_id(2)
    x_row = x_ptr + pid_m * stride_xm
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    R: tl.constexpr = BLOCK_K // 8 if BITS == 4 else BLOCK_K // 32  # word rows (4-bit) or 32-row blocks (3-bit)
    offs_r = tl.arange(0, R)
    acc = tl.zeros((R, BLOCK_N), dtype=tl.float32)
    # the next K tile's words are loaded before this tile is computed (a register double buffer)
    k_first = pid_k * (ITERS * BLOCK_K)
    if BITS == 4:
        w_ptrs = qw_ptr + offs_r[:, None] * stride_qk + offs_n[None, :] * stride_qn
        w_step = BLOCK_K // 8 * stride_qk
    else:
        w_ptrs = qw_ptr + (offs_r * 3)[:, None] * stride_qk + offs_n[None, :] * stride_qn
        w_step = BLOCK_K // 32 * 3 * stride_qk
    nmask = mask_n[None, :] & (k_first < K)
    w_ptrs += (k_first // BLOCK_K) * w_step
    n0 = tl.load(w_ptrs, mask=nmask, other=0)
    if BITS == 3:
        n1 = tl.load(w_ptrs + stride_qk, mask=nmask, other=0)
        n2 = tl.load(w_ptrs + 2 * stride_qk, mask=nmask, other=0)
    for it in range(0, ITERS):
        kt = k_first + it * BLOCK_K
        k_ok = kt < K
        k0 = tl.where(k_ok, kt, 0)
        w_ptrs += w_step
        nmask = mask_n[None, :] & (kt + BLOCK_K < K) & (it + 1 < ITERS)
        d = tl.zeros((R, BLOCK_N), dtype=tl.float32)
        xs = tl.zeros((R,), dtype=tl.float32)
        if BITS == 4:
            p = n0
            n0 = tl.load(w_ptrs, mask=nmask, other=0)
            for j in tl.static_range(8):
                if j < 5:
                    q = field_f32(p, 4 * j, 15)
                else:
                    q = field_f32(p >> 12, 4 * j - 12, 15)
                xj = _x_cols(x_row, perm_ptr, k0 + offs_r * 8 + j, k_ok, stride_xk, HAS_PERM)
                d += xj[:, None] * q
                xs += xj
        else:
            w0 = n0
            w1 = n1
            w2 = n2
            n0 = tl.load(w_ptrs, mask=nmask, other=0)
            n1 = tl.load(w_ptrs + stride_qk, mask=nmask, other=0)
            n2 = tl.load(w_ptrs + 2 * stride_qk, mask=nmask, other=0)
            w0h = w0 >> 12
            w1h = w1 >> 12
            w2h = w2 >> 12
            for j in tl.static_range(32):
                if j < 10:
                    q = _field3(w0, w0h, 3 * j)
                elif j == 10:
                    q = int_f32(((w0 >> 30) & 3) | ((w1 & 1) << 2))
                elif j < 21:
                    q = _field3(w1, w1h, 3 * j - 32)
                elif j == 21:
                    q = int_f32(((w1 >> 31) & 1) | ((w2 & 3) << 1))
                else:
                    q = _field3(w2, w2h, 3 * j - 64)
                xj = _x_cols(x_row, perm_ptr, k0 + offs_r * 32 + j, k_ok, stride_xk, HAS_PERM)
                d += xj[:, None] * q
                xs += xj
        g = k0 // GROUP
        s = tl.load(sc_ptr + g * stride_sg + offs_n * stride_sn, mask=mask_n, other=0.0).to(tl.float32)
        z = group_zero(qz_ptr, g, offs_n, mask_n, stride_zg, stride_zn, ZW, BITS, SYM, ZERO_OFFSET, BLOCK_N)
        acc += (d - xs[:, None] * z[None, :]) * s[None, :]

    out = tl.sum(acc, axis=0)
    tile = pid_m * tl.num_programs(0) + pid_n
    y_ptrs = y_ptr + pid_m * stride_ym + offs_n * stride_yn
    ws_ptrs = ws_ptr + pid_m * N + offs_n
    store_tile(out, y_ptrs, ws_ptrs, mask_n, cnt_ptr, tile, SPLIT_K, USE_SPLIT)


def launch_gemv(x2: torch.Tensor, w: GPTQWeight, block_m: int, block_n: int, block_k: int, split_k: int,
                num_warps: int, num_stages: int, y: torch.Tensor) -> None:  # fmt: skip
    """y[M, N] = x2[M, K] @ W on CUDA cores, one program row per row of x (block_m is ignored)."""
    grid, args, consts = split_launch(x2, w, y, 1, block_n, block_k, split_k)
    _gemv_kernel[grid](*args, **consts, BITS=w.bits, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=num_warps,
                       num_stages=num_stages)  # fmt: skip
