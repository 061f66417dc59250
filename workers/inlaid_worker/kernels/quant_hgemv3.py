"""Half2 GEMV for 3-bit GPTQ weights, M = 1..4 rows, fp16 activations, standard layout (no repacking).

3-bit GPTQ packs 32 values in 3 words along K (value j at bit 3j of the 96-bit stream w0 | w1 << 32 | w2 << 64;
values 10 and 21 straddle words). The int4 half2 GEMV (quant_hgemv) turns a 4-bit field into an exact fp16 with
one LOP3 against the 0x6400 exponent; that needs a field at bit s <= 7 of a 16-bit half. Here five funnel
shifts / byte permutes of the three words (and w1 itself) put the 32 fields in 16 halves-pairs so that every
pair has a field at s_lo of its low half and one at s_hi of its high half, with only five (s_lo, s_hi) kinds:

    source          low half (stream bits)  high half       pairs (value, value) and (s_lo, s_hi)
    shf (w1:w0)>>8       8..23 (3, 4, 5)     24..39 (8, 9, 10)   (3,8) (4,9) (5,10): (1,0) (4,3) (7,6)
    w1                  32..47 (11..13)      48..63 (16..18)     the same kinds
    shf (w2:w1)>>24     56..71 (19..21)      72..87 (24..26)     the same kinds
    shf (w0:w2)>>16     80..95 (27..29)       0..15 (0, 1, 2)    the same kinds
    prmt w0,w1 0x6532   16..31 (6, 7)        40..55 (14, 15)     (2,2) (5,5)
    prmt w2,w2 0x3310   64..79 (22, 23)      88..95 (30, 31)     (2,2) (5,5)

Per pair: a = lop3(u, 7 << s_lo | 7 << 16 + s_hi, 0x64006400) is the fp16 pair (1024 + q_lo 2^s_lo, 1024 + q_hi
2^s_hi), exact; t = a * (2^-(s_lo+8), 2^-(s_hi+8)) + c with c = -(2^(2-s) + z/256) per half (one HFMA2, exact)
is ((q_lo - z)/256, (q_hi - z)/256). The fp16 bits of -(2^(2-s) + z/256) are 0x8000 | (17 - s) << 10 plus z << s,
so each of the five c words is one integer multiply-add of the column's zero per group.
Cost per 3 words: 5 SHF/PRMT + 16 LOP3 + 16 HFMA2 (int4: 9 per word, i.e. 36 per 32 fields) and, per row of x,
2 x (8 HFMA2 + HADD + F2F + FFMA); x is loaded as four 16-byte vectors per 32 rows and paired with 16 PRMT, once
per row of x for all the columns a thread holds.

Exactness: the dequantized (q - z)/256 is exact; the 8 half2 products of a chunk are summed in fp16 (16 terms,
|q - z| <= 8 so no overflow: |sum| <= 16 * 8/256 * max|x|) and then go to fp32 with the scale. Under
TRITON_INTERPRET the same bit steps run as Triton integer/float ops (fp32), so the CPU tests check the plumbing
and the pair table. Split-K partials meet in the shared self-cleaning epilogue (quant_common.store_tile).
PDL (kernels.pdl, inside decode graphs): the first AHEAD tiles' words load before griddepcontrol.wait (modes 1,
2; 3 waits first), x and every store after it, as in quant_hgemvr.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .gptq_packing import GPTQWeight
from .pdl import gdc_late, gdc_start, gdc_wait_first, gdc_wait_prefetched, launch_kw
from .quant_common import split_launch
from .quant_hgemv import _fma_half2, _hi_f32, _lo_f32, _load_small, dot_half2_ptx, rows16, store_rows, use_asm

# (source, kind, low value, high value) in the order of the 16 dequantized half2 words
PAIRS = (("u8", 0, 3, 8), ("u8", 1, 4, 9), ("u8", 2, 5, 10), ("w1", 0, 11, 16), ("w1", 1, 12, 17), ("w1", 2, 13, 18),
         ("u56", 0, 19, 24), ("u56", 1, 20, 25), ("u56", 2, 21, 26), ("u80", 0, 27, 0), ("u80", 1, 28, 1),
         ("u80", 2, 29, 2), ("uc1", 3, 6, 14), ("uc1", 4, 7, 15), ("uc2", 3, 22, 30), ("uc2", 4, 23, 31))  # fmt: skip
KINDS = ((1, 0), (4, 3), (7, 6), (2, 2), (5, 5))  # (s_lo, s_hi) of the five kinds


def _f16_pow2(e: int) -> int:
    """fp16 bits of 2^e for -24 <= e <= 15 (subnormal below -14)."""
    return (e + 15) << 10 if e >= -14 else 1 << (e + 24)


def _mask(kind: int) -> int:
    s_lo, s_hi = KINDS[kind]
    return (7 << s_lo) | (7 << (16 + s_hi))


def _scale(kind: int) -> int:
    s_lo, s_hi = KINDS[kind]
    return _f16_pow2(-(s_lo + 8)) | (_f16_pow2(-(s_hi + 8)) << 16)


def _dequant_ptx() -> str:
    lines = ["{", ".reg .b32 u8, u56, u80, uc1, uc2, a, k0, k1, k2, k3, k4;",
             *(f"mov.b32 k{kind}, {_scale(kind):#010x};" for kind in range(len(KINDS))),
             "shf.r.clamp.b32 u8, $16, $17, 8;", "shf.r.clamp.b32 u56, $17, $18, 24;", "shf.r.clamp.b32 u80, $18, $16, 16;",
             "prmt.b32 uc1, $16, $17, 0x6532;", "prmt.b32 uc2, $18, $18, 0x3310;"]  # fmt: skip
    src = dict(u8="u8", w1="$17", u56="u56", u80="u80", uc1="uc1", uc2="uc2")
    for i, (name, kind, _, _) in enumerate(PAIRS):
        lines.append(f"lop3.b32 a, {src[name]}, {_mask(kind):#010x}, 0x64006400, 0xea;")
        lines.append(f"fma.rn.f16x2 ${i}, a, k{kind}, ${19 + kind};")
    return "\n".join([*lines, "}"])


def _pair_selector(lo: int, hi: int) -> int:
    b = 2 * (lo % 2)
    c = 4 + 2 * (hi % 2)
    return b | (b + 1) << 4 | c << 8 | (c + 1) << 12


def _xload_ptx() -> str:
    regs = [f"x{i}" for i in range(16)]
    lines = ["{", f".reg .b32 {', '.join(regs)};"]
    lines += [f"ld.global.v4.b32 {{{', '.join(regs[4 * i : 4 * i + 4])}}}, [$16+{16 * i}];" for i in range(4)]
    for i, (_, _, lo, hi) in enumerate(PAIRS):
        lines.append(f"prmt.b32 ${i}, x{lo // 2}, x{hi // 2}, {_pair_selector(lo, hi):#06x};")
    return "\n".join([*lines, "}"])


_DEQ3_PTX = tl.constexpr(_dequant_ptx())
_X3_PTX = tl.constexpr(_xload_ptx())
_DOT8_PTX = tl.constexpr(dot_half2_ptx(8))

# kind constants for the interpreter path (Triton ops): LOP3 masks, per-half scales 2^-(s+8), c = z * MUL + BASE
_M0, _M1, _M2, _M3, _M4 = (tl.constexpr(_mask(k)) for k in range(5))
_MUL = tuple((1 << s_lo) | (1 << (16 + s_hi)) for s_lo, s_hi in KINDS)
_BASE = tuple(((0x8000 | (17 - s_lo) << 10) | (0x8000 | (17 - s_hi) << 10) << 16) - 2**32 for s_lo, s_hi in KINDS)
_U0, _U1, _U2, _U3, _U4 = (tl.constexpr(v) for v in _MUL)
_B0, _B1, _B2, _B3, _B4 = (tl.constexpr(v) for v in _BASE)


@triton.jit
def _deq_pair(u, MASK: tl.constexpr, S_LO: tl.constexpr, S_HI: tl.constexpr, c):
    return _fma_half2((u & MASK) | 0x64006400, 1.0 / (1 << (S_LO + 8)), 1.0 / (1 << (S_HI + 8)), c)


@triton.jit
def _dequant3(w0, w1, w2, c0, c1, c2, c3, c4, USE_ASM: tl.constexpr):
    """(q - z) / 256 of the 32 fields of a word triple as 16 half2 words, in the order of PAIRS."""
    if USE_ASM:
        t = tl.inline_asm_elementwise(_DEQ3_PTX, "=&r," * 16 + "r,r,r,r,r,r,r,r", [w0, w1, w2, c0, c1, c2, c3, c4],
                                      dtype=(tl.int32,) * 16, is_pure=True, pack=1)  # fmt: skip
    else:  # the same funnel shifts and byte permutes as integer ops
        u8 = ((w0 >> 8) & 0x00FFFFFF) | (w1 << 24)
        u56 = ((w1 >> 24) & 0xFF) | (w2 << 8)
        u80 = ((w2 >> 16) & 0xFFFF) | (w0 << 16)
        uc1 = ((w0 >> 16) & 0xFFFF) | (((w1 >> 8) & 0xFFFF) << 16)
        uc2 = (w2 & 0xFFFF) | (((w2 >> 24) & 0xFF) << 16)
        t = (_deq_pair(u8, _M0, 1, 0, c0), _deq_pair(u8, _M1, 4, 3, c1), _deq_pair(u8, _M2, 7, 6, c2),
             _deq_pair(w1, _M0, 1, 0, c0), _deq_pair(w1, _M1, 4, 3, c1), _deq_pair(w1, _M2, 7, 6, c2),
             _deq_pair(u56, _M0, 1, 0, c0), _deq_pair(u56, _M1, 4, 3, c1), _deq_pair(u56, _M2, 7, 6, c2),
             _deq_pair(u80, _M0, 1, 0, c0), _deq_pair(u80, _M1, 4, 3, c1), _deq_pair(u80, _M2, 7, 6, c2),
             _deq_pair(uc1, _M3, 2, 2, c3), _deq_pair(uc1, _M4, 5, 5, c4),
             _deq_pair(uc2, _M3, 2, 2, c3), _deq_pair(uc2, _M4, 5, 5, c4))  # fmt: skip
    return t


@triton.jit
def _xv(x16, perm_ptr, kr, j: tl.constexpr, mask, k_ok, HAS_PERM: tl.constexpr):
    """fp16 bits of x[m, kr + j] (through perm with act-order) as int32 in [0, 65536)."""
    if HAS_PERM:
        kk = tl.load(perm_ptr + kr + j, mask=k_ok, other=0)
    else:
        kk = kr + j
    return tl.load(x16 + kk, mask=mask, other=0).to(tl.int32) & 0xFFFF


@triton.jit
def _xp(x16, perm_ptr, kr, LO: tl.constexpr, HI: tl.constexpr, mask, k_ok, HAS_PERM: tl.constexpr):
    return _xv(x16, perm_ptr, kr, LO, mask, k_ok, HAS_PERM) | (_xv(x16, perm_ptr, kr, HI, mask, k_ok, HAS_PERM) << 16)


@triton.jit
def _x_pairs(x_ptr, perm_ptr, m_offs, m_ok, kr, k_ok, stride_xm, HAS_PERM: tl.constexpr, USE_ASM: tl.constexpr):
    """For 32-row blocks starting at K index kr ([BM, R3, 1]): the 16 half2 words (x[lo], x[hi]) of PAIRS."""
    mask = m_ok & k_ok
    if USE_ASM and not HAS_PERM:  # four 16-byte loads per block, paired with prmt (no layout anchor); no
        # predicate: a row past M reads row 0 (its output is masked) and a tile past K has scale 0 (kr is clamped)
        row = tl.where(m_ok, m_offs, 0)
        x32 = x_ptr.to(tl.pointer_type(tl.int32), bitcast=True) + row * (stride_xm // 2) + kr // 2
        p = tl.inline_asm_elementwise(_X3_PTX, "=r," * 16 + "l", [x32], dtype=(tl.int32,) * 16, is_pure=True, pack=1)
    else:
        x16 = x_ptr.to(tl.pointer_type(tl.int16), bitcast=True) + m_offs * stride_xm
        p = (_xp(x16, perm_ptr, kr, 3, 8, mask, k_ok, HAS_PERM), _xp(x16, perm_ptr, kr, 4, 9, mask, k_ok, HAS_PERM),
             _xp(x16, perm_ptr, kr, 5, 10, mask, k_ok, HAS_PERM), _xp(x16, perm_ptr, kr, 11, 16, mask, k_ok, HAS_PERM),
             _xp(x16, perm_ptr, kr, 12, 17, mask, k_ok, HAS_PERM), _xp(x16, perm_ptr, kr, 13, 18, mask, k_ok, HAS_PERM),
             _xp(x16, perm_ptr, kr, 19, 24, mask, k_ok, HAS_PERM), _xp(x16, perm_ptr, kr, 20, 25, mask, k_ok, HAS_PERM),
             _xp(x16, perm_ptr, kr, 21, 26, mask, k_ok, HAS_PERM), _xp(x16, perm_ptr, kr, 27, 0, mask, k_ok, HAS_PERM),
             _xp(x16, perm_ptr, kr, 28, 1, mask, k_ok, HAS_PERM), _xp(x16, perm_ptr, kr, 29, 2, mask, k_ok, HAS_PERM),
             _xp(x16, perm_ptr, kr, 6, 14, mask, k_ok, HAS_PERM), _xp(x16, perm_ptr, kr, 7, 15, mask, k_ok, HAS_PERM),
             _xp(x16, perm_ptr, kr, 22, 30, mask, k_ok, HAS_PERM), _xp(x16, perm_ptr, kr, 23, 31, mask, k_ok, HAS_PERM))  # fmt: skip
    return p


@triton.jit
def _dot8(t, x, OFF: tl.constexpr, s, acc, USE_ASM: tl.constexpr):
    """acc + s * sum of the 8 half2 products t[OFF + i] . x[OFF + i] (fp16 sums, then fp32)."""
    if USE_ASM:
        out = tl.inline_asm_elementwise(_DOT8_PTX, "=f," + "r," * 16 + "f,f",
                                        [t[OFF], t[OFF + 1], t[OFF + 2], t[OFF + 3], t[OFF + 4], t[OFF + 5],
                                         t[OFF + 6], t[OFF + 7], x[OFF], x[OFF + 1], x[OFF + 2], x[OFF + 3],
                                         x[OFF + 4], x[OFF + 5], x[OFF + 6], x[OFF + 7], s, acc],
                                        dtype=tl.float32, is_pure=True, pack=1)  # fmt: skip
    else:
        p = _lo_f32(t[OFF]) * _lo_f32(x[OFF]) + _hi_f32(t[OFF]) * _hi_f32(x[OFF])
        for i in tl.static_range(1, 8):
            p += _lo_f32(t[OFF + i]) * _lo_f32(x[OFF + i]) + _hi_f32(t[OFF + i]) * _hi_f32(x[OFF + i])
        out = acc + p * s
    return out


@triton.jit
def _zero3(qz_ptr, g, offs_n, mask_n, stride_zg, stride_zn, ZW, USE_ASM: tl.constexpr):
    """Stored 3-bit zero points of group g for columns offs_n (a bit stream along N), as int32."""
    bit = offs_n * 3
    word = bit // 32
    sh = bit % 32
    row = qz_ptr + g * stride_zg
    lo = _load_small(row + word * stride_zn, mask_n, USE_ASM)
    hi = _load_small(row + (word + 1) * stride_zn, mask_n & (sh > 29) & (word + 1 < ZW), USE_ASM)
    lo_bits = lo.to(tl.uint32, bitcast=True) >> sh.to(tl.uint32)
    v = lo_bits | (hi.to(tl.uint32, bitcast=True) << ((32 - sh) & 31).to(tl.uint32))
    return (v & 7).to(tl.int32)


@triton.jit
def _tile3(acc, w0, w1, w2, kt, k_ok, x_ptr, sc_ptr, qz_ptr, perm_ptr, offs_m, m_ok, offs_n, mask_n, offs_r, ZW,
           stride_xm, stride_sg, stride_sn, stride_zg, stride_zn,
           GROUP: tl.constexpr, SYM: tl.constexpr, ZERO_OFFSET: tl.constexpr, HAS_PERM: tl.constexpr,
           USE_ASM: tl.constexpr):  # fmt: skip
    """acc + the products of one [BLOCK_K, BLOCK_N] weight tile (word triples w0..w2) with BLOCK_M rows of x."""
    g = kt // GROUP
    s = _load_small(sc_ptr + g * stride_sg + offs_n * stride_sn, mask_n, USE_ASM).to(tl.float32)
    s = tl.where(k_ok, s, 0.0)  # a tile past K (the last split's spare iterations) adds exactly 0
    if SYM:
        z = tl.full(offs_n.shape, 4, tl.int32)
    else:
        z = _zero3(qz_ptr, g, offs_n, mask_n, stride_zg, stride_zn, ZW, USE_ASM) + ZERO_OFFSET
    t = _dequant3(w0, w1, w2, z * _U0 + _B0, z * _U1 + _B1, z * _U2 + _B2, z * _U3 + _B3, z * _U4 + _B4, USE_ASM)
    x = _x_pairs(x_ptr, perm_ptr, offs_m, m_ok, kt + offs_r * 32, k_ok, stride_xm, HAS_PERM, USE_ASM)
    acc = _dot8(t, x, 0, s, acc, USE_ASM)
    return _dot8(t, x, 8, s, acc, USE_ASM)


@triton.jit
def _hgemv3_kernel(
    x_ptr, qw_ptr, sc_ptr, qz_ptr, perm_ptr, y_ptr, ws_ptr, cnt_ptr,
    M, N, K, ZW, ITERS, SPLIT_K,
    stride_xm, stride_xk, stride_qk, stride_qn, stride_sg, stride_sn, stride_zg, stride_zn, stride_ym, stride_yn,
    GROUP: tl.constexpr, SYM: tl.constexpr, ZERO_OFFSET: tl.constexpr,
    HAS_PERM: tl.constexpr, USE_SPLIT: tl.constexpr, USE_ASM: tl.constexpr, AHEAD: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, USE_GDC: tl.constexpr = 0,
):  # fmt: skip
    gdc_start(USE_GDC)  # PDL (kernels.pdl): dependents may launch; the first words load before the wait below
    gdc_wait_first(USE_GDC)  # mode 3 (ablation): no prefetch
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_m = tl.program_id(2)
    R3: tl.constexpr = BLOCK_K // 32  # 32-row blocks (word triples) per K tile
    # everything is 3D [BLOCK_M, R3, BLOCK_N] (size-1 axes broadcast) so all values share the word loads' layout
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)[None, None, :]
    mask_n = offs_n < N
    offs_r = tl.arange(0, R3)[None, :, None]
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)[:, None, None]
    m_ok = offs_m < M
    k_first = pid_k * (ITERS * BLOCK_K)
    w_ptrs = qw_ptr + (k_first // 32 * 3 + offs_r * 3) * stride_qk + offs_n * stride_qn  # [1, R3, BN]
    w_step = R3 * 3 * stride_qk
    ok = mask_n & (k_first < K)
    n0 = tl.load(w_ptrs, mask=ok, other=0)
    n1 = tl.load(w_ptrs + stride_qk, mask=ok, other=0)
    n2 = tl.load(w_ptrs + 2 * stride_qk, mask=ok, other=0)
    acc = tl.zeros((BLOCK_M, R3, BLOCK_N), dtype=tl.float32) + (n0 & 0).to(tl.float32)
    if AHEAD == 2:  # the tile after next is in flight too
        w_ptrs += w_step
        ok = mask_n & (k_first + BLOCK_K < K) & (1 < ITERS)
        m0 = tl.load(w_ptrs, mask=ok, other=0)
        m1 = tl.load(w_ptrs + stride_qk, mask=ok, other=0)
        m2 = tl.load(w_ptrs + 2 * stride_qk, mask=ok, other=0)
    gdc_wait_prefetched(USE_GDC)  # x, the split-K workspace and y only after it (scales and zeros are weights)
    for it in range(0, ITERS):
        kt = k_first + it * BLOCK_K
        w0, w1, w2 = n0, n1, n2  # the next AHEAD tiles' words are in flight while this one is computed
        w_ptrs += w_step
        ok = mask_n & (kt + AHEAD * BLOCK_K < K) & (it + AHEAD < ITERS)
        if AHEAD == 2:
            n0, n1, n2 = m0, m1, m2
            m0 = tl.load(w_ptrs, mask=ok, other=0)
            m1 = tl.load(w_ptrs + stride_qk, mask=ok, other=0)
            m2 = tl.load(w_ptrs + 2 * stride_qk, mask=ok, other=0)
        else:
            n0 = tl.load(w_ptrs, mask=ok, other=0)
            n1 = tl.load(w_ptrs + stride_qk, mask=ok, other=0)
            n2 = tl.load(w_ptrs + 2 * stride_qk, mask=ok, other=0)
        k_ok = kt < K  # past K (the last split's spare iterations): scale 0 (and x 0 off CUDA), so the tile adds 0
        acc = _tile3(acc, w0, w1, w2, tl.where(k_ok, kt, 0), k_ok, x_ptr, sc_ptr, qz_ptr, perm_ptr, offs_m, m_ok,
                     offs_n, mask_n, offs_r, ZW, stride_xm, stride_sg, stride_sn, stride_zg, stride_zn,
                     GROUP, SYM, ZERO_OFFSET, HAS_PERM, USE_ASM)  # fmt: skip

    gdc_late(USE_GDC)
    store_rows(acc, 256.0, offs_m, m_ok, offs_n, mask_n, y_ptr, stride_ym, stride_yn, ws_ptr, N, cnt_ptr, pid_m, pid_n,
               SPLIT_K, USE_SPLIT)  # fmt: skip


def launch_hgemv3(x2: torch.Tensor, w: GPTQWeight, block_m: int, block_n: int, block_k: int, split_k: int,
                  num_warps: int, num_stages: int, y: torch.Tensor) -> None:  # fmt: skip
    """y[M, N] = x2[M, K] @ W for 3-bit weights and fp16 x; each program serves block_m rows of x.
    num_stages (1 or 2): how many K tiles ahead the words are loaded into registers."""
    if num_stages not in (1, 2):
        raise ValueError(f"num_stages is the words' look-ahead, 1 or 2 (got {num_stages})")
    if w.bits != 3 or x2.dtype != torch.float16:
        raise ValueError("the 3-bit half2 GEMV takes 3-bit weights and fp16 activations")
    if block_k % 32 or w.group_size % block_k or w.in_features % block_k:
        raise ValueError(f"block_k={block_k} must be a multiple of 32 dividing the group ({w.group_size}) and K")
    x2 = rows16(x2)
    grid, args, consts = split_launch(x2, w, y, block_m, block_n, block_k, split_k)
    _hgemv3_kernel[grid](*args, **consts, USE_ASM=use_asm(), AHEAD=num_stages, BLOCK_M=block_m, BLOCK_N=block_n,
                         BLOCK_K=block_k, num_warps=num_warps, num_stages=1, **launch_kw())  # fmt: skip
