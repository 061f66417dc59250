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
config, as without XSUMS; after them: 128, two waves).
DNORM (launch_hgemvr's `dnorm`; the "+dn" decode fusion, kernels.deferred_norm, opt-in: measured slower): x is the
deferred RMSNorm of h + fp16(a producer's sums), formed on load in XSUMS's layout (_dn_load / _dn_ready) with r
applied by the output's finisher (_store_rows_dn, or the down GEMV's XNORM: `x_norm`). DN_ABL: bench ablations only.
DNORM2 (launch_hgemvr's `dnorm2`; the "+dn2" decode fusion, deferred_norm.gemv_dnorm2, opt-in: measured slower): x is
u = fp16(h' w) formed per thread in the plain x-pair layout from the sums, h and the norm weight (_dn2_sums / _dn2_u,
no barrier), deferred; one extra N column of programs stores h' and the rows' sum(h'^2) (_dn2_rows).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .gptq_packing import GPTQWeight
from .norm_epilogue import norm_chunks, norm_scale, store_residual
from .pdl import gdc_late, gdc_start, gdc_wait, gdc_wait_first, launch_kw
from .quant_common import bucket_workspace, finish_rows, red_tile, split_launch
from .quant_hgemv import _fma_half2, _hi_f32, _lo_f32, _x_words, deq_half2_ptx, rows16, store_rows, use_asm
from .swiglu_epilogue import store_swiglu

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
        xs = ((v[0], v[1], v[2], v[3]), (v[4], v[5], v[6], v[7]), (v[8], v[9], v[10], v[11]),
              (v[12], v[13], v[14], v[15]))  # fmt: skip
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
    if XNORM:  # the deferred norm (DNORM 1 upstream): the gate / up sums carry no r yet, rn [BM, 1, ..] does
        g = g * rn
        u = u * rn
    g = g.to(tl.float16).to(tl.float32)  # gate_up's rounding
    u = u.to(tl.float16).to(tl.float32)
    act = (g / (1.0 + tl.exp(-g))).to(tl.float16).to(tl.float32)  # silu rounded like F.silu (kernels.silu_mul)
    return _pack_pairs((act * u).to(tl.float16), USE_ASM)


@triton.jit
def _pack_pairs(v, USE_ASM: tl.constexpr):
    """The x pairs of a tile (what _x_chunks returns) from its fp16 values v in _x_sums_load's layout (_x_act)."""
    bits = v.to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
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


@triton.jit
def _dn_k(kt, RO: tl.constexpr):
    """The K indices of _x_sums_load's layout [1, 2, 2, RO, 2, 2, 2] for the tile at row kt."""
    c1 = tl.arange(0, 2)[None, :, None, None, None, None, None]
    c0 = tl.arange(0, 2)[None, None, :, None, None, None, None]
    ro = tl.arange(0, RO)[None, None, None, :, None, None, None]
    hh = tl.arange(0, 2)[None, None, None, None, :, None, None]
    i1 = tl.arange(0, 2)[None, None, None, None, None, :, None]
    i0 = tl.arange(0, 2)[None, None, None, None, None, None, :]
    return kt + ((c1 * 2 + c0) * RO + ro) * 8 + hh * 4 + i1 * 2 + i0


@triton.jit
def _dn_load(s_ptr, h_ptr, nw_ptr, offs_m, kt, stride_sm, stride_hm, RO: tl.constexpr, ABL: tl.constexpr = 0):
    """DNORM (the deferred norm): the K tile's producer sums (fp32), residual h and norm weight (fp16), each value
    once per CTA in _x_sums_load's layout; raw loads (a look-ahead tile carries them, _dn_ready uses them)."""
    k = _dn_k(kt, RO)
    m7 = offs_m.reshape(offs_m.shape[0], 1, 1, 1, 1, 1, 1)
    hh = tl.load(h_ptr + m7 * stride_hm + k)
    if ABL >= 3:  # (ablation: h only)
        sums = hh.to(tl.float32)
        nw = hh
    else:
        sums = tl.load(s_ptr + m7 * stride_sm + k)
        nw = tl.load(nw_ptr + k)
    return sums, hh, nw


@triton.jit
def _dn_ready(tile, kt, ok, ho_ptr, offs_m, st_ok, stride_hm, RO: tl.constexpr, BLOCK_K: tl.constexpr,
              USE_ASM: tl.constexpr, ABL: tl.constexpr = 0):  # fmt: skip
    """A DNORM tile (its x as the raw (sums, h, w) of _dn_load) made ready: h' = fp16(h + fp16(sums)) (fused_norm's
    rounding of the residual add), stored to ho where st_ok ([BM, 1, ..]: the pid_n == 0 programs' rows in range);
    per row the tile's sum of h'^2 (ss [BM, 1, 1]; 0 where not ok: a burst tile past the program's last re-reads it)
    and a power of two sc = 2^-floor(log2(mean(h'^2)) / 2) with 1 <= rms(h' * sc) < 2; x = u = fp16(w * (h' * sc))
    (h' * sc exact), so |u| <= 2 sqrt(BLOCK_K) |w| <= 22.7 |w| where today's x = fp16(w * fp16(h * r)) is bounded
    by sqrt(K) |w| = 64 |w| at K 4096: no u overflows where x could not, and u has x's magnitude (r ~ sc), so no
    more fp16 underflow. The tile's group scale is multiplied by 1 / sc (exact), so the GEMV's fp32 sum is
    W (h' o w) = y / r; the consumer's finisher applies r = rsqrt(sum(h'^2) / K + eps) from the rows' slot."""
    sums, hh, nw = tile[4]
    if ABL >= 3:  # (ablations 1-3, wrong results: the per-tile reduction, the h' store, the sums / weight loads out)
        xs = _pack_pairs(hh, USE_ASM)
        one = tl.full((hh.shape[0], 1, 1), 1.0, tl.float32)
        return (tile[0], tile[1] * one, tile[2], tile[3], xs, xs), one * 0.0
    else:
        return _dn_ready_body(tile, sums, hh, nw, kt, ok, ho_ptr, offs_m, st_ok, stride_hm, RO, BLOCK_K, USE_ASM, ABL)


@triton.jit
def _dn_ready_body(tile, sums, hh, nw, kt, ok, ho_ptr, offs_m, st_ok, stride_hm, RO: tl.constexpr,
                   BLOCK_K: tl.constexpr, USE_ASM: tl.constexpr, ABL: tl.constexpr):  # fmt: skip
    """_dn_ready's work (ABL < 3)."""
    hp = (hh.to(tl.float32) + sums.to(tl.float16).to(tl.float32)).to(tl.float16)
    m7 = offs_m.reshape(offs_m.shape[0], 1, 1, 1, 1, 1, 1)
    if ABL < 2:
        tl.store(ho_ptr + m7 * stride_hm + _dn_k(kt, RO), hp, mask=st_ok)
    h32 = hp.to(tl.float32)
    if ABL >= 1:
        xs = _pack_pairs((h32 * nw.to(tl.float32)).to(tl.float16), USE_ASM)
        one = tl.full((hh.shape[0], 1, 1), 1.0, tl.float32)
        return (tile[0], tile[1] * one, tile[2], tile[3], xs, xs), one * 0.0
    else:
        return _dn_scaled(tile, h32, nw, ok, BLOCK_K, USE_ASM)


@triton.jit
def _dn_scaled(tile, h32, nw, ok, BLOCK_K: tl.constexpr, USE_ASM: tl.constexpr):
    """_dn_ready's scaled x and the tile's sum of h'^2."""
    # one reduction over the tile (reordered: a reduction axis by axis took 255 registers at 7B, this one none extra)
    ss = tl.sum(tl.reshape(h32 * h32, (h32.shape[0], BLOCK_K), can_reorder=True), axis=1)  # [BM]
    e = ((((ss / BLOCK_K).to(tl.int32, bitcast=True)) >> 23) & 255) - 127  # floor(log2(mean)) (0: -127)
    se = tl.minimum(tl.maximum(-(e >> 1), -60), 60)
    sc = ((se + 127) << 23).to(tl.float32, bitcast=True)
    inv = ((127 - se) << 23).to(tl.float32, bitcast=True)
    u = (h32 * sc[:, None, None, None, None, None, None] * nw.to(tl.float32)).to(tl.float16)
    xs = _pack_pairs(u, USE_ASM)
    ss = tl.where(ok, ss, 0.0)[:, None, None]
    return (tile[0], tile[1] * inv[:, None, None], tile[2], tile[3], xs, xs), ss


def _dn2_sums_ptx(chunk_bytes: int) -> str:
    """DNORM2: the fp32 producer sums s[k..k+7] of 4 word rows chunk_bytes apart (two 16-byte loads each)."""
    return "".join(f"ld.global.v4.f32 {{${8 * i}, ${8 * i + 1}, ${8 * i + 2}, ${8 * i + 3}}}, [$32+{i * chunk_bytes}];\n"
                   f"ld.global.v4.f32 {{${8 * i + 4}, ${8 * i + 5}, ${8 * i + 6}, ${8 * i + 7}}}, [$32+{i * chunk_bytes + 16}];\n"
                   for i in range(4))  # fmt: skip


_DN2_SUMS_RO4 = tl.constexpr(_dn2_sums_ptx(128))  # BLOCK_K 128: 32 fp32 values a chunk
_DN2_SUMS_RO2 = tl.constexpr(_dn2_sums_ptx(64))
# u pairs of one word row: (s[i], s[4 + i]) to half2 (rn), + the h pair (rn), * the norm weight pair (rn); explicit
# rounding modifiers, so ptxas fuses nothing (fp16(h + fp16(s)) and fp16(h' w) exactly as the fp32 reference rounds)
_DN2_U_PTX = tl.constexpr("".join(f"cvt.rn.f16x2.f32 t, ${8 + i}, ${4 + i};\nadd.rn.f16x2 t, t, ${12 + i};\n"
                                  f"mul.rn.f16x2 ${i}, t, ${16 + i};\n" for i in range(4)))  # fmt: skip


@triton.jit
def _ld8(p):
    """8 fp32 values p[0..7] (the interpreter's DNORM2 sums)."""
    return (tl.load(p), tl.load(p + 1), tl.load(p + 2), tl.load(p + 3), tl.load(p + 4), tl.load(p + 5),
            tl.load(p + 6), tl.load(p + 7))  # fmt: skip


@triton.jit
def _dn2_sums(s_ptr, offs_m, kr, stride_sm, USE_ASM: tl.constexpr, RO: tl.constexpr):
    """DNORM2: the producer's fp32 sums of the 4 row chunks of the tile whose chunk-0 rows start at K index kr
    ([1, RO, 1]), in the x-pair layout (each thread its own word rows; duplicates across the CTA hit L1): 4 chunks
    of 8 values s[k..k+7] [BM, RO, 1]. Raw loads (a look-ahead tile carries them; _dn2_u uses them)."""
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
        u = tl.inline_asm_elementwise("{\n.reg .b32 t;\n" + _DN2_U_PTX + "}", "=&r,=&r,=&r,=&r," + "f," * 8 + "r,r,r,r,r,r,r,r",
                                      [s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], hw[0], hw[1], hw[2], hw[3],
                                       ww[0], ww[1], ww[2], ww[3]], dtype=(tl.int32,) * 4, is_pure=True, pack=1)  # fmt: skip
    else:
        u = (_u_half(_lo_f32(hw[0]), s[0], _lo_f32(ww[0])) | (_u_half(_hi_f32(hw[0]), s[4], _hi_f32(ww[0])) << 16),
             _u_half(_lo_f32(hw[1]), s[1], _lo_f32(ww[1])) | (_u_half(_hi_f32(hw[1]), s[5], _hi_f32(ww[1])) << 16),
             _u_half(_lo_f32(hw[2]), s[2], _lo_f32(ww[2])) | (_u_half(_hi_f32(hw[2]), s[6], _hi_f32(ww[2])) << 16),
             _u_half(_lo_f32(hw[3]), s[3], _lo_f32(ww[3])) | (_u_half(_hi_f32(hw[3]), s[7], _hi_f32(ww[3])) << 16))  # fmt: skip
    return u


@triton.jit
def _hmul4(a, b, USE_ASM: tl.constexpr):
    """(DNORM2's ablation 3) 4 half2 products a * b (rn) of two 4-tuples of half2 words."""
    if USE_ASM:
        u = tl.inline_asm_elementwise("mul.rn.f16x2 $0, $4, $8;\nmul.rn.f16x2 $1, $5, $9;\nmul.rn.f16x2 $2, $6, $10;\n"
                                      "mul.rn.f16x2 $3, $7, $11;", "=r,=r,=r,=r,r,r,r,r,r,r,r,r",
                                      [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]], dtype=(tl.int32,) * 4,
                                      is_pure=True, pack=1)  # fmt: skip
    else:
        u = (_hfma2(a[0], b[0], a[0] & 0), _hfma2(a[1], b[1], a[1] & 0), _hfma2(a[2], b[2], a[2] & 0),
             _hfma2(a[3], b[3], a[3] & 0))  # fmt: skip
    return u


@triton.jit
def _dn2_x(xs, gs, USE_ASM: tl.constexpr):
    """DNORM2: a tile's x pairs (what _x_chunks returns) from its raw (sums, h pairs) xs and norm-weight pairs gs."""
    s, hw = xs
    return (_dn2_u(s[0], hw[0], gs[0], USE_ASM), _dn2_u(s[1], hw[1], gs[1], USE_ASM),
            _dn2_u(s[2], hw[2], gs[2], USE_ASM), _dn2_u(s[3], hw[3], gs[3], USE_ASM))  # fmt: skip


@triton.jit
def _dn2_rows(s_ptr, h_ptr, ho_ptr, slot_ptr, offs_m, m_ok, k_first, k_end, stride_sm, stride_hm,
              BLOCK_M: tl.constexpr, SLICE: tl.constexpr):  # fmt: skip
    """DNORM2's extra program of K slice [k_first, k_end) (after the PDL wait): h' = fp16(h + fp16(s)) of the rows'
    slice stored to ho (ping-pong: the other programs still read h) and the slice's sum(h'^2) added into slot[m]
    (zero before), all in one load of SLICE >= k_end - k_first values a row."""
    m2 = offs_m.reshape(BLOCK_M, 1)
    ok2 = m_ok.reshape(BLOCK_M, 1)
    k = k_first + tl.arange(0, SLICE)[None, :]
    kin = k < k_end
    s = tl.load(s_ptr + m2 * stride_sm + k, mask=kin, other=0.0)
    h = tl.load(h_ptr + m2 * stride_hm + k, mask=kin, other=0.0)
    hp = (h.to(tl.float32) + s.to(tl.float16).to(tl.float32)).to(tl.float16)
    tl.store(ho_ptr + m2 * stride_hm + k, hp, mask=ok2 & kin)
    h32 = hp.to(tl.float32)
    ss = tl.sum(h32 * h32, axis=1)
    tl.atomic_add(slot_ptr + offs_m.reshape(BLOCK_M), ss, mask=m_ok.reshape(BLOCK_M), sem="relaxed")


@triton.jit
def _store_rows_dn(acc, SCALE: tl.constexpr, offs_m, m_ok, offs_n, mask_n, y_ptr, stride_ym, stride_yn, ws_ptr, N,
                   cnt_ptr, pid_m, pid_n, SPLIT_K, USE_SPLIT: tl.constexpr, slot_ptr, ss, NORM_K, eps):  # fmt: skip
    """store_rows for DNORM 2 (a self-finishing consumer): y = fp16(r * sum). With split-K every program adds its K
    slice's sum of h'^2 into its rows' slot of this N tile (slot[m, pid_n]) before its arrival (the partial sums'
    ordering: quant_common.store_tile), so the last arriver reads the row's complete sum there (and clears it);
    without split-K the program's own ss is the row's."""
    out = tl.sum(acc, axis=1, keep_dims=True) * SCALE  # [BM, 1, BN]
    mask = m_ok & mask_n
    y_ptrs = y_ptr + offs_m * stride_ym + offs_n * stride_yn
    if USE_SPLIT:
        ws_ptrs = ws_ptr + offs_m * N + offs_n
        sl = slot_ptr + offs_m * tl.num_programs(0) + pid_n  # [BM, 1, 1]
        tl.atomic_add(sl, ss, mask=m_ok, sem="relaxed")
        tl.atomic_add(ws_ptrs, out, mask=mask, sem="relaxed")
        tl.debug_barrier()
        tile = pid_m * tl.num_programs(0) + pid_n
        arrived = tl.atomic_add(cnt_ptr + tile, 1, sem="acq_rel")
        if arrived == SPLIT_K - 1:
            bits = tl.atomic_xchg(ws_ptrs.to(tl.pointer_type(tl.int32)), tl.zeros(out.shape, tl.int32), mask=mask,
                                  sem="relaxed")  # fmt: skip
            sb = tl.atomic_xchg(sl.to(tl.pointer_type(tl.int32)), tl.zeros(ss.shape, tl.int32), mask=m_ok,
                                sem="relaxed")  # fmt: skip
            r = 1.0 / tl.sqrt(sb.to(tl.float32, bitcast=True) / NORM_K + eps)
            tl.store(y_ptrs, (bits.to(tl.float32, bitcast=True) * r).to(y_ptrs.dtype.element_ty), mask=mask)
            tl.store(cnt_ptr + tile, 0)
    else:
        r = 1.0 / tl.sqrt(ss / NORM_K + eps)
        tl.store(y_ptrs, (out * r).to(y_ptrs.dtype.element_ty), mask=mask)


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
            RO: tl.constexpr, nw_ptr, NORM: tl.constexpr, XSUMS: tl.constexpr = 0, INTER=0, DNORM: tl.constexpr = 0,
            dh_ptr=None, stride_hm=0, ABL: tl.constexpr = 0, DNORM2: tl.constexpr = 0):  # fmt: skip
    """A tile from _tile_w completed with its x pairs (the tile _tile_in returns). NORM: x is the residual stream,
    and the norm weight's pairs gs come along (normalised only where the tile is used, _use_r: normalising here
    would wait for the loads before the previous tile's arithmetic)."""
    if XSUMS:  # x = silu(gate) * up from the gate/up GEMV's deferred sums (x_ptr: fp32): the raw sums (_use_r)
        xs = _x_sums_load(x_ptr, offs_m, kt, stride_xm, INTER, XSUMS)
        gs = xs  # (never with NORM)
    elif DNORM:  # the deferred norm (x_ptr: the producer's fp32 sums): the raw (sums, h, w) (_dn_ready)
        xs = _dn_load(x_ptr, dh_ptr, nw_ptr, offs_m, kt, stride_xm, stride_hm, DNORM, ABL)
        gs = xs
    elif DNORM2 >= 4:  # (bench ablation, wrong results: x = h, the plain x load from h)
        xs = _x_chunks(dh_ptr, perm_ptr, offs_m, kt + offs_ro * 8, stride_hm, False, USE_ASM, RO)
        gs = xs
    elif DNORM2 == 3:  # (bench ablation, wrong results: u = fp16(h w), no sums loaded or added)
        kr = kt + offs_ro * 8
        gs = _x_chunks(nw_ptr, perm_ptr, offs_m * 0, kr, 0, False, USE_ASM, RO)
        hw = _x_chunks(dh_ptr, perm_ptr, offs_m, kr, stride_hm, False, USE_ASM, RO)
        xs = (_hmul4(hw[0], gs[0], USE_ASM), _hmul4(hw[1], gs[1], USE_ASM), _hmul4(hw[2], gs[2], USE_ASM),
              _hmul4(hw[3], gs[3], USE_ASM))  # fmt: skip
        gs = xs
    elif DNORM2:  # the deferred norm in the x-pair layout (x_ptr: the producer's fp32 sums): raw (sums, h pairs)
        kr = kt + offs_ro * 8
        gs = _x_chunks(nw_ptr, perm_ptr, offs_m * 0, kr, 0, False, USE_ASM, RO)  # the norm weight's pairs
        xs = (_dn2_sums(x_ptr, offs_m, kr, stride_xm, USE_ASM, RO),
              _x_chunks(dh_ptr, perm_ptr, offs_m, kr, stride_hm, False, USE_ASM, RO))  # fmt: skip
        if DNORM2 == 2:  # (eager: u formed here, only its 16 words carried)
            xs = _dn2_x(xs, gs, USE_ASM)
            gs = xs
    else:
        xs = _x_chunks(x_ptr, perm_ptr, offs_m, kt + offs_ro * 8, stride_xm, HAS_PERM, USE_ASM, RO)
        if NORM:
            gs = _x_chunks(nw_ptr, perm_ptr, offs_m * 0, kt + offs_ro * 8, 0, HAS_PERM, USE_ASM, RO)
        else:
            gs = xs  # no registers: the same values, never read
    return tw[0], tw[1], tw[2], tw[3], xs, gs


