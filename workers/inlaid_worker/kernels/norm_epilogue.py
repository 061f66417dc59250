"""Residual add + RMSNorm folded into the half2 row GEMVs around it (the "norm" decode fusion; kernels.gemv_norm).

Experimental: measured slower on the H200, opt-in via INLAID_DECODE_NORM.

Producer (the o and down GEMVs, launch_hgemvr's `residual`): the program that finishes an output tile (the split-K
epilogue's last arriver, or every program without split-K) does not write y. It adds y to the residual stream in
place, with fused_norm.add_rms_norm's rounding: o = fp16(sum); h = fp16(h_res + o); and adds sum(h32^2) of its
columns into the row's fp32 slot (one atomic per row and tile: the slot holds the row's full sum of squares once the
GEMV has completed).
Consumer (the qkv and gate/up GEMVs, launch_hgemvr's `norm`): its x is the residual stream h; after the PDL wait
each program reads its rows' slots, r = 1 / sqrt(sumsq / K + eps), and normalises every x pair it loads:
x = fp16(g * fp16(h * r)) (g: the norm weight), the rounding of add_rms_norm. The slot is complete then: PDL's wait
returns only after the previous grid (and, transitively, every earlier one) completed; without PDL plain stream
order gives the same.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .quant_hgemv import _hi_f32, _lo_f32

# x pair (h_lo, h_hi) -> (fp16(g_lo * fp16(h_lo * r)), fp16(g_hi * fp16(h_hi * r))): the fp16 x fp16 product is
# exact in fp32, so one mul.rn.f16x2 rounds it as add_rms_norm's fp32 product rounded to fp16 does
_NORM_PTX = tl.constexpr("""
{
.reg .f16 a, b;
.reg .f32 fa, fb;
.reg .b32 t;
mov.b32 {a, b}, $1;
cvt.f32.f16 fa, a;
cvt.f32.f16 fb, b;
mul.rn.f32 fa, fa, $3;
mul.rn.f32 fb, fb, $3;
cvt.rn.f16x2.f32 t, fb, fa;
mul.rn.f16x2 $0, t, $2;
}
""")
# mode 2 (norm_fast): r as an fp16 pair ($3): fp16(g * fp16(h * fp16(r))), two HMUL2 per pair
_NORM_FAST_PTX = tl.constexpr("""
{
.reg .b32 t;
mul.rn.f16x2 t, $1, $3;
mul.rn.f16x2 $0, t, $2;
}
""")


@triton.jit
def _half_bits(v):
    """fp16 bits of an fp32 value (rounded) as int32 in [0, 65536)."""
    return v.to(tl.float16).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF


@triton.jit
def norm_pair(xw, gw, r, NORM: tl.constexpr, USE_ASM: tl.constexpr):
    """One half2 word of h normalised: fp16(g * fp16(h * r)) per lane (r from norm_scale, broadcast). Mode 2: r is
    fp16 (an fp16 pair word on CUDA)."""
    if USE_ASM and NORM == 2:
        out = tl.inline_asm_elementwise(_NORM_FAST_PTX, "=r,r,r,r", [xw, gw, r], dtype=tl.int32, is_pure=True,
                                        pack=1)  # fmt: skip
    elif USE_ASM:
        out = tl.inline_asm_elementwise(_NORM_PTX, "=r,r,r,f", [xw, gw, r], dtype=tl.int32, is_pure=True, pack=1)
    else:
        lo = (_lo_f32(xw) * r).to(tl.float16).to(tl.float32) * _lo_f32(gw)
        hi = (_hi_f32(xw) * r).to(tl.float16).to(tl.float32) * _hi_f32(gw)
        out = _half_bits(lo) | (_half_bits(hi) << 16)
    return out


@triton.jit
def norm_chunks(xs, gs, r, NORM: tl.constexpr, USE_ASM: tl.constexpr):
    """The 4 x 4 x pairs of a K tile (quant_hgemvr._x_chunks) normalised with the norm weight's pairs gs."""
    return ((norm_pair(xs[0][0], gs[0][0], r, NORM, USE_ASM), norm_pair(xs[0][1], gs[0][1], r, NORM, USE_ASM),
             norm_pair(xs[0][2], gs[0][2], r, NORM, USE_ASM), norm_pair(xs[0][3], gs[0][3], r, NORM, USE_ASM)),
            (norm_pair(xs[1][0], gs[1][0], r, NORM, USE_ASM), norm_pair(xs[1][1], gs[1][1], r, NORM, USE_ASM),
             norm_pair(xs[1][2], gs[1][2], r, NORM, USE_ASM), norm_pair(xs[1][3], gs[1][3], r, NORM, USE_ASM)),
            (norm_pair(xs[2][0], gs[2][0], r, NORM, USE_ASM), norm_pair(xs[2][1], gs[2][1], r, NORM, USE_ASM),
             norm_pair(xs[2][2], gs[2][2], r, NORM, USE_ASM), norm_pair(xs[2][3], gs[2][3], r, NORM, USE_ASM)),
            (norm_pair(xs[3][0], gs[3][0], r, NORM, USE_ASM), norm_pair(xs[3][1], gs[3][1], r, NORM, USE_ASM),
             norm_pair(xs[3][2], gs[3][2], r, NORM, USE_ASM), norm_pair(xs[3][3], gs[3][3], r, NORM, USE_ASM)))  # fmt: skip


