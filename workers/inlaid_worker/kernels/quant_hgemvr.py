"""Row-accumulating half2 GEMV for 4-bit GPTQ weights (v7, kind "hgemvr"), M = 1..4 rows, fp16 x.

quant_hgemv's arithmetic with fewer instructions per packed word (v6: ~23.5 SASS instructions per word at M=1 no
longer hide behind a fast read). Each K tile (one group) is loaded as RI = 4 row chunks [BLOCK_M, RO, BLOCK_N]
(RO = BLOCK_K / 32 word rows; at n64 w2 k128 one 16-byte load per thread per chunk), and a thread's products of
the four chunks are summed in ONE half2 register per column before anything goes to fp32:

    t = dequant(w)                             # as quant_hgemv: 4 LOP3 + SHF + 4 HFMA2, (q - z) / 1024 exact
    p = t0*x04 + t1*x15 + t2*x26 + t3*x37 + p  # 4 HFMA2, chained over the 4 chunks (16 products per lane)
    acc += float(p.lo) * s + float(p.hi) * s   # once per tile: 2 cvt + 2 FFMA per 4 words (v4: 3 per word)

The pre-scale is 2^-10 (quant_hgemv: 2^-8), so no fp16 x can overflow the longer sum: |q - z| <= 16, so
|p| <= 16 * 16 / 1024 * max|x| = max|x| / 4. The fp32 accumulator holds 4 rows per thread instead of 16.
Loop shapes: look-ahead 1 (as quant_hgemv's "hgemvp": the next tile's words, x, scales and zeros are loaded a step
early) or burst (all of a program's 2..4 tiles loaded before any is used, as "hgemvb"). In the sm_90 SASS ptxas
sinks those early loads below the current tile's arithmetic (fewer registers, but one tile in flight per warp);
PIN forbids that with a barrier the arithmetic depends on (_DEP_PTX).
Under TRITON_INTERPRET the same bit-level steps run as Triton integer/float ops (fp32, rounded to fp16 per op).
SWIGLU (launch_hgemvr's `swiglu`): the weight is a gate/up pair and the epilogue writes silu(gate) * up instead of
y (swiglu_epilogue; the "swiglu" decode fusion).
XSUMS (launch_hgemvr's `x_sums`): x = silu(gate) * up is computed on load from a deferred gate/up GEMV's fp32 sums
(_x_sums_load / _x_act: once per value per CTA, then one shared-memory layout conversion to the word rows' threads;
the "+g" decode fusion, consumer_finish.gemv_gu_sums). In the look-ahead loop a tile's x is computed before the next
tile's loads are issued, so the conversion's CTA barriers do not pin those loads (79 registers at the 7B batch-1 down
config, as without XSUMS; after them: 128, two waves). XNORM (launch_hgemvr's `x_norm`): both sums times the deferred
norm's r first (the "+dn2" fusion's down GEMV).
DNORM2 (launch_hgemvr's `dnorm2`; the "+dn2" decode fusion, kernels.deferred_norm.gemv_dnorm2): x is the deferred
RMSNorm's u = fp16(h' w), h' = fp16(h + fp16(sums)) of a producer's fp32 sums, the residual h and the norm weight w,
without r (the consumer of this GEMV's deferred sums applies it); one extra N column of programs stores h' and the
rows' sum(h'^2) (_dn2_rows). Two formations of u, equal bit for bit (launch_hgemvr's `dn2_form`):
- "thread": every thread forms the u pairs of its own x-pair layout where the tile's loads are issued (_dn2_sums /
  _dn2_u; the 16 threads along N that share a word row each form all 16 of its words);
- "shfl" (session 21, bench/results/decode-2026-12-01-s21-dn2shfl.md "mode 7"): lane j of each 16-lane segment loads
  the raw values of pair word j only (two fp32 sums, two h halves, one word of the pair-ordered norm weight), the
  look-ahead carries those 5 registers, and where the tile is used the lane forms its word (cvt / add / mul, the same
  roundings) and 16 shfl.sync give the segment all 16 (_dn2_shfl / _dn2_shfl_form). It relies on the TTGIR layout of x's
  [BM, RO, 1] operands putting one word row on an aligned 16-lane segment (threadsPerWarp [1, 2, 16], N the fastest) and
  never moving them between layouts (shfl_ttgir_problems), launched on CUDA only at the configurations of
  shfl_layout_ok, verified offline (test_dn2_shfl) and at run time once per compiled kernel (verify_shfl_kernel: a
  failure logs an error and sets SHFL_BROKEN, after which shfl_layout_ok holds nowhere and the decode falls back;
  SHFL_STRICT raises instead); the per-lane offsets and orders are ShflPlan's (test_dn2_shfl_emu runs the PTX on the
  CPU); the interpreter computes the per-thread values from the same inputs.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl

from .gptq_packing import GPTQWeight
from .norm_epilogue import norm_chunks, norm_scale, store_residual
from .pdl import gdc_late, gdc_start, gdc_wait, gdc_wait_first, launch_kw
from .quant_common import bucket_workspace, finish_rows, red_tile, split_launch
from .quant_hgemv import _fma_half2, _hi_f32, _lo_f32, _x_words, deq_half2_ptx, rows16, store_rows, use_asm
from .swiglu_epilogue import store_swiglu

log = logging.getLogger(__name__)

_DEQ10_PTX = tl.constexpr(deq_half2_ptx(0x14001400, 0x04000400))  # (q - z) / 1024: 2^-10, 2^-14

_HDOT_PTX = tl.constexpr("""
{
.reg .b32 q;
fma.rn.f16x2 q, $1, $5, $9;
fma.rn.f16x2 q, $2, $6, q;
fma.rn.f16x2 q, $3, $7, q;
fma.rn.f16x2 $0, $4, $8, q;
}
""")

_HFIN_PTX = tl.constexpr("""
{
.reg .f16 h0, h1;
.reg .f32 f0, f1;
mov.b32 {h0, h1}, $1;
cvt.f32.f16 f0, h0;
cvt.f32.f16 f1, h1;
fma.rn.f32 f0, f0, $2, $3;
fma.rn.f32 $0, f1, $2, f0;
}
""")


def _xload4_ptx(chunk_bytes: int) -> str:
    """x pairs (x[k], x[k+4]) .. (x[k+3], x[k+7]) of 4 word rows chunk_bytes apart, one 16-byte load each, unmasked."""
    loads = "".join(f"ld.global.v4.b32 {{a{4 * i}, a{4 * i + 1}, a{4 * i + 2}, a{4 * i + 3}}}, [$16+{i * chunk_bytes}];\n"
                    for i in range(4))  # fmt: skip
    prmt = "".join(f"prmt.b32 ${4 * i}, a{4 * i}, a{4 * i + 2}, 0x5410;\nprmt.b32 ${4 * i + 1}, a{4 * i}, a{4 * i + 2}, 0x7632;\n"
                   f"prmt.b32 ${4 * i + 2}, a{4 * i + 1}, a{4 * i + 3}, 0x5410;\nprmt.b32 ${4 * i + 3}, a{4 * i + 1}, a{4 * i + 3}, 0x7632;\n"
                   for i in range(4))  # fmt: skip
    return "{\n.reg .b32 a<16>;\n" + loads + prmt + "}"


_XLOAD4_RO4 = tl.constexpr(_xload4_ptx(64))  # BLOCK_K 128: chunks of 4 word rows = 32 x values = 64 bytes
_XLOAD4_RO2 = tl.constexpr(_xload4_ptx(32))  # BLOCK_K 64
# PIN: a CTA barrier that returns a value (bar.red.popc: the number of threads, < 2^16, so r >> 16 == 0, which
# ptxas cannot know) added to the zero constants: the tile's arithmetic depends on the barrier, and no global load
# crosses a barrier, so loads issued before it (the next tile's) are in flight during the arithmetic
_DEP_PTX = tl.constexpr("""
{
.reg .pred p;
.reg .b32 r;
setp.ne.b32 p, $8, 0;
bar.red.popc.u32 r, 0, p;
shr.u32 r, r, 16;
add.u32 $0, $8, r;
add.u32 $1, $9, r;
add.u32 $2, $10, r;
add.u32 $3, $11, r;
add.u32 $4, $12, r;
add.u32 $5, $13, r;
add.u32 $6, $14, r;
add.u32 $7, $15, r;
}
""")
_LD32_PLAIN = tl.constexpr("ld.global.b32 $0, [$1];")
_LD16_PLAIN = tl.constexpr("ld.global.b16 $0, [$1];")


@triton.jit
def _hfma2(a, b, c):
    """half2 a * b + c of three half2 words, one rounding per lane (the interpreter's fma.rn.f16x2)."""
    return _fma_half2(a, _lo_f32(b), _hi_f32(b), c)


@triton.jit
def _dequant10(w, c0, c1, USE_ASM: tl.constexpr):
    """(q - z) / 1024 of the 8 fields of each word as 4 half2 words: fields (0,4), (1,5), (2,6), (3,7)."""
    if USE_ASM:
        t0, t1, t2, t3 = tl.inline_asm_elementwise(_DEQ10_PTX, "=&r,=&r,=&r,=&r,r,r,r", [w, c0, c1],
                                                   dtype=(tl.int32, tl.int32, tl.int32, tl.int32), is_pure=True,
                                                   pack=1)  # fmt: skip
    else:
        w2 = (w >> 8) & 0x00FFFFFF
        k0 = 0x14001400
        k1 = 0x04000400
        t0 = _hfma2((w & 0x000F000F) | 0x64006400, k0, c0)
        t1 = _hfma2((w & 0x00F000F0) | 0x64006400, k1, c1)
        t2 = _hfma2((w2 & 0x000F000F) | 0x64006400, k0, c0)
        t3 = _hfma2((w2 & 0x00F000F0) | 0x64006400, k1, c1)
    return t0, t1, t2, t3


@triton.jit
def _hdot(t, xs, p, USE_ASM: tl.constexpr):
    """p + t . x in half2 (4 chained HFMA2): two fp16 running sums per column."""
    if USE_ASM:
        out = tl.inline_asm_elementwise(_HDOT_PTX, "=r,r,r,r,r,r,r,r,r,r",
                                        [t[0], t[1], t[2], t[3], xs[0], xs[1], xs[2], xs[3], p], dtype=tl.int32,
                                        is_pure=True, pack=1)  # fmt: skip
    else:
        out = _hfma2(t[3], xs[3], _hfma2(t[2], xs[2], _hfma2(t[1], xs[1], _hfma2(t[0], xs[0], p))))
    return out


@triton.jit
def _hfin(p, s, acc, USE_ASM: tl.constexpr):
    """acc + float(p.lo) * s + float(p.hi) * s (fp32)."""
    if USE_ASM:
        out = tl.inline_asm_elementwise(_HFIN_PTX, "=f,r,f,f", [p, s, acc], dtype=tl.float32, is_pure=True, pack=1)
    else:
        out = acc + _lo_f32(p) * s
        out = out + _hi_f32(p) * s
    return out


@triton.jit
def _ld_col(ptrs, USE_ASM: tl.constexpr):
    """Unmasked per-column load (pointers clamped in range). On CUDA through PTX, so that it is no layout anchor."""
    if USE_ASM:
        if ptrs.dtype.element_ty == tl.float16:
            v = tl.inline_asm_elementwise(_LD16_PLAIN, "=h,l", [ptrs], dtype=tl.float16, is_pure=True, pack=1)
        else:
            v = tl.inline_asm_elementwise(_LD32_PLAIN, "=r,l", [ptrs], dtype=tl.int32, is_pure=True, pack=1)
    else:
        v = tl.load(ptrs)
    return v


@triton.jit
def _chunks16(v):
    """16 pair words v[4 c + i] as the 4 chunks' (chunk c: pairs i = 0..3), _x_chunks' tuple."""
    return ((v[0], v[1], v[2], v[3]), (v[4], v[5], v[6], v[7]), (v[8], v[9], v[10], v[11]),
            (v[12], v[13], v[14], v[15]))  # fmt: skip


@triton.jit
def _x_chunks(x_ptr, perm_ptr, offs_m, kr, stride_xm, HAS_PERM: tl.constexpr, USE_ASM: tl.constexpr,
              RO: tl.constexpr):  # fmt: skip
    """x pairs of the 4 row chunks of the tile whose chunk-0 rows start at K index kr ([1, RO, 1]); offs_m in range."""
    if USE_ASM and not HAS_PERM:  # one asm: 4 unmasked 16-byte loads at immediate offsets, re-paired with prmt
        x32 = x_ptr.to(tl.pointer_type(tl.int32), bitcast=True) + offs_m * (stride_xm // 2) + kr // 2
        if RO == 4:
            v = tl.inline_asm_elementwise(_XLOAD4_RO4, "=r," * 16 + "l", [x32], dtype=(tl.int32,) * 16,
                                          is_pure=True, pack=1)  # fmt: skip
        else:
            v = tl.inline_asm_elementwise(_XLOAD4_RO2, "=r," * 16 + "l", [x32], dtype=(tl.int32,) * 16,
                                          is_pure=True, pack=1)  # fmt: skip
        xs = _chunks16(v)
    else:
        ok = offs_m >= 0
        xs = (_x_words(x_ptr, perm_ptr, offs_m, ok, kr, ok, stride_xm, HAS_PERM, USE_ASM),
              _x_words(x_ptr, perm_ptr, offs_m, ok, kr + RO * 8, ok, stride_xm, HAS_PERM, USE_ASM),
              _x_words(x_ptr, perm_ptr, offs_m, ok, kr + 2 * RO * 8, ok, stride_xm, HAS_PERM, USE_ASM),
              _x_words(x_ptr, perm_ptr, offs_m, ok, kr + 3 * RO * 8, ok, stride_xm, HAS_PERM, USE_ASM))  # fmt: skip
    return xs


@triton.jit
def _split_last(t):
    """The two halves of t's last dimension (size 2), that dimension dropped."""
    a, b = tl.split(t)
    return a, b


@triton.jit
def _x_sums_load(s_ptr, offs_m, kt, stride_sm, INTER, RO: tl.constexpr):
    """The fp32 gate and up sums of the K tile at row kt, for _x_act (XSUMS, the "+g" decode fusion:
    kernels.consumer_finish.gemv_gu_sums): gate k at s_ptr[m * stride_sm + k], up k at + INTER; as
    [BM, 2, 2, RO, 2, 2, 2] (chunk c = 2 c1 + c0, word row, field h * 4 + i1 * 2 + i0), the tile's BLOCK_K values
    spread over the CTA (each loaded once). Raw loads: a look-ahead tile carries them, _use_r converts them."""
    c1 = tl.arange(0, 2)[None, :, None, None, None, None, None]
    c0 = tl.arange(0, 2)[None, None, :, None, None, None, None]
    ro = tl.arange(0, RO)[None, None, None, :, None, None, None]
    hh = tl.arange(0, 2)[None, None, None, None, :, None, None]
    i1 = tl.arange(0, 2)[None, None, None, None, None, :, None]
    i0 = tl.arange(0, 2)[None, None, None, None, None, None, :]
    k = kt + ((c1 * 2 + c0) * RO + ro) * 8 + hh * 4 + i1 * 2 + i0
    ptrs = s_ptr + offs_m.reshape(offs_m.shape[0], 1, 1, 1, 1, 1, 1) * stride_sm + k
    return tl.load(ptrs), tl.load(ptrs + INTER)


@triton.jit
def _x_act(g, u, USE_ASM: tl.constexpr, rn=1.0, XNORM: tl.constexpr = 0):
    """The x pairs of a tile (what _x_chunks returns) from _x_sums_load's sums: x = silu(gate) * up with
    swiglu_epilogue.store_swiglu's rounding (each sum rounded to fp16; silu in fp32 rounded to fp16; the product in
    fp32 rounded to fp16), computed once per value (the CTA's layout of the loads) and packed into the natural half2
    words (x[2 j], x[2 j + 1]) where they are computed; the words go to their word row's threads (one layout
    conversion through shared memory: 64 words of a BLOCK_K 128 tile, 16 a thread after it), which re-pair them as
    _x_words's prmt does ((x[i], x[4 + i]) per word row) and split them into the per-chunk pair words [BM, RO, 1].
    XNORM: both sums times rn (the deferred norm's r, [BM, 1, 1, 1, 1, 1, 1]) before their rounding."""
    if XNORM:  # ("+dn2": the gate / up GEMV ran on u = h' w, its sums carry no r yet)
        g = g * rn
        u = u * rn
    g = g.to(tl.float16).to(tl.float32)  # gate_up's rounding
    u = u.to(tl.float16).to(tl.float32)
    act = (g / (1.0 + tl.exp(-g))).to(tl.float16).to(tl.float32)  # silu rounded like F.silu (kernels.silu_mul)
    bits = (act * u).to(tl.float16).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
    lo, hi = _split_last(bits)  # [BM, c1, c0, RO, h, i1] each, field 4 h + 2 i1 + (0 / 1)
    nat = lo | (hi << 16)  # the natural word j = 2 h + i1: (x[2 j], x[2 j + 1])
    if USE_ASM:  # (an opaque copy: the layout conversion stays after the packing, 16 words a thread, not 32 halves)
        nat = tl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r", [nat], dtype=tl.int32, is_pure=False, pack=1)
    n_0, n_1 = _split_last(nat)  # i1 = 0, 1: [BM, c1, c0, RO, h]
    w0, w2 = _split_last(n_0)  # j = 0, 2 (h = 0, 1)
    w1, w3 = _split_last(n_1)  # j = 1, 3
    ca = _split_last(tl.permute(w0, (0, 3, 1, 2)))  # [BM, RO, c1] for c0 = 0, 1
    cb = _split_last(tl.permute(w1, (0, 3, 1, 2)))
    cc = _split_last(tl.permute(w2, (0, 3, 1, 2)))
    cd = _split_last(tl.permute(w3, (0, 3, 1, 2)))
    a0, a2 = _split_last(ca[0])  # chunk 2 c1 + c0: (c0 0, c1 0) = 0, (c0 0, c1 1) = 2
    a1, a3 = _split_last(ca[1])  # (c0 1, c1 0) = 1, (c0 1, c1 1) = 3
    b0, b2 = _split_last(cb[0])
    b1, b3 = _split_last(cb[1])
    e0, e2 = _split_last(cc[0])
    e1, e3 = _split_last(cc[1])
    d0, d2 = _split_last(cd[0])
    d1, d3 = _split_last(cd[1])
    return (_repair(a0, b0, e0, d0), _repair(a1, b1, e1, d1), _repair(a2, b2, e2, d2), _repair(a3, b3, e3, d3))


@triton.jit
def _x_ready(tile, USE_ASM: tl.constexpr, rn=1.0, XNORM: tl.constexpr = 0):
    """A tile from _tile_in with XSUMS (its x as raw gate / up sums) with its x pairs computed (_x_act)."""
    xs = _x_act(tile[4][0], tile[4][1], USE_ASM, rn, XNORM)
    return tile[0], tile[1], tile[2], tile[3], xs, xs


def _dn2_sums_ptx(chunk_bytes: int) -> str:
    """DNORM2 "thread": the fp32 producer sums s[k..k+7] of 4 word rows chunk_bytes apart (two 16-byte loads each)."""
    return "".join(f"ld.global.v4.f32 {{${8 * i}, ${8 * i + 1}, ${8 * i + 2}, ${8 * i + 3}}}, [$32+{i * chunk_bytes}];\n"
                   f"ld.global.v4.f32 {{${8 * i + 4}, ${8 * i + 5}, ${8 * i + 6}, ${8 * i + 7}}}, [$32+{i * chunk_bytes + 16}];\n"
                   for i in range(4))  # fmt: skip


_DN2_SUMS_RO4 = tl.constexpr(_dn2_sums_ptx(128))  # BLOCK_K 128: 32 fp32 values a chunk
_DN2_SUMS_RO2 = tl.constexpr(_dn2_sums_ptx(64))
# u pairs of one word row: (s[i], s[4 + i]) to half2 (rn), + the h pair (rn), * the norm weight pair (rn); explicit
# rounding modifiers, so ptxas fuses nothing (fp16(h + fp16(s)) and fp16(h' w) exactly as the fp32 reference rounds)
_DN2_U_PTX = tl.constexpr("{\n.reg .b32 t;\n" + "".join(f"cvt.rn.f16x2.f32 t, ${8 + i}, ${4 + i};\n"
                                                         f"add.rn.f16x2 t, t, ${12 + i};\nmul.rn.f16x2 ${i}, t, ${16 + i};\n"
                                                         for i in range(4)) + "}")  # fmt: skip


@triton.jit
def _ld8(p):
    """8 fp32 values p[0..7] (the interpreter's DNORM2 sums)."""
    return (tl.load(p), tl.load(p + 1), tl.load(p + 2), tl.load(p + 3), tl.load(p + 4), tl.load(p + 5),
            tl.load(p + 6), tl.load(p + 7))  # fmt: skip


@triton.jit
def _dn2_sums(s_ptr, offs_m, kr, stride_sm, USE_ASM: tl.constexpr, RO: tl.constexpr):
    """DNORM2: the producer's fp32 sums of the 4 row chunks of the tile whose chunk-0 rows start at K index kr
    ([1, RO, 1]), in the x-pair layout (each thread its own word rows; duplicates across the CTA hit L1): 4 chunks
    of 8 values s[k..k+7] [BM, RO, 1]."""
    p = s_ptr + offs_m * stride_sm + kr
    if USE_ASM:
        if RO == 4:
            v = tl.inline_asm_elementwise(_DN2_SUMS_RO4, "=f," * 32 + "l", [p], dtype=(tl.float32,) * 32,
                                          is_pure=True, pack=1)  # fmt: skip
        else:
            v = tl.inline_asm_elementwise(_DN2_SUMS_RO2, "=f," * 32 + "l", [p], dtype=(tl.float32,) * 32,
                                          is_pure=True, pack=1)  # fmt: skip
        out = ((v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]),
               (v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]),
               (v[16], v[17], v[18], v[19], v[20], v[21], v[22], v[23]),
               (v[24], v[25], v[26], v[27], v[28], v[29], v[30], v[31]))  # fmt: skip
    else:
        out = (_ld8(p), _ld8(p + RO * 8), _ld8(p + 2 * RO * 8), _ld8(p + 3 * RO * 8))
    return out