@triton.jit
def _tile_in(kt, ok, w_rows, x_ptr, sc_ptr, qz_ptr, perm_ptr, offs_m, offs_n, offs_ro, stride_xm, sqk,
             stride_sg, stride_sn, stride_zg, stride_zn,
             GROUP: tl.constexpr, SYM: tl.constexpr, ZERO_OFFSET: tl.constexpr, HAS_PERM: tl.constexpr,
             USE_ASM: tl.constexpr, RO: tl.constexpr, nw_ptr, NORM: tl.constexpr, XSUMS: tl.constexpr = 0,
             INTER=0, DNORM: tl.constexpr = 0, dh_ptr=None, stride_hm=0, ABL: tl.constexpr = 0,
             DNORM2: tl.constexpr = 0):  # fmt: skip
    """Everything the K tile at row kt needs: its 4 word chunks, scale, zero constants, x pairs per chunk. All loads
    unmasked (offs_m, offs_n clamped in range by the caller); ok False: scale 0, so the tile adds exactly 0."""
    tw = _tile_w(kt, ok, w_rows, sc_ptr, qz_ptr, offs_n, sqk, stride_sg, stride_sn, stride_zg, stride_zn,
                 GROUP, SYM, ZERO_OFFSET, USE_ASM, RO)  # fmt: skip
    return _with_x(tw, kt, x_ptr, perm_ptr, offs_m, offs_ro, stride_xm, HAS_PERM, USE_ASM, RO, nw_ptr, NORM, XSUMS,
                   INTER, DNORM, dh_ptr, stride_hm, ABL, DNORM2)  # fmt: skip


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
def _use_r(
    acc,
    tile,
    USE_ASM: tl.constexpr,
    r,
    NORM: tl.constexpr,
    XSUMS: tl.constexpr = 0,
    rn=1.0,
    XNORM: tl.constexpr = 0,
    DNORM2: tl.constexpr = 0,
):
    """acc + s * (the tile's products), the 4 chunks summed in half2 first; NORM: x normalised first (norm_epilogue);
    XSUMS: x computed from the tile's gate / up sums first (_x_act)."""
    ws, s, c0, c1, xs, gs = tile
    if XSUMS:
        xs = _x_act(xs[0], xs[1], USE_ASM, rn, XNORM)
    if DNORM2 == 1:  # (DNORM2 lazy: u from the tile's raw sums, h and norm-weight pairs here)
        xs = _dn2_x(xs, gs, USE_ASM)
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
    NORM_IN: tl.constexpr = 0, RES_OUT: tl.constexpr = 0, XSUMS: tl.constexpr = 0, DNORM: tl.constexpr = 0,
    XNORM: tl.constexpr = 0, DN_ABL: tl.constexpr = 0, DNORM2: tl.constexpr = 0, SLICE: tl.constexpr = 0,
):  # fmt: skip
    pid_n = tl.program_id(0)
    if DNORM2:  # the grid's last N column (one program per K slice and row block): the rows' h' and sum(h'^2)
        x_prog = pid_n == tl.num_programs(0) - 1  # (_dn2_rows); it loads tile N - 1's first tile and adds nothing
        pid_n = tl.minimum(pid_n, tl.num_programs(0) - 2)
    else:
        x_prog = pid_n < 0
    pid_k = tl.program_id(1)
    pid_m = tl.program_id(2)
    RO: tl.constexpr = BLOCK_K // 32
    XRO: tl.constexpr = RO if XSUMS else 0  # XSUMS for _with_x: RO as a constexpr (constexprs in a tuple are not)
    DRO: tl.constexpr = RO if DNORM else 0  # (the same for DNORM)
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
    k1 = tl.minimum(k_first + BLOCK_K, last)
    k2 = tl.minimum(k_first + 2 * BLOCK_K, last)
    k3 = tl.minimum(k_first + 3 * BLOCK_K, last)
    if DNORM:  # h' goes out from the pid_n == 0 programs only (one per K slice), rows in range
        st_ok = ((offs_m < M) & (pid_n == 0)).reshape(BLOCK_M, 1, 1, 1, 1, 1, 1)
    ss_acc = tl.zeros((BLOCK_M, 1, 1), dtype=tl.float32)  # DNORM: the rows' sum of h'^2 over this K slice
    gdc_start(USE_GDC)
    gdc_wait_first(USE_GDC)  # mode 3 (ablation): no prefetch
    if USE_GDC == 1 or USE_GDC == 2:  # PDL (kernels.pdl): the first tiles' weights load before the wait
        wargs = (sc_ptr, qz_ptr, offs_nl, sqk, stride_sg, stride_sn, stride_zg, stride_zn, GROUP, SYM, ZERO_OFFSET,
                 USE_ASM, RO)  # fmt: skip
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
        xargs = (x_ptr, perm_ptr, offs_ml, offs_ro, stride_xm, HAS_PERM, USE_ASM, RO, nw_ptr, NORM_IN)
        cur = _with_x(
            cur,
            k_first,
            *xargs,
            XSUMS=XRO,
            INTER=INTER,
            DNORM=DRO,
            dh_ptr=dh_ptr,
            stride_hm=stride_dhm,
            ABL=DN_ABL,
            DNORM2=DNORM2,
        )
        if BURST > 1:
            t1 = _with_x(
                t1,
                k1,
                *xargs,
                XSUMS=XRO,
                INTER=INTER,
                DNORM=DRO,
                dh_ptr=dh_ptr,
                stride_hm=stride_dhm,
                ABL=DN_ABL,
                DNORM2=DNORM2,
            )
            if BURST >= 3:
                t2 = _with_x(
                    t2,
                    k2,
                    *xargs,
                    XSUMS=XRO,
                    INTER=INTER,
                    DNORM=DRO,
                    dh_ptr=dh_ptr,
                    stride_hm=stride_dhm,
                    ABL=DN_ABL,
                    DNORM2=DNORM2,
                )
            if BURST >= 4:
                t3 = _with_x(
                    t3,
                    k3,
                    *xargs,
                    XSUMS=XRO,
                    INTER=INTER,
                    DNORM=DRO,
                    dh_ptr=dh_ptr,
                    stride_hm=stride_dhm,
                    ABL=DN_ABL,
                    DNORM2=DNORM2,
                )
    else:
        r = norm_scale(ssi_ptr, offs_ml, K, eps, NORM_IN, USE_ASM)
        rn = _x_norm_r(dslot_ptr, offs_ml, NORM_K, eps, XNORM)
    args = (x_ptr, sc_ptr, qz_ptr, perm_ptr, offs_ml, offs_nl, offs_ro, stride_xm, sqk, stride_sg, stride_sn,
            stride_zg, stride_zn, GROUP, SYM, ZERO_OFFSET, HAS_PERM, USE_ASM, RO, nw_ptr, NORM_IN)  # fmt: skip
    if USE_GDC != 1 and USE_GDC != 2:
        cur = _tile_in(
            k_first,
            True,
            w_rows,
            *args,
            XSUMS=XRO,
            INTER=INTER,
            DNORM=DRO,
            dh_ptr=dh_ptr,
            stride_hm=stride_dhm,
            ABL=DN_ABL,
            DNORM2=DNORM2,
        )
        if BURST > 1:  # all of the program's tiles in flight before any is used; tiles past `mine` add 0
            t1 = _tile_in(
                tl.minimum(k_first + BLOCK_K, last),
                1 < mine,
                w_rows,
                *args,
                XSUMS=XRO,
                INTER=INTER,
                DNORM=DRO,
                dh_ptr=dh_ptr,
                stride_hm=stride_dhm,
                ABL=DN_ABL,
                DNORM2=DNORM2,
            )
            if BURST >= 3:
                t2 = _tile_in(
                    tl.minimum(k_first + 2 * BLOCK_K, last),
                    2 < mine,
                    w_rows,
                    *args,
                    XSUMS=XRO,
                    INTER=INTER,
                    DNORM=DRO,
                    dh_ptr=dh_ptr,
                    stride_hm=stride_dhm,
                    ABL=DN_ABL,
                    DNORM2=DNORM2,
                )
            if BURST >= 4:
                t3 = _tile_in(
                    tl.minimum(k_first + 3 * BLOCK_K, last),
                    3 < mine,
                    w_rows,
                    *args,
                    XSUMS=XRO,
                    INTER=INTER,
                    DNORM=DRO,
                    dh_ptr=dh_ptr,
                    stride_hm=stride_dhm,
                    ABL=DN_ABL,
                    DNORM2=DNORM2,
                )
    if DNORM2:  # (after the PDL wait: the producer's sums are complete)
        if x_prog:
            _dn2_rows(x_ptr, dh_ptr, dho_ptr, dslot_ptr, offs_ml, m_ok, k_first, k_first + mine * BLOCK_K, stride_xm,
                      stride_dhm, BLOCK_M, SLICE)  # fmt: skip
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
        if DRO:  # x from the producer's sums and h (_dn_ready); tiles past `mine` re-read the last: ss 0
            cur, ss = _dn_ready(cur, k_first, True, dho_ptr, offs_ml, st_ok, stride_dhm, RO, BLOCK_K, USE_ASM, DN_ABL)
            ss_acc += ss
            t1, ss = _dn_ready(t1, k1, 1 < mine, dho_ptr, offs_ml, st_ok, stride_dhm, RO, BLOCK_K, USE_ASM, DN_ABL)
            ss_acc += ss
            if BURST >= 3:
                t2, ss = _dn_ready(t2, k2, 2 < mine, dho_ptr, offs_ml, st_ok, stride_dhm, RO, BLOCK_K, USE_ASM,
                                   DN_ABL)  # fmt: skip
                ss_acc += ss
            if BURST >= 4:
                t3, ss = _dn_ready(t3, k3, 3 < mine, dho_ptr, offs_ml, st_ok, stride_dhm, RO, BLOCK_K, USE_ASM,
                                   DN_ABL)  # fmt: skip
                ss_acc += ss
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
            elif DRO:  # (the same for the deferred norm's x)
                use, ss = _dn_ready(cur, it, True, dho_ptr, offs_ml, st_ok, stride_dhm, RO, BLOCK_K, USE_ASM, DN_ABL)
                ss_acc += ss
            else:
                use = cur
            nxt = _tile_in(
                tl.minimum(it + BLOCK_K, last),
                True,
                w_rows,
                *args,
                XSUMS=XRO,
                INTER=INTER,
                DNORM=DRO,
                dh_ptr=dh_ptr,
                stride_hm=stride_dhm,
                ABL=DN_ABL,
                DNORM2=DNORM2,
            )
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
        if DNORM:  # (DNORM 1) the K slice's sum of h'^2 into the rows' slot, once per K slice (pid_n 0)
            tl.atomic_add(dslot_ptr + offs_m, ss_acc, mask=m_ok & (pid_n == 0), sem="relaxed")
        red_tile(tl.sum(acc, axis=1, keep_dims=True) * 1024.0, ws_ptr + offs_m * N + offs_n, m_ok & mask_n)
    elif DNORM:  # (DNORM 2) y = r * sum, r from the rows' slot of this N tile (_store_rows_dn)
        _store_rows_dn(acc, 1024.0, offs_m, m_ok, offs_n, mask_n, y_ptr, stride_ym, stride_yn, ws_ptr, N, cnt_ptr,
                       pid_m, pid_n, SPLIT_K, USE_SPLIT, dslot_ptr, ss_acc, NORM_K, eps)  # fmt: skip
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


