"""Half2 GEMV for 4-bit GPTQ weights, M = 1..16 rows, fp16 activations, standard layout (no repacking).

Why: at M <= 16 the product is a stream of 4-bit words, and the old fp32 GEMV spends ~6 instructions per
weight (SASS count), which keeps it issue bound at ~3x the DRAM time. Here one packed word (8 weights)
costs 9 instructions to dequantize and 7 per row of x to use, all in half2:

    a0 = lop3(w, 0x000f000f, 0x64006400)       # fp16 pair (1024 + q0, 1024 + q4), exact
    a1 = lop3(w, 0x00f000f0, 0x64006400)       # (1024 + 16 q1, 1024 + 16 q5)
    a2, a3: the same on w >> 8                 # (q2, q6), (q3, q7)
    t0 = a0 * 2^-8  - (4    + z/256)           # (q - z) / 256, exact (HFMA2)
    t1 = a1 * 2^-12 - (0.25 + z/256)           # (q - z) / 256, exact
    p  = t0*x04 + t1*x15 + t2*x26 + t3*x37     # 4 HFMA2: two fp16 sums of 4 products
    acc += float(p.lo + p.hi) * s              # HADD2, convert, FFMA into fp32 (x 256 once, at the end)

x04 = (x[k], x[k+4]) etc. are built once per word row and shared by all the columns a thread holds. The
2^-8 pre-scale makes fp16 overflow impossible (|q - z| <= 16: |sum of 8 products| <= 65504/2) and
the fp16 sums are only 8 terms long before they go to fp32 (relative error ~2e-4, below fp16 output
rounding). The weight tile is read once for all BLOCK_M rows of x (the old GEMV re-read it per row).
Layout: every tensor is 3D [BLOCK_M, R, BLOCK_N] and x, scales and zeros are loaded through PTX, so the
only Triton load (the words, 16 bytes per thread) sets the register layout and nothing is converted.

The PTX path runs on CUDA; under TRITON_INTERPRET the same bit-level steps (pairs, magic constants,
zero constants) run as Triton integer/float ops in fp32, so the CPU tests check the plumbing.
Split-K partials meet in the shared self-cleaning epilogue (quant_common.store_tile).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .gptq_packing import GPTQWeight
from .pdl import gdc_late, gdc_start, gdc_wait_first, gdc_wait_prefetched, launch_kw
from .quant_common import split_launch, store_tile


def deq_half2_ptx(k0: int, k1: int) -> str:
    """PTX of the 4-bit dequant: 4 LOP3 + SHF make the fp16 pairs (1024 + q) of fields (0,4), (2,6) and (1024 + 16 q)
    of (1,5), (3,7); one HFMA2 each scales them by the half2 constants k0 / k1 and adds the zero words $5 / $6."""
    return f"""
{{
.reg .b32 w2, m0, m1, k0, k1;
mov.b32 m0, 0x000f000f;
mov.b32 m1, 0x00f000f0;
lop3.b32 $0, $4, m0, 0x64006400, 0xea;
lop3.b32 $1, $4, m1, 0x64006400, 0xea;
shr.u32 w2, $4, 8;
lop3.b32 $2, w2, m0, 0x64006400, 0xea;
lop3.b32 $3, w2, m1, 0x64006400, 0xea;
mov.b32 k0, {k0:#010x};
mov.b32 k1, {k1:#010x};
fma.rn.f16x2 $0, $0, k0, $5;
fma.rn.f16x2 $1, $1, k1, $6;
fma.rn.f16x2 $2, $2, k0, $5;
fma.rn.f16x2 $3, $3, k1, $6;
}}
"""


def dot_half2_ptx(n: int) -> str:
    """PTX of acc + s * (t . x) over n half2 pairs ($1..$n times $n+1..$2n): an fp16 chain of n HFMA2, the two
    halves added in fp16, then one FFMA into fp32 ($2n+1 = s, $2n+2 = acc)."""
    chain = "".join(f"fma.rn.f16x2 p, ${i}, ${n + i}, p;\n" for i in range(2, n + 1))
    return f"""
{{
.reg .b32 p;
.reg .f16 h0, h1;
.reg .f32 f;
mul.rn.f16x2 p, $1, ${n + 1};
{chain}mov.b32 {{h0, h1}}, p;
add.rn.f16 h0, h0, h1;
cvt.f32.f16 f, h0;
fma.rn.f32 $0, f, ${2 * n + 1}, ${2 * n + 2};
}}
"""


_DEQ_PTX = tl.constexpr(deq_half2_ptx(0x1C001C00, 0x0C000C00))  # (q - z) / 256: scales 2^-8, 2^-12
_DOT_PTX = tl.constexpr(dot_half2_ptx(4))


_LD32_PTX = tl.constexpr("""
{
.reg .pred p;
setp.ne.b32 p, $2, 0;
@p ld.global.b32 $0, [$1];
@!p mov.b32 $0, 0;
}
""")

_LD16_PTX = tl.constexpr("""
{
.reg .pred p;
setp.ne.b32 p, $2, 0;
@p ld.global.b16 $0, [$1];
@!p mov.b16 $0, 0;
}
""")

_XLOAD_PTX = tl.constexpr("""
{
.reg .pred p;
.reg .b32 a, b, c, d;
setp.ne.b32 p, $5, 0;
mov.b32 a, 0;
mov.b32 b, 0;
mov.b32 c, 0;
mov.b32 d, 0;
@p ld.global.v4.b32 {a, b, c, d}, [$4];
prmt.b32 $0, a, c, 0x5410;
prmt.b32 $1, a, c, 0x7632;
prmt.b32 $2, b, d, 0x5410;
prmt.b32 $3, b, d, 0x7632;
}
""")

@triton.jit
def _lo_f32(v):
    """float of the low fp16 half of an int32 word."""
    return (v & 0xFFFF).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def _hi_f32(v):
    """float of the high fp16 half of an int32 word."""
    return ((v >> 16) & 0xFFFF).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def _pairs(lo, hi):
    """(lo.x, hi.x) and (lo.y, hi.y) of two half2 words (what prmt 0x5410 and 0x7632 give)."""
    return (lo & 0xFFFF) | (hi << 16), ((lo >> 16) & 0xFFFF) | (hi & -65536)


@triton.jit
def _x_at(x16, perm_ptr, kr, j: tl.constexpr, mask, k_ok):
    """fp16 bits of x[m, perm[kr + j]] as int32 in [0, 65536)."""
    kk = tl.load(perm_ptr + kr + j, mask=k_ok, other=0)
    return tl.load(x16 + kk, mask=mask, other=0).to(tl.int32) & 0xFFFF


@triton.jit
def _x_words(x_ptr, perm_ptr, m_offs, m_ok, kr, k_ok, stride_xm, HAS_PERM: tl.constexpr, USE_ASM: tl.constexpr):
    """For word rows starting at K index kr ([BM, R] int32): the half2 pairs (x[k], x[k+4]) for k = kr..kr+3."""
    mask = m_ok & k_ok
    if HAS_PERM:  # gather 8 fp16 values through perm and pair them
        x16 = x_ptr.to(tl.pointer_type(tl.int16), bitcast=True) + m_offs * stride_xm
        x04 = _x_at(x16, perm_ptr, kr, 0, mask, k_ok) | (_x_at(x16, perm_ptr, kr, 4, mask, k_ok) << 16)
        x15 = _x_at(x16, perm_ptr, kr, 1, mask, k_ok) | (_x_at(x16, perm_ptr, kr, 5, mask, k_ok) << 16)
        x26 = _x_at(x16, perm_ptr, kr, 2, mask, k_ok) | (_x_at(x16, perm_ptr, kr, 6, mask, k_ok) << 16)
        x37 = _x_at(x16, perm_ptr, kr, 3, mask, k_ok) | (_x_at(x16, perm_ptr, kr, 7, mask, k_ok) << 16)
    elif USE_ASM:  # one 16-byte load (x0..x7) per word row, re-paired with prmt; an asm load is no layout
        # anchor, so it runs in the word tile's layout (each thread loads only its own rows)
        x32 = x_ptr.to(tl.pointer_type(tl.int32), bitcast=True) + m_offs * (stride_xm // 2) + kr // 2
        x04, x15, x26, x37 = tl.inline_asm_elementwise(_XLOAD_PTX, "=r,=r,=r,=r,l,r", [x32, mask.to(tl.int32)],
                                                       dtype=(tl.int32, tl.int32, tl.int32, tl.int32),
                                                       is_pure=True, pack=1)  # fmt: skip
    else:  # natural pairs (x0,x1) (x2,x3) (x4,x5) (x6,x7), re-paired as prmt 0x5410 / 0x7632 would
        x32 = x_ptr.to(tl.pointer_type(tl.int32), bitcast=True) + m_offs * (stride_xm // 2) + kr // 2
        xa = tl.load(x32, mask=mask, other=0)
        xb = tl.load(x32 + 1, mask=mask, other=0)
        xc = tl.load(x32 + 2, mask=mask, other=0)
        xd = tl.load(x32 + 3, mask=mask, other=0)
        x04, x15 = _pairs(xa, xc)
        x26, x37 = _pairs(xb, xd)
    return x04, x15, x26, x37


@triton.jit
def _dequant(w, c0, c1, USE_ASM: tl.constexpr):
    """(q - z) / 256 of the 8 fields of each word as 4 half2 words: fields (0,4), (1,5), (2,6), (3,7)."""
    if USE_ASM:
        t0, t1, t2, t3 = tl.inline_asm_elementwise(_DEQ_PTX, "=&r,=&r,=&r,=&r,r,r,r", [w, c0, c1],
                                                   dtype=(tl.int32, tl.int32, tl.int32, tl.int32), is_pure=True,
                                                   pack=1)  # fmt: skip
    else:  # the same bit-level steps; each half2 is returned as two fp32 values packed back to fp16 bits
        w2 = (w >> 8) & 0x00FFFFFF
        t0 = _fma_half2((w & 0x000F000F) | 0x64006400, 0.00390625, 0.00390625, c0)
        t1 = _fma_half2((w & 0x00F000F0) | 0x64006400, 0.000244140625, 0.000244140625, c1)
        t2 = _fma_half2((w2 & 0x000F000F) | 0x64006400, 0.00390625, 0.00390625, c0)
        t3 = _fma_half2((w2 & 0x00F000F0) | 0x64006400, 0.000244140625, 0.000244140625, c1)
    return t0, t1, t2, t3


@triton.jit
def _fma_half2(a, k_lo, k_hi, c):
    """half2 a * (k_lo, k_hi) + c (c: half2 word) as fp32 steps, exact here; result as a half2 word."""
    lo = _lo_f32(a) * k_lo + _lo_f32(c)
    hi = _hi_f32(a) * k_hi + _hi_f32(c)
    lo16 = lo.to(tl.float16).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
    hi16 = hi.to(tl.float16).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
    return lo16 | (hi16 << 16)


@triton.jit
def _dot(t0, t1, t2, t3, x04, x15, x26, x37, s, acc, USE_ASM: tl.constexpr):
    """acc + s * (t . x) over the 8 fields (4 half2 products, two fp16 sums of 4, then fp32)."""
    if USE_ASM:
        out = tl.inline_asm_elementwise(_DOT_PTX, "=f,r,r,r,r,r,r,r,r,f,f", [t0, t1, t2, t3, x04, x15, x26, x37, s, acc],
                                        dtype=tl.float32, is_pure=True, pack=1)  # fmt: skip
    else:
        p = _lo_f32(t0) * _lo_f32(x04) + _hi_f32(t0) * _hi_f32(x04) + _lo_f32(t1) * _lo_f32(x15)
        p += _hi_f32(t1) * _hi_f32(x15) + _lo_f32(t2) * _lo_f32(x26) + _hi_f32(t2) * _hi_f32(x26)
        p += _lo_f32(t3) * _lo_f32(x37) + _hi_f32(t3) * _hi_f32(x37)
        out = acc + p * s
    return out


@triton.jit
def _load_small(ptrs, mask, USE_ASM: tl.constexpr):
    """tl.load(ptrs, mask, other=0) for the per-column scale and zero vectors. On CUDA through PTX: a
    Triton load would be a layout anchor with one column per thread and pull the whole tile into it."""
    if USE_ASM:
        if ptrs.dtype.element_ty == tl.float16:
            v = tl.inline_asm_elementwise(_LD16_PTX, "=h,l,r", [ptrs, mask.to(tl.int32)], dtype=tl.float16,
                                          is_pure=True, pack=1)  # fmt: skip
        else:
            v = tl.inline_asm_elementwise(_LD32_PTX, "=r,l,r", [ptrs, mask.to(tl.int32)], dtype=tl.int32,
                                          is_pure=True, pack=1)  # fmt: skip
    else:
        v = tl.load(ptrs, mask=mask, other=0)
    return v


@triton.jit
def _zero4(qz_ptr, g, offs_n, mask_n, stride_zg, stride_zn, USE_ASM: tl.constexpr):
    """Stored 4-bit zero points of group g for columns offs_n, as int32 (8 per word along N)."""
    word = _load_small(qz_ptr + g * stride_zg + (offs_n // 8) * stride_zn, mask_n, USE_ASM)
    return (word >> ((offs_n % 8) * 4)) & 0xF


@triton.jit
def _fetch(kt, k_ok, x_ptr, sc_ptr, qz_ptr, perm_ptr, offs_m, m_ok, offs_n, mask_n, offs_r,
           stride_xm, stride_sg, stride_sn, stride_zg, stride_zn,
           GROUP: tl.constexpr, SYM: tl.constexpr, ZERO_OFFSET: tl.constexpr, HAS_PERM: tl.constexpr,
           USE_ASM: tl.constexpr):  # fmt: skip
    """The small operands of the K tile at row kt: scales, the two zero constants, x's half2 pairs."""
    k0 = tl.where(k_ok, kt, 0)
    g = k0 // GROUP
    s = _load_small(sc_ptr + g * stride_sg + offs_n * stride_sn, mask_n, USE_ASM).to(tl.float32)
    # zero constants as half2 bit patterns: fp16(-(4 + z/256)) = 0xC400 + z, fp16(-(0.25 + z/256)) = 0xB400 + 16 z
    if SYM:
        z = tl.full(offs_n.shape, 8, tl.int32)
    else:
        z = _zero4(qz_ptr, g, offs_n, mask_n, stride_zg, stride_zn, USE_ASM) + ZERO_OFFSET
    c0 = z * 0x10001 + (0xC400C400 - 2**32)
    c1 = z * 0x100010 + (0xB400B400 - 2**32)
    kr = k0 + offs_r * 8  # [1, R, 1]
    x04, x15, x26, x37 = _x_words(x_ptr, perm_ptr, offs_m, m_ok, kr, k_ok, stride_xm, HAS_PERM, USE_ASM)
    return s, c0, c1, x04, x15, x26, x37


@triton.jit
def _use(acc, w, s, c0, c1, x04, x15, x26, x37, USE_ASM: tl.constexpr):
    """acc + the products of one weight tile (words w) with BLOCK_M rows of x (operands from _fetch)."""
    t0, t1, t2, t3 = _dequant(w, c0, c1, USE_ASM)  # [1, R, BN], shared by the BLOCK_M rows
    return _dot(t0, t1, t2, t3, x04, x15, x26, x37, s, acc, USE_ASM)


@triton.jit
def _tile(acc, w, kt, k_ok, x_ptr, sc_ptr, qz_ptr, perm_ptr, offs_m, m_ok, offs_n, mask_n, offs_r,
          stride_xm, stride_sg, stride_sn, stride_zg, stride_zn,
          GROUP: tl.constexpr, SYM: tl.constexpr, ZERO_OFFSET: tl.constexpr, HAS_PERM: tl.constexpr,
          USE_ASM: tl.constexpr):  # fmt: skip
    """acc + the products of one [BLOCK_K, BLOCK_N] weight tile (words w, rows from kt) with BLOCK_M rows of x."""
    s, c0, c1, x04, x15, x26, x37 = _fetch(kt, k_ok, x_ptr, sc_ptr, qz_ptr, perm_ptr, offs_m, m_ok, offs_n, mask_n,
                                           offs_r, stride_xm, stride_sg, stride_sn, stride_zg, stride_zn,
                                           GROUP, SYM, ZERO_OFFSET, HAS_PERM, USE_ASM)  # fmt: skip
    return _use(acc, w, s, c0, c1, x04, x15, x26, x37, USE_ASM)


@triton.jit
def _hgemv_kernel(
    x_ptr, qw_ptr, sc_ptr, qz_ptr, perm_ptr, y_ptr, ws_ptr, cnt_ptr,
    M, N, K, ZW, ITERS, SPLIT_K,
    stride_xm, stride_xk, stride_qk, stride_qn, stride_sg, stride_sn, stride_zg, stride_zn, stride_ym, stride_yn,
    GROUP: tl.constexpr, SYM: tl.constexpr, ZERO_OFFSET: tl.constexpr,
    HAS_PERM: tl.constexpr, USE_SPLIT: tl.constexpr, USE_ASM: tl.constexpr,
    SINGLE: tl.constexpr, PIPE: tl.constexpr, STAGES: tl.constexpr, AHEAD: tl.constexpr, WORD_POLICY: tl.constexpr,
    BURST: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    USE_GDC: tl.constexpr = 0,
):  # fmt: skip
    gdc_start(USE_GDC)  # PDL (kernels.pdl): dependents may launch; the first words load before the wait below
    gdc_wait_first(USE_GDC)
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_m = tl.program_id(2)
    R: tl.constexpr = BLOCK_K // 8
    # everything is 3D [BLOCK_M, R, BLOCK_N] (size-1 axes broadcast) so all values share the word load's layout
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)[None, None, :]  # [1, 1, BN]
    mask_n = offs_n < N
    offs_r = tl.arange(0, R)[None, :, None]  # [1, R, 1]
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)[:, None, None]  # [BM, 1, 1]
    m_ok = offs_m < M
    k_first = pid_k * (ITERS * BLOCK_K)
    w_ptrs = qw_ptr + (k_first // 8 + offs_r) * stride_qk + offs_n * stride_qn  # [1, R, BN]
    w_step = R * stride_qk
    nxt = tl.load(w_ptrs, mask=mask_n & (k_first < K), other=0)
    gdc_wait_prefetched(USE_GDC)
    # zeros derived from the load, so the accumulator takes the load's (coalesced) register layout
    acc = tl.zeros((BLOCK_M, R, BLOCK_N), dtype=tl.float32) + (nxt & 0).to(tl.float32)
    if SINGLE:  # one K tile per program: no second buffer (fewer registers, more programs per SM)
        acc = _tile(acc, nxt, k_first, k_first < K, x_ptr, sc_ptr, qz_ptr, perm_ptr, offs_m, m_ok, offs_n, mask_n,
                    offs_r, stride_xm, stride_sg, stride_sn, stride_zg, stride_zn,
                    GROUP, SYM, ZERO_OFFSET, HAS_PERM, USE_ASM)  # fmt: skip
    elif BURST > 0:  # v6: all of a program's K tiles (2..4) in flight at once: every word tile is loaded, then
        # every tile's scales, zeros and x, and only then is anything used (the v6 read sweep's fastest pattern:
        # many small programs, each with all its loads issued up front; bench/kernels/NOTES.md v6)
        k1 = k_first + BLOCK_K
        w1 = tl.load(w_ptrs + w_step, mask=mask_n & (k1 < K) & (1 < ITERS), other=0)
        if BURST >= 3:
            k2 = k_first + 2 * BLOCK_K
            w2 = tl.load(w_ptrs + 2 * w_step, mask=mask_n & (k2 < K) & (2 < ITERS), other=0)
        if BURST >= 4:
            k3 = k_first + 3 * BLOCK_K
            w3 = tl.load(w_ptrs + 3 * w_step, mask=mask_n & (k3 < K) & (3 < ITERS), other=0)
        f0 = _fetch(k_first, k_first < K, x_ptr, sc_ptr, qz_ptr, perm_ptr, offs_m, m_ok, offs_n, mask_n, offs_r,
                    stride_xm, stride_sg, stride_sn, stride_zg, stride_zn, GROUP, SYM, ZERO_OFFSET, HAS_PERM, USE_ASM)  # fmt: skip
        f1 = _fetch(k1, (k1 < K) & (1 < ITERS), x_ptr, sc_ptr, qz_ptr, perm_ptr, offs_m, m_ok, offs_n, mask_n,
                    offs_r, stride_xm, stride_sg, stride_sn, stride_zg, stride_zn, GROUP, SYM, ZERO_OFFSET, HAS_PERM,
                    USE_ASM)  # fmt: skip
        if BURST >= 3:
            f2 = _fetch(k2, (k2 < K) & (2 < ITERS), x_ptr, sc_ptr, qz_ptr, perm_ptr, offs_m, m_ok, offs_n, mask_n,
                        offs_r, stride_xm, stride_sg, stride_sn, stride_zg, stride_zn, GROUP, SYM, ZERO_OFFSET,
                        HAS_PERM, USE_ASM)  # fmt: skip
        if BURST >= 4:
            f3 = _fetch(k3, (k3 < K) & (3 < ITERS), x_ptr, sc_ptr, qz_ptr, perm_ptr, offs_m, m_ok, offs_n, mask_n,
                        offs_r, stride_xm, stride_sg, stride_sn, stride_zg, stride_zn, GROUP, SYM, ZERO_OFFSET,
                        HAS_PERM, USE_ASM)  # fmt: skip
        # a tile past K or past this program's ITERS has x = 0 (masked), so it adds exactly 0
        acc = _use(acc, nxt, f0[0], f0[1], f0[2], f0[3], f0[4], f0[5], f0[6], USE_ASM)
        acc = _use(acc, w1, f1[0], f1[1], f1[2], f1[3], f1[4], f1[5], f1[6], USE_ASM)
        if BURST >= 3:
            acc = _use(acc, w2, f2[0], f2[1], f2[2], f2[3], f2[4], f2[5], f2[6], USE_ASM)
        if BURST >= 4:
            acc = _use(acc, w3, f3[0], f3[1], f3[2], f3[3], f3[4], f3[5], f3[6], USE_ASM)
    elif PIPE:  # Triton's software pipeliner keeps num_stages - 1 tiles in flight (cp.async into shared memory)
        for it in tl.range(0, ITERS, num_stages=STAGES):
            kt = k_first + it * BLOCK_K
            w = tl.load(w_ptrs + it * w_step, mask=mask_n & (kt < K), other=0)
            acc = _tile(acc, w, kt, kt < K, x_ptr, sc_ptr, qz_ptr, perm_ptr, offs_m, m_ok, offs_n, mask_n,
                        offs_r, stride_xm, stride_sg, stride_sn, stride_zg, stride_zn,
                        GROUP, SYM, ZERO_OFFSET, HAS_PERM, USE_ASM)  # fmt: skip
    elif AHEAD > 0:  # v5: the words AND x, scales, zeros of the next AHEAD tiles wait in registers
        # the loop runs this program's own tiles only (no K masks); look-ahead past them re-reads its last tile
        last = k_first + (tl.minimum(ITERS, K // BLOCK_K - pid_k * ITERS) - 1) * BLOCK_K
        w_base = w_ptrs - (k_first // 8) * stride_qk
        wa = nxt
        sa, c0a, c1a, x0a, x1a, x2a, x3a = _fetch(k_first, k_first < K, x_ptr, sc_ptr, qz_ptr, perm_ptr, offs_m, m_ok,
                                                  offs_n, mask_n, offs_r, stride_xm, stride_sg, stride_sn, stride_zg,
                                                  stride_zn, GROUP, SYM, ZERO_OFFSET, HAS_PERM, USE_ASM)  # fmt: skip
        if AHEAD == 2:
            kb = tl.minimum(k_first + BLOCK_K, last)
            wb = tl.load(w_base + (kb // 8) * stride_qk, mask=mask_n, other=0, eviction_policy=WORD_POLICY)
            sb, c0b, c1b, x0b, x1b, x2b, x3b = _fetch(kb, kb < K, x_ptr, sc_ptr, qz_ptr, perm_ptr, offs_m, m_ok, offs_n,
                                                      mask_n, offs_r, stride_xm, stride_sg, stride_sn, stride_zg,
                                                      stride_zn, GROUP, SYM, ZERO_OFFSET, HAS_PERM, USE_ASM)  # fmt: skip
        for it in range(k_first, last + 1, BLOCK_K):
            kn = tl.minimum(it + AHEAD * BLOCK_K, last)
            wn = tl.load(w_base + (kn // 8) * stride_qk, mask=mask_n, other=0, eviction_policy=WORD_POLICY)
            sn, c0n, c1n, x0n, x1n, x2n, x3n = _fetch(kn, kn < K, x_ptr, sc_ptr, qz_ptr, perm_ptr, offs_m, m_ok, offs_n,
                                                      mask_n, offs_r, stride_xm, stride_sg, stride_sn, stride_zg,
                                                      stride_zn, GROUP, SYM, ZERO_OFFSET, HAS_PERM, USE_ASM)  # fmt: skip
            acc = _use(acc, wa, sa, c0a, c1a, x0a, x1a, x2a, x3a, USE_ASM)
            if AHEAD == 2:
                wa, sa, c0a, c1a, x0a, x1a, x2a, x3a = wb, sb, c0b, c1b, x0b, x1b, x2b, x3b
                wb, sb, c0b, c1b, x0b, x1b, x2b, x3b = wn, sn, c0n, c1n, x0n, x1n, x2n, x3n
            else:
                wa, sa, c0a, c1a, x0a, x1a, x2a, x3a = wn, sn, c0n, c1n, x0n, x1n, x2n, x3n
    else:
        for it in range(0, ITERS):
            kt = k_first + it * BLOCK_K
            w = nxt  # the next tile's words are in flight while this one is computed (register double buffer)
            w_ptrs += w_step
            nxt = tl.load(w_ptrs, mask=mask_n & (kt + BLOCK_K < K) & (it + 1 < ITERS), other=0)
            acc = _tile(acc, w, kt, kt < K, x_ptr, sc_ptr, qz_ptr, perm_ptr, offs_m, m_ok, offs_n, mask_n,
                        offs_r, stride_xm, stride_sg, stride_sn, stride_zg, stride_zn,
                        GROUP, SYM, ZERO_OFFSET, HAS_PERM, USE_ASM)  # fmt: skip

    gdc_late(USE_GDC)
    store_rows(acc, 256.0, offs_m, m_ok, offs_n, mask_n, y_ptr, stride_ym, stride_yn, ws_ptr, N, cnt_ptr, pid_m, pid_n,
               SPLIT_K, USE_SPLIT)  # fmt: skip


@triton.jit
def store_rows(acc, SCALE: tl.constexpr, offs_m, m_ok, offs_n, mask_n, y_ptr, stride_ym, stride_yn, ws_ptr, N, cnt_ptr,
               pid_m, pid_n, SPLIT_K, USE_SPLIT: tl.constexpr):  # fmt: skip
    """End of the half2 GEMVs: acc [BM, R, BN] summed over its rows R and times SCALE (the products carried a
    1/SCALE) into y[offs_m, offs_n], through the shared self-cleaning split-K epilogue (quant_common.store_tile)."""
    out = tl.sum(acc, axis=1, keep_dims=True) * SCALE  # [BM, 1, BN]
    mask = m_ok & mask_n
    y_ptrs = y_ptr + offs_m * stride_ym + offs_n * stride_yn
    ws_ptrs = ws_ptr + offs_m * N + offs_n
    tile = pid_m * tl.num_programs(0) + pid_n
    store_tile(out, y_ptrs, ws_ptrs, mask, cnt_ptr, tile, SPLIT_K, USE_SPLIT)


def rows16(x2: torch.Tensor) -> torch.Tensor:
    """x2 itself, or a contiguous copy where its rows cannot be read 16 bytes at a time (the GEMVs' x loads)."""
    if x2.stride(1) != 1 or x2.stride(0) % 8 or x2.data_ptr() % 16:
        x2 = x2.clone(memory_format=torch.contiguous_format)
    return x2


def use_asm() -> bool:
    """PTX on CUDA; Triton ops under the interpreter (which cannot run inline assembly)."""
    return os.environ.get("TRITON_INTERPRET", "0") != "1"


def launch_hgemv(x2: torch.Tensor, w: GPTQWeight, block_m: int, block_n: int, block_k: int, split_k: int,
                 num_warps: int, num_stages: int, y: torch.Tensor, ahead: int = 0, word_policy: str = "",
                 burst: bool = False) -> None:  # fmt: skip
    """y[M, N] = x2[M, K] @ W for 4-bit weights and fp16 x; each program serves block_m rows of x.

    ahead 0 (v4): num_stages 1 keeps the next K tile's words in registers (a double buffer), >= 2 lets
    Triton's pipeliner copy num_stages - 1 tiles ahead into shared memory (cp.async). ahead 1 or 2 (v5):
    the words and x, scales, zeros of the next `ahead` tiles are loaded into registers a step early.
    word_policy: the look-ahead loop's cache eviction hint for the streamed words ("" or "evict_first"; an
    ablation of bench/kernels/gemv_h200.py, not a tuning candidate). burst (v6): each program's K tiles (2..4,
    i.e. split_k >= K tiles / 4) are all loaded before any is used; ahead and num_stages are ignored."""
    if w.bits != 4 or x2.dtype != torch.float16:
        raise ValueError("the half2 GEMV takes 4-bit weights and fp16 activations")
    if block_k % 8 or w.group_size % block_k or w.in_features % block_k:
        raise ValueError(f"block_k={block_k} must divide the group ({w.group_size}) and K")
    if ahead not in (0, 1, 2) or word_policy not in ("", "evict_first"):
        raise ValueError(f"ahead must be 0, 1 or 2 (got {ahead}), word_policy '' or 'evict_first' (got {word_policy!r})")
    x2 = rows16(x2)
    grid, args, consts = split_launch(x2, w, y, block_m, block_n, block_k, split_k)
    iters = args[12]
    if burst and iters > 4:
        raise ValueError(f"burst takes at most 4 K tiles per program (got {iters}: raise split_k)")
    burst_n = iters if burst and iters > 1 else 0
    ahead = 0 if burst_n else ahead
    stages = 1 if ahead or burst_n else num_stages  # the look-ahead loop is software-pipelined by hand
    _hgemv_kernel[grid](
        *args, **consts, USE_ASM=use_asm(), SINGLE=iters == 1, PIPE=iters > 1 and stages > 1 and not ahead and not burst_n,
        STAGES=max(stages, 1), AHEAD=ahead, WORD_POLICY=word_policy, BURST=burst_n, BLOCK_M=block_m, BLOCK_N=block_n,
        BLOCK_K=block_k, num_warps=num_warps, num_stages=stages, **launch_kw(),
    )  # fmt: skip
