"""3-bit GPTQ weights in the tensor-core kernels (quant_tcg / quant_tcl / the twin quant_tc): the operand order,
the PTX that dequantizes one word triple into the wgmma A fragment, and the x index that follows that order.

A K=128 tile of one column is 12 words: four triples of 32 values (value j of triple t = tile row 32t + j, at bit
3j of w0 | w1 << 32 | w2 << 64; values 10 and 21 straddle words). The int4 fragment gives lane-quad column t the 32
tile rows 32t..32t+31 of each row of the operand, i.e. exactly triple t. quant_hgemv3 turns a triple into 16
half2 pairs with 5 SHF/PRMT + 16 LOP3 against 0x6400 (pair i = PAIRS[i], field of kind (s_lo, s_hi) at bit s of
each half: the fp16 1024 + q 2^s, exact); here pair i = 4 wi + s becomes the operand register (wi, s), e = 0 its
low half, so operand column idx = 32 wi + 8 s + 2 t + e holds tile row 32 t + PAIRS[4 wi + s][2 + e]
(operand_rows3). Per half one HFMA2 a * 2^-s + c, c = -(2^(10-s) + z) (fp16 bits 0x8000 | (25 - s) << 10 plus
z << s, one integer multiply-add per kind and group), gives q - z exactly; FULL_DEQUANT multiplies by the scale
(one rounding, as the dequantize path). fp16 only: bf16's 7-bit mantissa cannot hold a field at bit s > 4.

x: the kernels read x through an index (their act-order path): x_index3[k0 + kk4(idx)] = perm[k0 + rows3(idx)],
where kk4 = quant_tcg.operand_rows (the int4 order that their x loads and x permute already follow), so a column
of x lands where the 3-bit operand expects it with no kernel change on the x side.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .quant_hgemv3 import KINDS, PAIRS, _mask


def operand_rows3() -> torch.Tensor:
    """kk[idx]: tile row (0..127) held by 3-bit operand column idx (int64 [128])."""
    idx = torch.arange(128)
    wi, s, t, e = idx // 32, (idx // 8) % 4, (idx // 2) % 4, idx % 2
    val = torch.tensor([[p[2], p[3]] for p in PAIRS])  # [16, 2]
    return 32 * t + val[4 * wi + s, e]


def _operand_rows4() -> torch.Tensor:
    idx = torch.arange(128)
    wi, s, t, e = idx // 32, (idx // 8) % 4, (idx // 2) % 4, idx % 2
    return 32 * t + 8 * wi + 4 * e + s


_LOCAL: torch.Tensor | None = None
_CACHE: dict[tuple[int, str], torch.Tensor] = {}  # int64 base index per (K, device)
_CACHE32: dict[tuple[int, str], torch.Tensor] = {}


def x_index3(k: int, perm: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """int32 [K]: the x column the int4-order position k0 + kk4 must read for the 3-bit operand (perm composed)."""
    global _LOCAL
    if k % 128:
        raise ValueError(f"K={k} is not a multiple of 128")
    key = (k, str(device))
    base = _CACHE.get(key)
    if base is None:
        if _LOCAL is None:
            local = torch.empty(128, dtype=torch.int64)
            local[_operand_rows4()] = operand_rows3()
            _LOCAL = local
        tiles = torch.arange(k // 128).repeat_interleave(128) * 128
        base = (tiles + _LOCAL.repeat(k // 128)).to(device)
        _CACHE[key] = base
        _CACHE32[key] = base.to(torch.int32)
    if perm is None:
        return _CACHE32[key]
    return perm[base].to(torch.int32)  # per call (one gather + cast), as quant_tcl.x_order


def pow2_pair(kind: int) -> int:
    """fp16x2 bits of (2^-s_lo, 2^-s_hi)."""
    s_lo, s_hi = KINDS[kind]
    return ((15 - s_lo) << 10) | ((15 - s_hi) << 26)


def c_mul(kind: int) -> int:
    s_lo, s_hi = KINDS[kind]
    return (1 << s_lo) | (1 << (16 + s_hi))


def c_base(kind: int) -> int:
    """int32 (signed) c word of z = 0: fp16x2 bits of (-2^(10-s_lo), -2^(10-s_hi)); c = c_base + z * c_mul."""
    s_lo, s_hi = KINDS[kind]
    v = (0x8000 | (25 - s_lo) << 10) | (0x8000 | (25 - s_hi) << 10) << 16
    return v - (1 << 32) if v >= 1 << 31 else v


def dequant3_ptx(full: bool) -> str:
    """Inline PTX: $16..$18 = w0, w1, w2; $19..$23 = c words of the 5 kinds; $24 = scale pair (full);
    $0..$15 = operand pairs (q - z) or (q - z) * s, pair i = PAIRS[i]."""
    lines = ["{", ".reg .b32 u8, u56, u80, uc1, uc2, a, k0, k1, k2, k3, k4;",
             *(f"mov.b32 k{kind}, {pow2_pair(kind):#010x};" for kind in range(len(KINDS))),
             "shf.r.clamp.b32 u8, $16, $17, 8;", "shf.r.clamp.b32 u56, $17, $18, 24;",
             "shf.r.clamp.b32 u80, $18, $16, 16;", "prmt.b32 uc1, $16, $17, 0x6532;",
             "prmt.b32 uc2, $18, $18, 0x3310;"]  # fmt: skip
    src = dict(u8="u8", w1="$17", u56="u56", u80="u80", uc1="uc1", uc2="uc2")
    for i, (name, kind, _, _) in enumerate(PAIRS):
        lines.append(f"lop3.b32 a, {src[name]}, {_mask(kind):#010x}, 0x64006400, 0xea;")
        lines.append(f"fma.rn.f16x2 ${i}, a, k{kind}, ${19 + kind};")
        if full:
            lines.append(f"mul.rn.f16x2 ${i}, ${i}, $24;")
    return "\n".join([*lines, "}"])


@triton.jit
def _half(v, SHIFT: tl.constexpr):
    return ((v >> SHIFT) & 0xFFFF).to(tl.uint16).to(tl.float16, bitcast=True)


@triton.jit
def operand3(qw_ptr, offs_n, mask_n, k0, stride_qk, stride_qn, z, BLOCK_N: tl.constexpr):
    """The twin of dequant3_ptx(False) as Triton ops: [BLOCK_N, wi, s, t, e] fp16 (q - z) of the K tile at k0
    (pair i = 4 wi + s of triple t, e = 0 its low half); z: int32 [BLOCK_N] effective zeros."""
    t = tl.arange(0, 4)
    row = (k0 // 128) * 12 + 3 * t[None, :]
    base = qw_ptr + offs_n[:, None] * stride_qn + row * stride_qk
    w0 = tl.load(base, mask=mask_n[:, None], other=0).to(tl.uint32, bitcast=True)
    w1 = tl.load(base + stride_qk, mask=mask_n[:, None], other=0).to(tl.uint32, bitcast=True)
    w2 = tl.load(base + 2 * stride_qk, mask=mask_n[:, None], other=0).to(tl.uint32, bitcast=True)
    u8 = (w0 >> 8) | (w1 << 24)  # shf.r (w1:w0) >> 8
    u56 = (w1 >> 24) | (w2 << 8)
    u80 = (w2 >> 16) | (w0 << 16)
    uc1 = ((w0 >> 16) & 0xFFFF) | (((w1 >> 8) & 0xFFFF) << 16)  # prmt w0, w1, 0x6532
    uc2 = (w2 & 0xFFFF) | (((w2 >> 24) & 0xFF) * 0x01010000)  # prmt w2, w2, 0x3310
    i = tl.arange(0, 16)[None, :, None]
    src = tl.where(i < 3, u8[:, None, :], tl.where(i < 6, w1[:, None, :], tl.where(i < 9, u56[:, None, :], tl.where(
        i < 12, u80[:, None, :], tl.where(i < 14, uc1[:, None, :], uc2[:, None, :])))))  # fmt: skip
    s_lo = tl.where(i < 12, 1 + 3 * (i % 3), 2 + 3 * ((i - 12) % 2)).to(tl.uint32)
    s_hi = tl.where(i < 12, 3 * (i % 3), 2 + 3 * ((i - 12) % 2)).to(tl.uint32)
    a = (src & ((7 << s_lo) | (7 << (16 + s_hi)))) | 0x64006400  # [BN, 16, 4]: (1024 + q 2^s) per half
    k = ((15 - s_lo) << 10) | ((15 - s_hi) << 26)
    cw = (((0x8000 | (25 - s_lo) << 10) | ((0x8000 | (25 - s_hi) << 10) << 16))
          + z.to(tl.uint32)[:, None, None] * ((1 << s_lo) | (1 << (16 + s_hi))))  # fmt: skip
    lo = _half(a, 0) * _half(k, 0) + _half(cw, 0)  # exact: q - z
    hi = _half(a, 16) * _half(k, 16) + _half(cw, 16)
    return tl.reshape(tl.join(lo, hi), (BLOCK_N, 4, 4, 4, 2))


__all__ = ["c_base", "c_mul", "dequant3_ptx", "operand3", "operand_rows3", "pow2_pair", "x_index3"]