def _check_dnorm(x2: torch.Tensor, w: GPTQWeight, dnorm: tuple, norm: object, swiglu: object, residual: object,
                 x_sums: object) -> None:  # fmt: skip
    """launch_hgemvr's dnorm arguments, checked (ValueError)."""
    sums, h, h_out, weight, slot, _ = dnorm
    m, k = x2.shape
    if norm is not None or swiglu is not None or residual is not None or x_sums is not None or w.perm is not None:
        raise ValueError("dnorm: not with norm, swiglu, residual, x_sums or an act-order perm")
    if sums.dtype != torch.float32 or sums.shape != (m, k) or sums.stride(1) != 1:
        raise ValueError(f"dnorm: the producer's sums must be fp32 [{m}, {k}] row-major")
    for t in (h, h_out):
        if t.dtype != torch.float16 or t.shape != (m, k) or t.stride(1) != 1 or t.stride(0) != h.stride(0):
            raise ValueError(f"dnorm: h and h_out must be fp16 [{m}, {k}] row-major with one row stride")
    if h_out.data_ptr() == h.data_ptr():
        raise ValueError("dnorm: h_out must be another buffer than h (other programs still read h)")
    if weight.shape != (k,) or weight.dtype != torch.float16 or weight.stride(0) != 1:
        raise ValueError(f"dnorm: the norm weight must be a contiguous fp16 vector of {k}")
    if slot.dtype != torch.float32 or not slot.is_contiguous() or slot.numel() < m:
        raise ValueError("dnorm: the slot is a contiguous fp32 region of at least M values")