@triton.jit
def _u_half(h, s, w):
    """fp16 bits (int32) of fp16(fp16(h + fp16(s)) * w) from fp32 h, s, w (the interpreter's DNORM2 pair half)."""
    hp = (h + s.to(tl.float16).to(tl.float32)).to(tl.float16).to(tl.float32)
    return (hp * w).to(tl.float16).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF


@triton.jit
def _dn2_u(s, hw, ww, USE_ASM: tl.constexpr):
    """The 4 u pair words of one chunk: u = fp16(h' w), h' = fp16(h + fp16(s)) (fused_norm's residual rounding),
    from its 8 sums s (fp32), h pairs hw and norm-weight pairs ww (half2 words (x[k + i], x[k + 4 + i]))."""
    if USE_ASM:
        u = tl.inline_asm_elementwise(_DN2_U_PTX, "=&r,=&r,=&r,=&r," + "f," * 8 + "r,r,r,r,r,r,r,r",
                                      [s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], hw[0], hw[1], hw[2], hw[3],
                                       ww[0], ww[1], ww[2], ww[3]], dtype=(tl.int32,) * 4, is_pure=True, pack=1)  # fmt: skip
    else:
        u = (_u_half(_lo_f32(hw[0]), s[0], _lo_f32(ww[0])) | (_u_half(_hi_f32(hw[0]), s[4], _hi_f32(ww[0])) << 16),
             _u_half(_lo_f32(hw[1]), s[1], _lo_f32(ww[1])) | (_u_half(_hi_f32(hw[1]), s[5], _hi_f32(ww[1])) << 16),
             _u_half(_lo_f32(hw[2]), s[2], _lo_f32(ww[2])) | (_u_half(_hi_f32(hw[2]), s[6], _hi_f32(ww[2])) << 16),
             _u_half(_lo_f32(hw[3]), s[3], _lo_f32(ww[3])) | (_u_half(_hi_f32(hw[3]), s[7], _hi_f32(ww[3])) << 16))  # fmt: skip
    return u