@triton.jit
def norm_scale(ss_ptr, offs_m, K, eps, NORM: tl.constexpr, USE_ASM: tl.constexpr):
    """r [BM, 1, 1] of rows offs_m (in range) from their sum-of-squares slots, as fused_norm computes it; read after
    the PDL wait. Mode 2: rounded to fp16 (on CUDA as the pair word (r, r)). Without NORM a placeholder."""
    if NORM:
        r = 1.0 / tl.sqrt(tl.load(ss_ptr + offs_m) / K + eps)
        if NORM == 2:
            if USE_ASM:
                r = _half_bits(r) * 0x10001
            else:
                r = r.to(tl.float16).to(tl.float32)
    else:
        r = 0.0
    return r


@triton.jit
def _add_residual(total, h_old, h_ptrs, mask, ss_ptrs, m_ok):
    """h = fp16(h_old + fp16(total)) written in place; sum(h32^2) of the tile's columns added into each row's slot."""
    dt = h_ptrs.dtype.element_ty
    o = total.to(dt).to(tl.float32)
    h = (h_old.to(tl.float32) + o).to(dt)
    tl.store(h_ptrs, h, mask=mask)
    h32 = tl.where(mask, h.to(tl.float32), 0.0)
    ss = tl.sum(h32 * h32, axis=2, keep_dims=True)  # [BM, 1, 1]
    tl.atomic_add(ss_ptrs, ss, mask=m_ok, sem="relaxed")


@triton.jit
def store_residual(acc, SCALE: tl.constexpr, offs_m, m_ok, offs_n, mask_n, h_ptr, stride_hm, ws_ptr, N, cnt_ptr,
                   pid_m, pid_n, SPLIT_K, ss_ptr, USE_SPLIT: tl.constexpr):  # fmt: skip
    """The half2 GEMVs' end with the residual epilogue (module docstring): acc [BM, R, BN] (carrying 1/SCALE) through
    quant_common.store_tile's self-cleaning split-K protocol, the finishing program adding into h and the slots."""
    out = tl.sum(acc, axis=1, keep_dims=True) * SCALE  # [BM, 1, BN]
    mask = m_ok & mask_n
    h_ptrs = h_ptr + offs_m * stride_hm + offs_n
    ss_ptrs = ss_ptr + offs_m
    h_old = tl.load(h_ptrs, mask=mask, other=0.0)  # by every program, before the arrival: off the last one's path
    if USE_SPLIT:
        ws_ptrs = ws_ptr + offs_m * N + offs_n
        tl.atomic_add(ws_ptrs, out, mask=mask, sem="relaxed")
        tl.debug_barrier()
        tile = pid_m * tl.num_programs(0) + pid_n
        arrived = tl.atomic_add(cnt_ptr + tile, 1, sem="acq_rel")
        if arrived == SPLIT_K - 1:
            bits = tl.atomic_xchg(ws_ptrs.to(tl.pointer_type(tl.int32)), tl.zeros(out.shape, tl.int32), mask=mask,
                                  sem="relaxed")  # read + clear in one op (quant_common.store_tile)  # fmt: skip
            _add_residual(bits.to(tl.float32, bitcast=True), h_old, h_ptrs, mask, ss_ptrs, m_ok)
            tl.store(cnt_ptr + tile, 0)
    else:
        _add_residual(out, h_old, h_ptrs, mask, ss_ptrs, m_ok)