def launch_hgemvr(x2: torch.Tensor, w: GPTQWeight, block_m: int, block_n: int, block_k: int, split_k: int,
                  num_warps: int, y: torch.Tensor, burst: bool = False, const_stride: bool = False,
                  pin: bool = False, swiglu: torch.Tensor | None = None, finish: bool = False,
                  norm: tuple[torch.Tensor, torch.Tensor, float] | None = None,
                  residual: torch.Tensor | None = None, norm_fast: bool = False,
                  maxnreg: int | None = None, defer: bool = False,
                  sums: torch.Tensor | None = None, x_sums: torch.Tensor | None = None,
                  dnorm: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float] | None = None,
                  x_norm: tuple[torch.Tensor, int, float] | None = None, dn_abl: int = 0,
                  dnorm2: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float] | None = None,
                  dn2_mode: int = 1) -> torch.Tensor | None:  # fmt: skip
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
    dnorm (sums, h, h_out, weight, slot, eps; the "+dn" decode fusion, consumer_finish.gemv_dnorm): the deferred
    residual add + RMSNorm. x is RMSNorm(h + fp16(sums)) with the norm weight, where sums (fp32 [M, K], row-major) are a
    deferred producer GEMV's and h (fp16 [M, K], row-major) the residual stream; each program reads only its K slice
    of sums and h after its PDL wait, multiplies its tiles by u = h' o w (scaled per tile by a power of two:
    _dn_ready) and the pid_n == 0 programs store h' = fp16(h + fp16(sums)) to h_out (another buffer than h: other
    programs still read h). r = rsqrt(sum(h'^2) / K + eps) is applied by whoever finishes the output: with finish +
    defer (the sums left for a consumer), the pid_n == 0 programs add their slices' sum(h'^2) into slot[m] (fp32 [>= M],
    zero before) and the consumer applies r (x_norm); otherwise (self-finishing) every program adds its slice's into
    slot[m, pid_n] (fp32 [M, N tiles], zero before; left zero) and the tile's finisher scales y by r. x2 gives only the
    shapes (pass h); sums and h are left as they are. Not with norm, swiglu, residual, x_sums or an act-order perm.
    x_norm (slot, norm_k, eps; with x_sums): the gate / up sums carry no r yet (their GEMV ran with dnorm): both are
    multiplied by r = rsqrt(slot[m] / norm_k + eps) before swiglu_epilogue's rounding.
    dnorm2 (sums, h, h_out, weight, slot, eps; with finish + defer only; the "+dn2" decode fusion,
    deferred_norm.gemv_dnorm2): dnorm's x without its per-tile reduction, store or layout conversion. Each program
    loads the sums, h and the norm weight of exactly its x pairs (the x-pair layout of a plain x load) and multiplies
    its tiles by u = fp16(h' w), h' = fp16(h + fp16(sums)) (no scale: u overflows where |h' w| > 65504, _dn2_u); the
    grid has one more N column whose programs (one per K slice and row block) store h' to h_out and add their
    slice's sum(h'^2) into slot[m] (fp32 [>= M], zero before), which the consumer of the deferred sums turns into
    r = rsqrt(slot / K + eps) after its wait (down's x_norm; the row attention's rnorm). dn2_mode: 1 u formed where
    a tile is used (its raw sums, h and weight pairs carried), 2 where it is loaded; bench ablations (wrong
    results): 3 u = fp16(h w) (no sums loaded), 4 x = h (a plain x load from h)."""
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
    if dnorm is not None:
        _check_dnorm(x2, w, dnorm, norm, swiglu, residual, x_sums)
    if dnorm2 is not None:
        if dnorm is not None or not (finish and defer):
            raise ValueError("dnorm2: with finish + defer, not with dnorm")
        _check_dnorm(x2, w, dnorm2, norm, swiglu, residual, x_sums)
        if dn2_mode not in (1, 2, 3, 4):
            raise ValueError("dnorm2: dn2_mode is 1 or 2 (3, 4: bench ablations, wrong results)")
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
    if dnorm is not None and finish and not defer:
        raise ValueError("dnorm with finish needs defer (finish_rows would store y without r)")
    if dnorm is not None and not fin and dnorm[4].numel() < x2.shape[0] * grid[0]:
        raise ValueError(f"dnorm: the self-finishing slot needs M x N tiles = {x2.shape[0] * grid[0]} values")
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
    if dnorm is not None:  # x is read from the producer's sums and h (their row strides), the norm weight is nw
        args = (dnorm[0], *args[1:14], dnorm[0].stride(0), *args[15:])
        nw, eps = dnorm[3], float(dnorm[5])
        dn = (dnorm[1], dnorm[2], dnorm[4], dnorm[1].stride(0), w.in_features)
    elif x_norm is not None:
        eps = float(x_norm[2])
        dn = (y, y, x_norm[0], 0, int(x_norm[1]))
    slice_k = 0
    if dnorm2 is not None:  # (as dnorm) plus one more N column of programs: the rows' h' and sum(h'^2)
        args = (dnorm2[0], *args[1:14], dnorm2[0].stride(0), *args[15:])
        nw, eps = dnorm2[3], float(dnorm2[5])
        dn = (dnorm2[1], dnorm2[2], dnorm2[4], dnorm2[1].stride(0), w.in_features)
        grid = (grid[0] + 1, grid[1], grid[2])
        slice_k = triton.next_power_of_2(iters * block_k)
    _hgemvr_kernel[grid](*args, act, inter, act.stride(0), nw, ssi, sso, eps, *dn, **consts, USE_ASM=use_asm(),
                         BURST=iters if burst else 0, SWIGLU=swiglu is not None,
                         QK_CONST=w.qweight.stride(0) if const_stride else 0,
                         EVEN_N=w.out_features % block_n == 0, PIN=pin, FINISH=fin, NORM_IN=0 if norm is None else 2 if norm_fast else 1,
                         RES_OUT=residual is not None, XSUMS=x_sums is not None,
                         DNORM=0 if dnorm is None else 1 if fin else 2, XNORM=x_norm is not None, DN_ABL=dn_abl,
                         DNORM2=0 if dnorm2 is None else dn2_mode, SLICE=slice_k,
                         BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=num_warps,
                         num_stages=1, **launch_kw(), **({} if maxnreg is None else {"maxnreg": maxnreg}))  # fmt: skip
    if defer:
        return args[6]
    if fin:
        finish_rows(args[6], y)
    return None