@triton.jit
def _dn2_x(xs, gs, USE_ASM: tl.constexpr):
    """DNORM2: a tile's x pairs (what _x_chunks returns) from its raw (sums, h pairs) xs and norm-weight pairs gs."""
    s, hw = xs
    return (_dn2_u(s[0], hw[0], gs[0], USE_ASM), _dn2_u(s[1], hw[1], gs[1], USE_ASM),
            _dn2_u(s[2], hw[2], gs[2], USE_ASM), _dn2_u(s[3], hw[3], gs[3], USE_ASM))  # fmt: skip


@dataclass(frozen=True)
class ShflPlan:
    """DNORM2 "shfl"'s per-lane offsets and orders at BLOCK_K 128 (RO 4: chunks of 4 word rows, 32 K values), the one
    source of its PTX (_dn2_shfl_ptx) and of the CPU emulation of that PTX (test_dn2_shfl_emu). Lane L of a 16-lane
    segment (one word row: the verified layout, shfl_ttgir_problems) owns pair word j = L & 15: chunk c = j >> 2,
    pair i = j & 3, K indices a = kr + 32 c + i and a + 4, i.e. _x_chunks' word (x[k + i], x[k + 4 + i]), k = kr + 32 c.
    mad: o = j + mad (j >> 2) = 32 c + i, the K values from kr (one mad.lo.u32 on j >> 2); sum_hi / h_hi: the bytes
    from s[a] / h[a] to s[a + 4] / h[a + 4]; the pair-ordered norm weight's word (w[a], w[a + 4]) lies 2 (o + i) bytes
    from its int32 view at kr / 2; cvt: cvt.rn.f16x2.f32's operands, (upper, lower) = (s[a + 4], s[a]) of the form
    part's inputs $16 s[a], $17 s[a + 4]; seg: shfl.sync's c operand (segment mask 0x10 << 8: 16-lane segments, clamp
    31); order: output $k gets lane order[k]'s word of the segment."""

    mad: int = 28
    sum_hi: int = 16
    h_hi: int = 8
    cvt: str = "$17, $16"
    seg: int = 0x101F
    order: tuple[int, ...] = tuple(range(16))

    def lane(self, j: int) -> tuple[int, int, int, int, int]:
        """Lane j's (0..15) byte offsets from kr's: s[a], s[a + 4], h[a], h[a + 4], the pair-ordered weight word."""
        o = j + self.mad * (j >> 2)
        return 4 * o, 4 * o + self.sum_hi, 2 * o, 2 * o + self.h_hi, 2 * (o + (j & 3))


SHFL_PLAN = ShflPlan()


def _dn2_shfl_ptx(part: str, plan: ShflPlan = SHFL_PLAN) -> str:
    """DNORM2 "shfl" (BLOCK_K 128 only): a tile's 16 u pair words of one word row formed ONCE per 16-lane segment and
    distributed with warp shuffles (the offsets and orders: ShflPlan). part "load" (where the tile's other loads are
    issued): the producer's two fp32 sums at a and a + 4, the two h halves and the pair-ordered norm weight's word
    (one 32-bit load): outputs $0 sa, $1 sb, $2 ha, $3 hb, $4 w; inputs $5-$7 the sums (fp32), h (fp16) and
    pair-ordered weight pointers at kr, as int32 pointers (the weight's: its int32 view at kr / 2). part "form" (where
    the tile is used): inputs $16-$20 the "load" outputs; u = fp16(fp16(h + fp16(s)) * w) in half2 (cvt / add / mul,
    rn: exactly _DN2_U_PTX's roundings), then 16 shfl.sync.idx.b32 give every lane the segment's 16 words in
    _XLOAD4's order ($4c+i = chunk c pair i)."""
    if part == "load":
        return ("{\n.reg .b32 l, j, o, i, oi;\n.reg .b64 d4, d2, dw, ps, ph, pw;\n"
                "mov.u32 l, %laneid;\nand.b32 j, l, 15;\nshr.u32 o, j, 2;\n"
                f"mad.lo.u32 o, o, {plan.mad}, j;\n"  # o = 32 c + i (K values from kr)
                "mul.wide.u32 d4, o, 4;\nadd.s64 ps, $5, d4;\nmul.wide.u32 d2, o, 2;\nadd.s64 ph, $6, d2;\n"
                # the pair word (kr + 32 c) / 2 + i of the int32 view at kr / 2: byte 2 (32 c + 2 i) = 2 (o + i)
                "and.b32 i, j, 3;\nadd.u32 oi, o, i;\nmul.wide.u32 dw, oi, 2;\nadd.s64 pw, $7, dw;\n"
                f"ld.global.f32 $0, [ps];\nld.global.f32 $1, [ps+{plan.sum_hi}];\nld.global.b16 $2, [ph];\n"
                f"ld.global.b16 $3, [ph+{plan.h_hi}];\nld.global.b32 $4, [pw];\n}}")  # fmt: skip
    if part != "form":
        raise ValueError(part)
    seg = f"{plan.seg:#x}"
    shfl = "".join(f"shfl.sync.idx.b32 ${k}, u, {src}, {seg}, 0xffffffff;\n" for k, src in enumerate(plan.order))
    return (f"{{\n.reg .b32 t, hh, u;\ncvt.rn.f16x2.f32 t, {plan.cvt};\nmov.b32 hh, {{$18, $19}};\n"
            "add.rn.f16x2 t, t, hh;\nmul.rn.f16x2 u, t, $20;\n" + shfl + "}")  # fmt: skip


_DN2_LOAD = tl.constexpr(_dn2_shfl_ptx("load"))  # (shfl_layout_ok: BLOCK_K 128, the only verified one)
_DN2_FORM = tl.constexpr(_dn2_shfl_ptx("form"))


@triton.jit
def _pair_words(p32, kr, RO: tl.constexpr):
    """(the interpreter's DNORM2 "shfl") the 4 chunks' pair words of a pair-ordered fp16 vector (int32 view at K
    index 0): word (kr + 8 RO c) / 2 + i = (v[k + i], v[k + 4 + i]), k = kr + 8 RO c."""
    q = p32 + kr // 2
    return ((tl.load(q), tl.load(q + 1), tl.load(q + 2), tl.load(q + 3)),
            (tl.load(q + 4 * RO), tl.load(q + 4 * RO + 1), tl.load(q + 4 * RO + 2), tl.load(q + 4 * RO + 3)),
            (tl.load(q + 8 * RO), tl.load(q + 8 * RO + 1), tl.load(q + 8 * RO + 2), tl.load(q + 8 * RO + 3)),
            (tl.load(q + 12 * RO), tl.load(q + 12 * RO + 1), tl.load(q + 12 * RO + 2), tl.load(q + 12 * RO + 3)))  # fmt: skip


@triton.jit
def _dn2_shfl(s_ptr, h_ptr, pw_ptr, offs_m, kr, stride_sm, stride_hm, PTX: tl.constexpr, RO: tl.constexpr):
    """DNORM2 "shfl", where the tile's loads are issued: this lane's raw loads of its pair word (_dn2_shfl_ptx
    "load"; _dn2_shfl_form forms and shuffles them where the tile is used). pw_ptr: the pair-ordered norm weight.
    PTX: the kernel's USE_ASM (as the kernel's DN2T 3: _with_x sees USE_ASM only inside the argument tuples, where
    it is no constexpr, and the two paths differ in type). Without it (the interpreter) the per-thread raw values
    ((sums, h pairs), norm-weight pairs from pw_ptr)."""
    if PTX:  # all three pointers as int32 pointers: an asm's operands are broadcast together, one pointer type. RO is
        # 4 (BLOCK_K 128: launch_hgemvr admits "shfl" on CUDA only where shfl_layout_ok holds)
        ps = (s_ptr + offs_m * stride_sm + kr).to(tl.pointer_type(tl.int32), bitcast=True)
        ph = (h_ptr + offs_m * stride_hm + kr).to(tl.pointer_type(tl.int32), bitcast=True)
        pw = pw_ptr.to(tl.pointer_type(tl.int32), bitcast=True) + offs_m * 0 + kr // 2
        out = tl.inline_asm_elementwise(_DN2_LOAD, "=f,=f,=h,=h,=r,l,l,l", [ps, ph, pw],
                                        dtype=(tl.float32, tl.float32, tl.float16, tl.float16, tl.int32),
                                        is_pure=True, pack=1)  # fmt: skip
    else:
        gs = _pair_words(pw_ptr.to(tl.pointer_type(tl.int32), bitcast=True) + offs_m * 0, kr, RO)
        raw = (_dn2_sums(s_ptr, offs_m, kr, stride_sm, PTX, RO),
               _x_chunks(h_ptr, None, offs_m, kr, stride_hm, False, PTX, RO))  # fmt: skip
        out = (raw, gs)
    return out


@triton.jit
def _dn2_shfl_form(raw, USE_ASM: tl.constexpr):
    """DNORM2 "shfl", where the tile is used: its x pairs from _dn2_shfl's raw loads (formation + 16 shuffles)."""
    if USE_ASM:
        v = tl.inline_asm_elementwise(_DN2_FORM, "=r," * 16 + "f,f,h,h,r", [raw[0], raw[1], raw[2], raw[3], raw[4]],
                                      dtype=(tl.int32,) * 16, is_pure=True, pack=1)  # fmt: skip
        out = _chunks16(v)
    else:
        out = _dn2_x(raw[0], raw[1], USE_ASM)
    return out


@triton.jit
def _dn2_rows(s_ptr, h_ptr, ho_ptr, slot_ptr, offs_m, m_ok, k_first, k_end, stride_sm, stride_hm,
              BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, SLICE: tl.constexpr):  # fmt: skip
    """DNORM2's extra program of K slice [k_first, k_end) (whole tiles; after the PDL wait; offs_m in range): h' =
    fp16(h + fp16(s)) of the rows' slice stored to ho (ping-pong: the other programs still read h) and the slice's
    sum(h'^2) added into slot[m] (zero before). SLICE > 0 (>= k_end - k_first; BLOCK_M SLICE <= DN2_ONE_LOAD values):
    the slice in one load; 0: BLOCK_K values a row at a time, so the registers stay bounded at any slice. (One loop
    for both would do, but a loop here changes ptxas's schedule of the tile loop: 322 -> 337 SASS instructions at the
    7B qkv pick's "shfl" build, offline; every shipped 7B / 13B batch-1 pick takes the one load.)"""
    m2 = offs_m.reshape(BLOCK_M, 1)
    ok2 = m_ok.reshape(BLOCK_M, 1)
    if SLICE:
        k = k_first + tl.arange(0, SLICE)[None, :]
        kin = k < k_end
        s = tl.load(s_ptr + m2 * stride_sm + k, mask=kin, other=0.0)
        h = tl.load(h_ptr + m2 * stride_hm + k, mask=kin, other=0.0)
        hp = (h.to(tl.float32) + s.to(tl.float16).to(tl.float32)).to(tl.float16)
        tl.store(ho_ptr + m2 * stride_hm + k, hp, mask=ok2 & kin)
        h32 = hp.to(tl.float32)
        ss = tl.sum(h32 * h32, axis=1)
    else:
        ss = tl.zeros((BLOCK_M,), dtype=tl.float32)
        for k0 in range(k_first, k_end, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K)[None, :]
            s = tl.load(s_ptr + m2 * stride_sm + k)
            h = tl.load(h_ptr + m2 * stride_hm + k)
            hp = (h.to(tl.float32) + s.to(tl.float16).to(tl.float32)).to(tl.float16)
            tl.store(ho_ptr + m2 * stride_hm + k, hp, mask=ok2)
            h32 = hp.to(tl.float32)
            ss += tl.sum(h32 * h32, axis=1)
    tl.atomic_add(slot_ptr + offs_m.reshape(BLOCK_M), ss, mask=m_ok.reshape(BLOCK_M), sem="relaxed")


@triton.jit
def _repair(n0, n1, n2, n3):
    """The pair words (x[i], x[4 + i]), i = 0..3, [BM, RO, 1] of natural words (x[2 j], x[2 j + 1]) [BM, RO]."""
    x04 = (n0 & 0xFFFF) | (n2 << 16)
    x15 = ((n0 >> 16) & 0xFFFF) | (n2 & -65536)
    x26 = (n1 & 0xFFFF) | (n3 << 16)
    x37 = ((n1 >> 16) & 0xFFFF) | (n3 & -65536)
    return x04[:, :, None], x15[:, :, None], x26[:, :, None], x37[:, :, None]


@triton.jit
def _tile_w(kt, ok, w_rows, sc_ptr, qz_ptr, offs_n, sqk, stride_sg, stride_sn, stride_zg, stride_zn,
            GROUP: tl.constexpr, SYM: tl.constexpr, ZERO_OFFSET: tl.constexpr, USE_ASM: tl.constexpr,
            RO: tl.constexpr):  # fmt: skip
    """The weight part of the K tile at row kt (its 4 word chunks, scale, zero constants): no kernel writes these,
    so a PDL-launched GEMV loads its first tiles' before it waits for the previous kernel (kernels.pdl)."""
    wp = w_rows + (kt // 8) * sqk  # [1, RO, BN]: chunk 0 = word rows kt/8 .. kt/8 + RO - 1
    w0 = tl.load(wp)
    w1 = tl.load(wp + RO * sqk)
    w2 = tl.load(wp + 2 * RO * sqk)
    w3 = tl.load(wp + 3 * RO * sqk)
    g = kt // GROUP
    s = _ld_col(sc_ptr + g * stride_sg + offs_n * stride_sn, USE_ASM).to(tl.float32)
    s = tl.where(ok, s, 0.0)
    # fp16(-(1 + z/1024)) = 0xBC00 + z, fp16(-(1/16 + z/1024)) = 0xAC00 + 16 z
    if SYM:
        z = tl.full(offs_n.shape, 8, tl.int32)
    else:
        word = _ld_col(qz_ptr + g * stride_zg + (offs_n // 8) * stride_zn, USE_ASM)
        z = ((word >> ((offs_n % 8) * 4)) & 0xF) + ZERO_OFFSET
    c0 = z * 0x10001 + (0xBC00BC00 - 2**32)
    c1 = z * 0x100010 + (0xAC00AC00 - 2**32)
    return (w0, w1, w2, w3), s, c0, c1


@triton.jit
def _with_x(tw, kt, x_ptr, perm_ptr, offs_m, offs_ro, stride_xm, HAS_PERM: tl.constexpr, USE_ASM: tl.constexpr,
            RO: tl.constexpr, nw_ptr, NORM: tl.constexpr, INTER=0, dh_ptr=None, stride_hm=0, XSUMS: tl.constexpr = 0,
            DNORM2: tl.constexpr = 0):  # fmt: skip
    """A tile from _tile_w completed with its x pairs (the tile _tile_in returns). NORM: x is the residual stream,
    and the norm weight's pairs gs come along (normalised only where the tile is used, _use_r: normalising here
    would wait for the loads before the previous tile's arithmetic). DNORM2 (x_ptr: the producer's fp32 sums, dh_ptr:
    h, nw_ptr: the norm weight, pair-ordered with "shfl"): 1 ("thread") u formed here; 2 ("shfl"; 3: with its PTX,
    the kernel's DN2T) this lane's raw loads, formed and shuffled where the tile is used (_use_r)."""
    if XSUMS:  # x = silu(gate) * up from the gate/up GEMV's deferred sums (x_ptr: fp32): the raw sums (_use_r)
        xs = _x_sums_load(x_ptr, offs_m, kt, stride_xm, INTER, XSUMS)
    elif DNORM2 >= 2:
        xs = _dn2_shfl(x_ptr, dh_ptr, nw_ptr, offs_m, kt + offs_ro * 8, stride_xm, stride_hm, DNORM2 == 3, RO)
    elif DNORM2:  # (eager: only u's 16 words are carried)
        kr = kt + offs_ro * 8
        ws = _x_chunks(nw_ptr, perm_ptr, offs_m * 0, kr, 0, False, USE_ASM, RO)  # the norm weight's pairs
        raw = (_dn2_sums(x_ptr, offs_m, kr, stride_xm, USE_ASM, RO),
               _x_chunks(dh_ptr, perm_ptr, offs_m, kr, stride_hm, False, USE_ASM, RO))  # fmt: skip
        xs = _dn2_x(raw, ws, USE_ASM)
    else:
        xs = _x_chunks(x_ptr, perm_ptr, offs_m, kt + offs_ro * 8, stride_xm, HAS_PERM, USE_ASM, RO)
    if XSUMS or DNORM2:  # (never with NORM)
        gs = xs  # the tile's slot for the norm weight's pairs: no registers (the same values), never read
    elif NORM:  # (NORM comes in the argument tuple, no constexpr: this `if` is traced both ways, one type)
        gs = _x_chunks(nw_ptr, perm_ptr, offs_m * 0, kt + offs_ro * 8, 0, HAS_PERM, USE_ASM, RO)
    else:
        gs = xs
    return tw[0], tw[1], tw[2], tw[3], xs, gs


@triton.jit
def _tile_in(kt, ok, w_rows, x_ptr, sc_ptr, qz_ptr, perm_ptr, offs_m, offs_n, offs_ro, stride_xm, sqk,
             stride_sg, stride_sn, stride_zg, stride_zn,
             GROUP: tl.constexpr, SYM: tl.constexpr, ZERO_OFFSET: tl.constexpr, HAS_PERM: tl.constexpr,
             USE_ASM: tl.constexpr, RO: tl.constexpr, nw_ptr, NORM: tl.constexpr, INTER=0, dh_ptr=None, stride_hm=0,
             XSUMS: tl.constexpr = 0, DNORM2: tl.constexpr = 0):  # fmt: skip
    """Everything the K tile at row kt needs: its 4 word chunks, scale, zero constants, x pairs per chunk. All loads
    unmasked (offs_m, offs_n clamped in range by the caller); ok False: scale 0, so the tile adds exactly 0."""
    tw = _tile_w(kt, ok, w_rows, sc_ptr, qz_ptr, offs_n, sqk, stride_sg, stride_sn, stride_zg, stride_zn,
                 GROUP, SYM, ZERO_OFFSET, USE_ASM, RO)  # fmt: skip
    return _with_x(tw, kt, x_ptr, perm_ptr, offs_m, offs_ro, stride_xm, HAS_PERM, USE_ASM, RO, nw_ptr, NORM, INTER,
                   dh_ptr, stride_hm, XSUMS, DNORM2)  # fmt: skip


@triton.jit
def _after_barrier(tile, USE_ASM: tl.constexpr):
    """The tile with its zero constants made to depend on a CTA barrier (PIN; values unchanged)."""
    if USE_ASM:
        c0, c1 = tl.inline_asm_elementwise(_DEP_PTX, "=r,=r,=r,=r,=r,=r,=r,=r,r,r,r,r,r,r,r,r", [tile[2], tile[3]],
                                           dtype=(tl.int32, tl.int32), is_pure=False, pack=4)  # fmt: skip
    else:
        c0, c1 = tile[2], tile[3]
    return tile[0], tile[1], c0, c1, tile[4], tile[5]


@triton.jit
def _use_r(acc, tile, USE_ASM: tl.constexpr, r, NORM: tl.constexpr, XSUMS: tl.constexpr = 0, rn=1.0,
           XNORM: tl.constexpr = 0, DNORM2: tl.constexpr = 0):  # fmt: skip
    """acc + s * (the tile's products), the 4 chunks summed in half2 first; NORM: x normalised first (norm_epilogue);
    XSUMS: x computed from the tile's gate / up sums first (_x_act; XNORM: times rn); DNORM2 2 ("shfl"): u formed
    from this lane's raw loads and shuffled first (_dn2_shfl_form)."""
    ws, s, c0, c1, xs, gs = tile
    if XSUMS:
        xs = _x_act(xs[0], xs[1], USE_ASM, rn, XNORM)
    if DNORM2 == 2:
        xs = _dn2_shfl_form(xs, USE_ASM)
    if NORM:
        xs = norm_chunks(xs, gs, r, NORM, USE_ASM)
    p = _hdot(_dequant10(ws[0], c0, c1, USE_ASM), xs[0], ws[0] & 0, USE_ASM)
    p = _hdot(_dequant10(ws[1], c0, c1, USE_ASM), xs[1], p, USE_ASM)
    p = _hdot(_dequant10(ws[2], c0, c1, USE_ASM), xs[2], p, USE_ASM)
    p = _hdot(_dequant10(ws[3], c0, c1, USE_ASM), xs[3], p, USE_ASM)
    return _hfin(p, s, acc, USE_ASM)


@triton.jit
def _x_norm_r(slot_ptr, offs_m, NORM_K, eps, XNORM: tl.constexpr):
    """XNORM: the deferred norm's r = rsqrt(sum(h'^2) / NORM_K + eps) of rows offs_m (in range) from their slot
    (complete after the PDL wait), [BM, 1, 1, 1, 1, 1, 1] for _x_act; else 1.0 (unused)."""
    if XNORM:
        m7 = offs_m.reshape(offs_m.shape[0], 1, 1, 1, 1, 1, 1)
        rn = 1.0 / tl.sqrt(tl.load(slot_ptr + m7) / NORM_K + eps)
    else:
        rn = 1.0
    return rn


@triton.jit
def _hgemvr_kernel(
    x_ptr, qw_ptr, sc_ptr, qz_ptr, perm_ptr, y_ptr, ws_ptr, cnt_ptr,
    M, N, K, ZW, ITERS, SPLIT_K,
    stride_xm, stride_xk, stride_qk, stride_qn, stride_sg, stride_sn, stride_zg, stride_zn, stride_ym, stride_yn,
    act_ptr, INTER, stride_am, nw_ptr, ssi_ptr, sso_ptr, eps, dh_ptr, dho_ptr, dslot_ptr, stride_dhm, NORM_K,
    GROUP: tl.constexpr, SYM: tl.constexpr, ZERO_OFFSET: tl.constexpr,
    HAS_PERM: tl.constexpr, USE_SPLIT: tl.constexpr, USE_ASM: tl.constexpr,
    BURST: tl.constexpr, QK_CONST: tl.constexpr, EVEN_N: tl.constexpr,
    PIN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr, USE_GDC: tl.constexpr = 0, SWIGLU: tl.constexpr = 0, FINISH: tl.constexpr = 0,
    NORM_IN: tl.constexpr = 0, RES_OUT: tl.constexpr = 0, XSUMS: tl.constexpr = 0, XNORM: tl.constexpr = 0,
    DNORM2: tl.constexpr = 0, SLICE: tl.constexpr = 0,
):  # fmt: skip
    pid_n = tl.program_id(0)
    if DNORM2:  # the grid's last N column (one program per K slice and row block): the rows' h' and sum(h'^2)
        x_prog = pid_n == tl.num_programs(0) - 1  # (_dn2_rows); it loads the last N column's first K tile of its slice
        # (burst: its slice's tiles), runs no tile loop and stores no y (mask_n)
        pid_n = tl.minimum(pid_n, tl.num_programs(0) - 2)
    else:
        x_prog = pid_n < 0
    pid_k = tl.program_id(1)
    pid_m = tl.program_id(2)
    RO: tl.constexpr = BLOCK_K // 32
    XRO: tl.constexpr = RO if XSUMS else 0  # XSUMS for _with_x: RO as a constexpr (constexprs in a tuple are not)
    DN2T: tl.constexpr = 3 if DNORM2 == 2 and USE_ASM else DNORM2  # DNORM2 for _with_x: 3 = "shfl" with its PTX
    if SWIGLU:  # gate (even pid_k) or up (odd) tile pid_n of K split pid_k // 2 (swiglu_epilogue)
        col0 = (pid_k % 2) * INTER + pid_n * BLOCK_N
        pid_k = pid_k // 2
    else:
        col0 = pid_n * BLOCK_N
    offs_n = col0 + tl.arange(0, BLOCK_N)[None, None, :]  # [1, 1, BN]
    mask_n = offs_n < N
    if DNORM2:
        mask_n = mask_n & (x_prog == 0)
    if EVEN_N:  # loads are unmasked: N % BLOCK_N == 0, or columns past N re-read column N - 1
        offs_nl = offs_n
    else:  # (clamping loses the 16-byte vector loads, so only where N needs it)
        offs_nl = tl.minimum(offs_n, N - 1)
    offs_ro = tl.arange(0, RO)[None, :, None]  # [1, RO, 1]
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)[:, None, None]  # [BM, 1, 1]
    m_ok = offs_m < M
    offs_ml = tl.minimum(offs_m, M - 1)
    if QK_CONST > 0:  # the word row stride as a compile-time constant: chunk offsets become immediates
        sqk = QK_CONST
    else:
        sqk = stride_qk
    w_rows = qw_ptr + offs_ro * sqk + offs_nl * stride_qn  # [1, RO, BN]
    k_first = pid_k * (ITERS * BLOCK_K)
    mine = tl.minimum(ITERS, K // BLOCK_K - pid_k * ITERS)  # this program's tiles (>= 1)
    last = k_first + (mine - 1) * BLOCK_K
    gdc_start(USE_GDC)
    gdc_wait_first(USE_GDC)  # mode 3 (ablation): no prefetch
    if USE_GDC == 1 or USE_GDC == 2:  # PDL (kernels.pdl): the first tiles' weights load before the wait
        wargs = (sc_ptr, qz_ptr, offs_nl, sqk, stride_sg, stride_sn, stride_zg, stride_zn, GROUP, SYM, ZERO_OFFSET,
                 USE_ASM, RO)  # fmt: skip
        k1 = tl.minimum(k_first + BLOCK_K, last)
        k2 = tl.minimum(k_first + 2 * BLOCK_K, last)
        k3 = tl.minimum(k_first + 3 * BLOCK_K, last)
        cur = _tile_w(k_first, True, w_rows, *wargs)
        if BURST > 1:
            t1 = _tile_w(k1, 1 < mine, w_rows, *wargs)
            if BURST >= 3:
                t2 = _tile_w(k2, 2 < mine, w_rows, *wargs)
            if BURST >= 4:
                t3 = _tile_w(k3, 3 < mine, w_rows, *wargs)
        gdc_wait(USE_GDC)
        r = norm_scale(ssi_ptr, offs_ml, K, eps, NORM_IN, USE_ASM)  # the slots are complete only after the wait
        rn = _x_norm_r(dslot_ptr, offs_ml, NORM_K, eps, XNORM)
        xargs = (x_ptr, perm_ptr, offs_ml, offs_ro, stride_xm, HAS_PERM, USE_ASM, RO, nw_ptr, NORM_IN, INTER, dh_ptr,
                 stride_dhm)  # fmt: skip
        cur = _with_x(cur, k_first, *xargs, XSUMS=XRO, DNORM2=DN2T)
        if BURST > 1:
            t1 = _with_x(t1, k1, *xargs, XSUMS=XRO, DNORM2=DN2T)
            if BURST >= 3:
                t2 = _with_x(t2, k2, *xargs, XSUMS=XRO, DNORM2=DN2T)
            if BURST >= 4:
                t3 = _with_x(t3, k3, *xargs, XSUMS=XRO, DNORM2=DN2T)
    else:
        r = norm_scale(ssi_ptr, offs_ml, K, eps, NORM_IN, USE_ASM)
        rn = _x_norm_r(dslot_ptr, offs_ml, NORM_K, eps, XNORM)
    args = (x_ptr, sc_ptr, qz_ptr, perm_ptr, offs_ml, offs_nl, offs_ro, stride_xm, sqk, stride_sg, stride_sn,
            stride_zg, stride_zn, GROUP, SYM, ZERO_OFFSET, HAS_PERM, USE_ASM, RO, nw_ptr, NORM_IN, INTER, dh_ptr,
            stride_dhm)  # fmt: skip
    if USE_GDC != 1 and USE_GDC != 2:
        cur = _tile_in(k_first, True, w_rows, *args, XSUMS=XRO, DNORM2=DN2T)
        if BURST > 1:  # all of the program's tiles in flight before any is used; tiles past `mine` add 0
            t1 = _tile_in(tl.minimum(k_first + BLOCK_K, last), 1 < mine, w_rows, *args, XSUMS=XRO, DNORM2=DN2T)
            if BURST >= 3:
                t2 = _tile_in(tl.minimum(k_first + 2 * BLOCK_K, last), 2 < mine, w_rows, *args, XSUMS=XRO, DNORM2=DN2T)
            if BURST >= 4:
                t3 = _tile_in(tl.minimum(k_first + 3 * BLOCK_K, last), 3 < mine, w_rows, *args, XSUMS=XRO, DNORM2=DN2T)
    if DNORM2:  # (after the PDL wait: the producer's sums are complete)
        if x_prog:
            _dn2_rows(x_ptr, dh_ptr, dho_ptr, dslot_ptr, offs_ml, m_ok, k_first, k_first + mine * BLOCK_K, stride_xm,
                      stride_dhm, BLOCK_M, BLOCK_K, SLICE)  # fmt: skip
        loop_end = tl.where(x_prog, k_first, last + 1)  # the extra program runs no tile loop
    else:
        loop_end = last + 1
    # zeros derived from a load, so the accumulator takes the load's (coalesced) register layout
    acc = tl.zeros((BLOCK_M, RO, BLOCK_N), dtype=tl.float32) + (cur[0][0] & 0).to(tl.float32)
    if BURST > 1:
        if PIN:  # every load issued before the barriers; each tile's arithmetic depends on one
            cur = _after_barrier(cur, USE_ASM)
            t1 = _after_barrier(t1, USE_ASM)
            if BURST >= 3:
                t2 = _after_barrier(t2, USE_ASM)
            if BURST >= 4:
                t3 = _after_barrier(t3, USE_ASM)
        acc = _use_r(acc, cur, USE_ASM, r, NORM_IN, XRO, rn, XNORM, DNORM2)
        acc = _use_r(acc, t1, USE_ASM, r, NORM_IN, XRO, rn, XNORM, DNORM2)
        if BURST >= 3:
            acc = _use_r(acc, t2, USE_ASM, r, NORM_IN, XRO, rn, XNORM, DNORM2)
        if BURST >= 4:
            acc = _use_r(acc, t3, USE_ASM, r, NORM_IN, XRO, rn, XNORM, DNORM2)
    else:  # look-ahead 1: the next tile's words and small operands wait in registers (past the last: re-read it)
        for it in range(k_first, loop_end, BLOCK_K):
            if XRO:  # this tile's x from its sums BEFORE the next tile's loads: its CTA barriers would otherwise keep
                use = _x_ready(cur, USE_ASM, rn, XNORM)  # them issued during the arithmetic (as PIN does: 128
                # registers, not 79)
            else:
                use = cur
            nxt = _tile_in(tl.minimum(it + BLOCK_K, last), True, w_rows, *args, XSUMS=XRO, DNORM2=DN2T)
            if PIN:  # the next tile's loads are issued before the barrier this tile's arithmetic depends on
                acc = _use_r(acc, _after_barrier(use, USE_ASM), USE_ASM, r, NORM_IN, DNORM2=DNORM2)
            else:
                acc = _use_r(acc, use, USE_ASM, r, NORM_IN, DNORM2=DNORM2)
            cur = nxt

    gdc_late(USE_GDC)
    if SWIGLU:  # act = silu(gate) * up instead of y (swiglu_epilogue)
        store_swiglu(acc, 1024.0, offs_m, m_ok, offs_n, ws_ptr, N, cnt_ptr, pid_m, pid_n, SPLIT_K, act_ptr, stride_am,
                     INTER, BLOCK_N)  # fmt: skip
    elif RES_OUT:  # y = the residual stream: h += y in place, the rows' sums of squares into sso (norm_epilogue)
        store_residual(acc, 1024.0, offs_m, m_ok, offs_n, mask_n, y_ptr, stride_ym, ws_ptr, N, cnt_ptr, pid_m, pid_n,
                       SPLIT_K, sso_ptr, USE_SPLIT)  # fmt: skip
    elif FINISH:  # split-K partials only, fire-and-forget; quant_common.finish_rows then stores y and clears them
        red_tile(tl.sum(acc, axis=1, keep_dims=True) * 1024.0, ws_ptr + offs_m * N + offs_n, m_ok & mask_n)
    else:
        store_rows(acc, 1024.0, offs_m, m_ok, offs_n, mask_n, y_ptr, stride_ym, stride_yn, ws_ptr, N, cnt_ptr, pid_m,
                   pid_n, SPLIT_K, USE_SPLIT)  # fmt: skip


def swiglu_launch(x2: torch.Tensor, w: GPTQWeight, grid: tuple[int, int, int], args: tuple,
                  block_m: int) -> tuple[tuple[int, int, int], tuple]:  # fmt: skip
    """The swiglu epilogue's grid and arguments from split_launch's: programs per (tile pair, 2 x split), one
    reduction of 2 x split arrivals per pair, so always the split-K workspace (its own counters per tile pair)."""
    grid = (grid[0] // 2, 2 * grid[1], grid[2])
    ws, cnt = bucket_workspace(x2.device, x2.shape[0], w.out_features, grid[0], block_m)
    return grid, (*args[:6], ws, cnt, *args[8:13], grid[1], *args[14:])


DN2_ONE_LOAD = 1024  # DNORM2's _dn2_rows loads its K slice at once up to this many values (BLOCK_M rows), else loops
DN2_FORMS = ("thread", "shfl")  # launch_hgemvr's dn2_form (module docstring); the kernel's DNORM2 1 / 2


def shfl_layout_ok(block_m: int, block_n: int, block_k: int, num_warps: int, burst: bool, pin: bool, n: int) -> bool:
    """May DNORM2's "shfl" formation run at this launch on CUDA? Exactly the configuration whose TTGIR layout of x's
    [1, 4, 1] operands was verified (test_dn2_shfl: sizePerThread [1, 1, 4], threadsPerWarp [1, 2, 16], warpsPerCTA
    [1, 2, 1], order [2, 0, 1]: lanes 0-15 and 16-31 each share one word row): block_m 1, block_n 64, block_k 128,
    2 warps, the look-ahead loop (no burst, no pin) and N a multiple of 64 (unclamped column loads): the H200 table's
    7B / 13B batch-1 qkv and gate/up picks. Elsewhere the per-thread formation runs. (Each compiled variant's TTGIR
    is checked again at its first launch: verify_shfl_kernel; once one failed, SHFL_BROKEN, it holds nowhere.)"""
    return (not SHFL_BROKEN and block_m == 1 and block_n == 64 and block_k == 128 and num_warps == 2 and not burst
            and not pin and n % block_n == 0)  # fmt: skip


SHFL_LAYOUT = ("sizePerThread = [1, 1, 4]", "threadsPerWarp = [1, 2, 16]", "warpsPerCTA = [1, 2, 1]",
               "order = [2, 0, 1]")  # fmt: skip
_MOVES = ("ttg.convert_layout", "ttg.local_alloc", "ttg.local_store", "ttg.local_load")  # (ops that move values)


def _tensor_types(line: str) -> list[tuple[str, str]]:
    """(shape x element type, encoding) of each `tensor<...>` type in one line of TTGIR."""
    out = []
    i = line.find("tensor<")
    while i >= 0:
        j, depth, cut = i + 7, 1, -1
        while depth and j < len(line):
            c = line[j]
            depth += (c in "<{[(") - (c in ">}])")
            if c == "," and depth == 1 and cut < 0:
                cut = j
            j += 1
        out.append((line[i + 7 : cut], line[cut + 1 : j - 1].strip()) if cut >= 0 else (line[i + 7 : j - 1], ""))
        i = line.find("tensor<", j)
    return out


def _is_141(shape: str) -> bool:
    """Is a `tensor<...>` shape x element type (_tensor_types) [1, 4, 1]?"""
    dims = shape.split("x")
    return dims[:3] == ["1", "4", "1"] and not dims[3].isdigit()


def shfl_ttgir_problems(ttgir: str) -> list[str]:
    """What breaks DNORM2 "shfl"'s lane contract in a compiled kernel's TTGIR (empty: it holds). Its "load" asm
    returns per-lane values (lane j's pair word) for what Triton treats as one [1, 4, 1] element replicated over 16
    lanes, and its "form" asm shuffles them within 16-lane segments: correct only if (1) both asm sites (the loads:
    `%laneid`; the formation: `shfl.sync.idx`) exist and all their tensors are [1, 4, 1] in ONE layout, (2) that
    layout is the verified blocked layout SHFL_LAYOUT (one word row per aligned 16-lane segment, lane bits 0-3 along
    the size-1 N dimension), and (3) no [1, 4, 1] tensor is ever moved between layouts (a convert_layout or a
    shared-memory round trip would keep one lane's value of the "replicated" element and silently drop the others'
    words). Shared by test_dn2_shfl (offline sm_90 builds) and launch_hgemvr's runtime guard (verify_shfl_kernel)."""
    lines = ttgir.splitlines()
    asm = [ln for ln in lines if "tt.elementwise_inline_asm" in ln]
    loads = [ln for ln in asm if "%laneid" in ln]
    forms = [ln for ln in asm if "shfl.sync.idx" in ln]
    problems = []
    if not loads or not forms:
        problems.append(f"{len(loads)} load (%laneid) and {len(forms)} form (shfl.sync.idx) asm sites")
    types = [t for ln in loads + forms for t in _tensor_types(ln)]
    if any(not _is_141(shape) for shape, _ in types):
        problems.append(f"asm site tensors other than [1, 4, 1]: {sorted({shape for shape, _ in types})}")
    encodings = sorted({enc for _, enc in types})
    if len(encodings) != 1:
        problems.append(f"the asm sites' [1, 4, 1] tensors in {len(encodings)} layouts: {encodings}")
    for enc in encodings:
        decl = next((ln for ln in lines if ln.startswith(f"{enc} = ")), "") if re.fullmatch(r"#\w+", enc) else ""
        if "#ttg.blocked<" not in decl or any(f not in decl for f in SHFL_LAYOUT):
            problems.append(f"layout {enc} is not the verified blocked {SHFL_LAYOUT}: {decl or enc}")
    for ln in lines:
        if any(op in ln for op in _MOVES) and any(_is_141(shape) for shape, _ in _tensor_types(ln)):
            problems.append(f"a [1, 4, 1] tensor moved between layouts: {ln.strip()[:200]}")
    return problems


_SHFL_VERIFIED: set[str] = set()  # the compiled "shfl" kernels (CompiledKernel.hash) whose TTGIR passed
# set by verify_shfl_kernel where a compiled "shfl" kernel broke the lane contract: shfl_layout_ok then holds nowhere
# (deferred_norm.dn2_form gives "thread", dn2_pays False: bucket 1 runs "swiglu+cfin+g") for the rest of the process
SHFL_BROKEN = False
SHFL_STRICT = False  # verify_shfl_kernel raises instead of falling back (tests)


def verify_shfl_kernel(kernel: Any) -> None:
    """launch_hgemvr's guard after a "shfl" launch on CUDA: the compiled kernel's TTGIR checked once per compiled
    variant (shfl_ttgir_problems; then one set lookup a launch). Where the contract does not hold (a Triton version or
    kernel change that lays x's [1, 4, 1] operands out otherwise) the launch just run formed wrong u words: an error
    is logged and SHFL_BROKEN set (nothing remembered), so every later launch decision (shfl_layout_ok, dn2_form,
    dn2_pays) leaves "shfl" out; with SHFL_STRICT a RuntimeError instead. The launch's own results stay wrong: a
    decode graph's first launch of a variant is in its warm-up run, whose outputs the capture (which decides its
    picks again, now without "+dn2") and the replay after it overwrite (DecodeGraphs._capture / run; only a
    DecodeLayout forward, i.e. a decode graph, runs "+dn2"). A direct caller's launch returns wrong results."""
    global SHFL_BROKEN
    key = kernel.hash
    if key in _SHFL_VERIFIED:
        return
    problems = shfl_ttgir_problems(kernel.asm["ttgir"])
    if problems:
        msg = ("dnorm2: the compiled \"shfl\" kernel breaks its lane contract (quant_hgemvr.shfl_ttgir_problems; "
               "its results are wrong): " + "; ".join(problems) + ".")  # fmt: skip
        if SHFL_STRICT:
            raise RuntimeError(msg + " Run deferred_norm.DN2_FORM = \"thread\" (or INLAID_DECODE_DN2=0) until "
                               "test_dn2_shfl passes again.")  # fmt: skip
        log.error("%s \"+dn2\" is off for this process (quant_hgemvr.SHFL_BROKEN: bucket 1 runs \"swiglu+cfin+g\"); "
                  "INLAID_DECODE_DN2=0 keeps it off at start until test_dn2_shfl passes again.", msg)  # fmt: skip
        SHFL_BROKEN = True
        return
    _SHFL_VERIFIED.add(key)


def _check_dnorm2(x2: torch.Tensor, w: GPTQWeight, dnorm2: tuple, finish: bool, defer: bool, others: tuple,
                  form: str, pairs: torch.Tensor | None, layout_ok: bool) -> None:  # fmt: skip
    """launch_hgemvr's dnorm2 arguments, checked (ValueError). others: norm, swiglu, residual, x_sums."""
    sums, h, h_out, weight, slot = dnorm2
    m, k = x2.shape
    if not (finish and defer) or any(o is not None for o in others) or w.perm is not None:
        raise ValueError("dnorm2: with finish + defer; not with norm, swiglu, residual, x_sums or an act-order perm")
    if sums.dtype != torch.float32 or sums.shape != (m, k) or sums.stride(1) != 1:
        raise ValueError(f"dnorm2: the producer's sums must be fp32 [{m}, {k}] row-major")
    for t in (h, h_out):
        if t.dtype != torch.float16 or t.shape != (m, k) or t.stride(1) != 1 or t.stride(0) != h.stride(0):
            raise ValueError(f"dnorm2: h and h_out must be fp16 [{m}, {k}] row-major with one row stride")
    if h_out.data_ptr() == h.data_ptr():
        raise ValueError("dnorm2: h_out must be another buffer than h (other programs still read h)")
    for t in (weight, pairs) if form == "shfl" else (weight,):
        if t is None or t.shape != (k,) or t.dtype != torch.float16 or t.stride(0) != 1:
            raise ValueError(f"dnorm2: the norm weight (and with shfl its pair-ordered copy) must be a contiguous "
                             f"fp16 vector of {k}")  # fmt: skip
    # "thread" loads 16-byte vectors of the weight, h and the sums at every word row (and _dn2_rows vectors h_out's
    # stores); "shfl" (and "thread" as its fallback) the same buffers
    named = {"sums": sums, "h": h, "h_out": h_out, "the norm weight": weight}
    for name, t in (named | {"the pair-ordered norm weight": pairs} if form == "shfl" else named).items():
        if t.data_ptr() % 16:
            raise ValueError(f"dnorm2: {name} must be 16-byte aligned (16-byte vector loads), at {t.data_ptr()}")
    if h.stride(0) % 8 or sums.stride(0) % 4:
        raise ValueError(f"dnorm2: h's row stride must be a multiple of 8 and the sums' of 4 (16-byte aligned rows), "
                         f"got {h.stride(0)} and {sums.stride(0)}")  # fmt: skip
    if slot.dtype != torch.float32 or not slot.is_contiguous() or slot.numel() < m:
        raise ValueError("dnorm2: the slot is a contiguous fp32 region of at least M values")
    if form not in DN2_FORMS:
        raise ValueError(f"dnorm2: dn2_form must be one of {DN2_FORMS}, got {form!r}")
    if form == "shfl" and use_asm() and not layout_ok:
        raise ValueError("dnorm2: the shfl formation runs only where its lane layout was verified (shfl_layout_ok)")


def _dnorm2_launch(dnorm2: tuple, w: GPTQWeight, grid: tuple[int, int, int], args: tuple, iters: int, block_m: int,
                   block_k: int, form: str, pairs: torch.Tensor | None) -> tuple[tuple[int, int, int], tuple, Any,
                                                                                tuple, int]:  # fmt: skip
    """launch_hgemvr's dnorm2 launch (checked: _check_dnorm2): x is read from the producer's sums and h (their row
    strides), one more N column; (grid, args, the norm weight's pointer ("shfl": the pair-ordered copy), the kernel's
    (dh, dho, dslot, stride_dhm, NORM_K), SLICE: _dn2_rows' K slice in one load (a power of 2) or 0: in BLOCK_K
    chunks)."""
    sums, h, h_out, weight, slot = dnorm2
    args = (sums, *args[1:14], sums.stride(0), *args[15:])
    slice_k = triton.next_power_of_2(iters * block_k)
    return ((grid[0] + 1, grid[1], grid[2]), args, weight if form == "thread" else pairs,
            (h, h_out, slot, h.stride(0), w.in_features),
            slice_k if slice_k * block_m <= DN2_ONE_LOAD else 0)  # fmt: skip


def launch_hgemvr(x2: torch.Tensor, w: GPTQWeight, block_m: int, block_n: int, block_k: int, split_k: int,
                  num_warps: int, y: torch.Tensor, burst: bool = False, const_stride: bool = False,
                  pin: bool = False, swiglu: torch.Tensor | None = None, finish: bool = False,
                  norm: tuple[torch.Tensor, torch.Tensor, float] | None = None,
                  residual: torch.Tensor | None = None, norm_fast: bool = False,
                  maxnreg: int | None = None, defer: bool = False,
                  sums: torch.Tensor | None = None, x_sums: torch.Tensor | None = None,
                  x_norm: tuple[torch.Tensor, int, float] | None = None,
                  dnorm2: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                  dn2_form: str = "thread", dn2_pairs: torch.Tensor | None = None) -> torch.Tensor | None:  # fmt: skip
    """y[M, N] = x2[M, K] @ W for 4-bit weights and fp16 x, block_m rows of x per program.
    burst: each program's K tiles (1..4, i.e. split_k >= K tiles / 4) are all loaded before any is used;
    otherwise a look-ahead-1 loop over the program's tiles. const_stride: compile the word row stride in (one
    build per weight width). pin: the next tile's (burst: all tiles') loads stay issued before this tile's
    arithmetic, whose zero constants pass through a barrier that returns a value (bar.red); without it ptxas sinks
    the loads below the arithmetic, into the same registers, and each tile's load latency is exposed (NOTES.md v7).
    swiglu (act [M, N / 2]; needs N / 2 % block_n == 0): W is a gate/up weight and act = silu(gate) * up is written
    instead of y (swiglu_epilogue; y is not touched). finish (split-K only; not with swiglu): the programs only add
    their partial sums into the workspace (no arrival counter, no last program) and a second kernel
    (quant_common.finish_rows, PDL-aware) writes y and clears the workspace: kinds ending in "f".
    norm (weight [K], sums of squares [>= M] fp32, eps): x2 is the residual stream h and the GEMV's x is
    RMSNorm(h) (add_rms_norm's rounding), normalised on load from the rows' sums of squares (norm_epilogue);
    norm_fast: r rounded to fp16 and two half2 multiplies per x pair (norm_epilogue.norm_pair's mode 2).
    maxnreg: ptxas's register cap per thread (None: its own choice), e.g. to keep a grid in one wave.
    residual (sums of squares [>= M] fp32, to add into; not with swiglu / finish): y is the residual stream and the
    GEMV adds its output into it in place (h = fp16(h + fp16(x2 @ W))), adding each row's sum(h^2) into the slot.
    defer (with finish and split-K only): finish_rows is not launched and the workspace is returned: its first M * N
    values (row-major) hold y's fp32 sums, which the caller's next kernel reads and clears (consumer_finish, the
    "cfin" decode fusion); y is not written. Otherwise None. sums (with defer; fp32, contiguous, >= M * N zeros):
    the sums go there instead of the shared workspace, and that region (not the workspace) is returned
    (quant_common.qkv_sums: the "+q" fusion).
    x_sums (fp32 [M, 2 K], row-major; not with norm / swiglu; no act-order perm): the x the GEMV multiplies is
    silu(gate) * up of a deferred gate/up GEMV's sums (gate k at column k, up at K + k), computed on load with
    swiglu_epilogue's rounding (_x_sums_load / _x_act; the "+g" decode fusion, consumer_finish.gemv_gu_sums); x2 gives only
    the shapes (fp16 [M, K]; never read) and the sums are left as they are (a later kernel clears them).
    x_norm (slot, norm_k, eps; with x_sums): the gate / up sums carry no RMSNorm scale yet (their GEMV ran with
    dnorm2): both are multiplied by r = rsqrt(slot[m] / norm_k + eps) before swiglu_epilogue's rounding.
    dnorm2 (sums, h, h_out, weight, slot; with finish + defer only; the "+dn2" decode fusion,
    deferred_norm.gemv_dnorm2): x is RMSNorm(h + fp16(sums)) without its scale r: the GEMV multiplies its tiles by
    u = fp16(h' w), h' = fp16(h + fp16(sums)) (sums fp32 [M, K] of a deferred producer GEMV, h fp16 [M, K] the
    residual stream, both row-major; no scale: u overflows where |h'_k w_k| > 65504), loaded after the PDL wait; the
    grid has one more N column whose programs (one per K slice and row block) store h' to h_out (another buffer than
    h: other programs still read h) and add their slice's sum(h'^2) into slot[m] (fp32 [>= M], zero before), which
    the consumer of the deferred sums turns into r = rsqrt(slot / K + eps) after its wait (down's x_norm; the row
    attention's rnorm). x2 gives only the shapes (pass h); sums and h are left as they are. dn2_form (module
    docstring): "thread" or "shfl" (dn2_pairs: the norm weight in pair order, model.weights.norm_pairs; on CUDA only
    where shfl_layout_ok, and its compiled kernel's layout is checked once: verify_shfl_kernel); both give the same
    bits. sums, h, h_out, the weight and the pairs 16-byte aligned, h's row stride a multiple of 8, the sums' of 4
    ("thread"'s 16-byte vector loads)."""
    if w.bits != 4 or x2.dtype != torch.float16:
        raise ValueError("the half2 GEMV takes 4-bit weights and fp16 activations")
    if x_sums is not None:
        if (norm is not None or swiglu is not None or w.perm is not None or x_sums.dtype != torch.float32
                or x_sums.dim() != 2 or x_sums.shape != (x2.shape[0], 2 * w.in_features) or x_sums.stride(1) != 1):  # fmt: skip
            raise ValueError(f"x_sums: fp32 [{x2.shape[0]}, {2 * w.in_features}] row-major, without norm, swiglu "
                             "or an act-order perm")  # fmt: skip
    if block_k not in (64, 128) or w.group_size % block_k or w.in_features % block_k:
        raise ValueError(f"block_k={block_k} must be 64 or 128 and divide the group ({w.group_size}) and K")
    if x_norm is not None and (x_sums is None or x_norm[0].dtype != torch.float32 or not x_norm[0].is_contiguous()
                               or x_norm[0].numel() < x2.shape[0] or x_norm[1] <= 0):  # fmt: skip
        raise ValueError("x_norm: with x_sums, a contiguous fp32 slot of at least M values and norm_k > 0")
    if dnorm2 is not None:
        _check_dnorm2(x2, w, dnorm2, finish, defer, (norm, swiglu, residual, x_sums), dn2_form, dn2_pairs,
                      shfl_layout_ok(block_m, block_n, block_k, num_warps, burst, pin, w.out_features))  # fmt: skip
    x2 = rows16(x2)
    grid, args, consts = split_launch(x2, w, y, block_m, block_n, block_k, split_k)
    iters = args[12]
    if burst and iters > 4:
        raise ValueError(f"burst takes at most 4 K tiles per program (got {iters}: raise split_k)")
    act = y if swiglu is None else swiglu
    if finish and swiglu is not None:
        raise ValueError("finish and swiglu are separate epilogues")
    if residual is not None and (finish or swiglu is not None):
        raise ValueError("the residual epilogue replaces finish and swiglu")
    for t in (norm[1] if norm is not None else None, residual):
        if t is not None and (t.dtype != torch.float32 or t.numel() < x2.shape[0] or not t.is_contiguous()):
            raise ValueError("a sum-of-squares slot is a contiguous fp32 vector of at least M values")
    if norm is not None and (norm[0].shape != (w.in_features,) or norm[0].dtype != torch.float16
                             or norm[0].stride(0) != 1 or norm[0].data_ptr() % 16):  # fmt: skip
        raise ValueError("the norm weight is a contiguous, 16-byte aligned fp16 vector of K values")
    if residual is not None and y.stride(1) != 1:
        raise ValueError("the residual stream must be row-major")
    fin = finish and grid[1] > 1  # without split-K the programs store y themselves
    if defer and not fin:
        raise ValueError("defer needs the finish epilogue with split-K (more than one K split)")
    if sums is not None:
        if (not defer or sums.dtype != torch.float32 or not sums.is_contiguous()
                or sums.numel() < x2.shape[0] * w.out_features):  # fmt: skip
            raise ValueError("sums: a contiguous fp32 region of at least M * N values, with defer")
        args = (*args[:6], sums, *args[7:])
    if swiglu is not None:  # programs per (tile pair, 2 x split): one reduction of 2 x split arrivals per pair
        if w.out_features % (2 * block_n) or act.shape != (x2.shape[0], w.out_features // 2):
            raise ValueError(f"swiglu: act {tuple(act.shape)} for N = {w.out_features} in tiles of {block_n}")
        grid, args = swiglu_launch(x2, w, grid, args, block_m)
        consts["USE_SPLIT"] = True
    nw, ssi, eps = norm if norm is not None else (y, y, 0.0)
    sso = residual if residual is not None else y
    inter = w.out_features // 2
    if x_sums is not None:  # x is read from the sums: their pointer and row stride, up's offset K
        args = (x_sums, *args[1:14], x_sums.stride(0), *args[15:])
        inter = w.in_features
    dn: tuple = (y, y, y, 0, 1)  # dh, dho, dslot, stride_dhm, NORM_K (unused)
    if x_norm is not None:
        eps = float(x_norm[2])
        dn = (y, y, x_norm[0], 0, int(x_norm[1]))
    slice_k = 0  # _dn2_rows: the K slice in one load (its values a row, a power of 2), or 0: in BLOCK_K chunks
    if dnorm2 is not None:
        grid, args, nw, dn, slice_k = _dnorm2_launch(
            dnorm2, w, grid, args, iters, block_m, block_k, dn2_form, dn2_pairs
        )
    asm = use_asm()
    kernel = _hgemvr_kernel[grid](*args, act, inter, act.stride(0), nw, ssi, sso, eps, *dn, **consts, USE_ASM=asm,
                         BURST=iters if burst else 0, SWIGLU=swiglu is not None,
                         QK_CONST=w.qweight.stride(0) if const_stride else 0,
                         EVEN_N=w.out_features % block_n == 0, PIN=pin, FINISH=fin, NORM_IN=0 if norm is None else 2 if norm_fast else 1,
                         RES_OUT=residual is not None, XSUMS=x_sums is not None, XNORM=x_norm is not None,
                         DNORM2=0 if dnorm2 is None else DN2_FORMS.index(dn2_form) + 1, SLICE=slice_k,
                         BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=num_warps,
                         num_stages=1, **launch_kw(), **({} if maxnreg is None else {"maxnreg": maxnreg}))  # fmt: skip
    if asm and dnorm2 is not None and dn2_form == "shfl" and kernel is not None:  # (None: nothing was launched)
        verify_shfl_kernel(kernel)  # (its TTGIR once per compiled variant)
    if defer:
        return args[6]
    if fin:
        finish_rows(args[6], y)
    return None
