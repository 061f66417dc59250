"""Gluon (explicit-layout Triton) tensor-core GEMM for 4-bit GPTQ weights, M >= 8, standard GPTQ layout.

Why Gluon: plain Triton (quant_tc) builds the K=128 operand with a reshape that its layout inference cannot
see through, so the dequantized tile goes registers -> shared memory -> registers (SASS/TTGIR checked
offline). Here every layout is written down, so the words are loaded from global memory straight into the
registers of the wgmma A operand and dequantized in place, Marlin-style, but with NO repacking of the
checkpoint: the operand's K order is chosen to fit the MMA fragment and x is loaded in that same order.

Fragment (wgmma A from registers, 16-bit): lane 4g + t holds rows g, g+8 and, per K-step of 16, the
columns {2t, 2t+1, 2t+8, 2t+9}; over one K=128 tile that is 32 values per row = 4 packed words. So thread t
takes words 4t..4t+3 (wi = 0..3) of the tile and an operand column idx = 32 wi + 8 s + 2 t + e holds nibble
s + 4e of word 4t + wi, i.e. tile row kk(idx) = 32 t + 8 wi + 4 e + s. Each 32-bit register pair (e = 0, 1)
is one LOP3 away from a word: (w >> 4s) & 0x000f000f | 0x64006400 = (MAGIC + q[s], MAGIC + q[s+4]) as two
16-bit floats, then (pair - (MAGIC + z)) * s in f16x2/bf16x2 (exact subtraction, one rounding: the same
value as the dequantize + cuBLAS path). The reshape into the [BLOCK_N, 128] operand only relabels registers
(convert_layout(assert_trivial=True) fails the compile otherwise). x^T goes to shared memory (the B operand).

Orientation: y^T = W^T x^T, acc [BLOCK_N, BLOCK_M] (BLOCK_N >= 64 weight columns fill wgmma's M side).
Words: DEPTH (1-2) tiles ahead in registers, or a STAGES-deep cp.async ring in shared memory read back in the
operand's layout (fewer registers, more bytes in flight: the winner at M = 8 on the H200). NSUB = 2 builds
and multiplies the operand in two K=64 halves (half its registers). FULL_DEQUANT = False: the exact (q - z)
operand, the tile's product scaled in fp32 (small M); True: (q - z) * s in the operand, one accumulator.
x, scales and zeros are loaded one tile ahead. Split-K partials: the same self-cleaning read-and-clear
epilogue as quant_common.store_tile. CUDA sm_90 only; quant_tc is the interpretable twin (same operand order).
3-bit weights (BITS = 3, fp16, NSUB = 1): the same dataflow with words 3t + wi (wi < 3) of each triple in the
word slots (the ring keeps 16 rows, row 4t + 3 unused) and quant_tc3's operand (_operand3); x goes through the
act-order path with quant_tc3.x_index3. Measured: bench/kernels/NOTES.md ("tc"), bench/results/kernels-2026-11-29-tc.md.
PDL (kernels.pdl, inside decode graphs): USE_GDC as there; the first word tiles (registers or the cp.async ring)
load before griddepcontrol.wait, x, scales, zeros and every store after it (PTX order checked offline in
workers/tests/kernels/test_pdl_lora.py); env INLAID_PDL_TCG=0 launches these kernels plainly (an ablation).
Under PDL a one-wave ring grid whose config fits more programs on an SM than its even share is padded (BALANCE,
balance_ring: unused ring slots), or early-launched programs pile onto the SMs freed first (launch_tcg's comment).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia import hopper
from triton.experimental.gluon.language.nvidia.ampere import async_copy
from triton.runtime.errors import OutOfResources

from inlaid_worker.env_switch import env_switch

from .gptq_packing import GPTQWeight
from .pdl import ggdc_late, ggdc_start, ggdc_wait_first, ggdc_wait_prefetched, launch_kw
from .quant_common import bucket_workspace, split_iters
from .quant_tc3 import c_base, c_mul, dequant3_ptx, x_index3

BLOCK_K = 128  # one operand tile: 4 words per lane-quad column t, 16 words per column

_DEQ_F16 = (
    "{ .reg .b32 t; lop3.b32 t, $1, 0x000f000f, 0x64006400, 0xea; sub.rn.f16x2 t, t, $2; mul.rn.f16x2 $0, t, $3; }"
)
_SUB_F16 = "{ .reg .b32 t; lop3.b32 t, $1, 0x000f000f, 0x64006400, 0xea; sub.rn.f16x2 $0, t, $2; }"
_SUB_BF16 = "{ .reg .b32 t; lop3.b32 t, $1, 0x000f000f, 0x43004300, 0xea; sub.rn.bf16x2 $0, t, $2; }"
_DEQ_BF16 = (
    "{ .reg .b32 t; lop3.b32 t, $1, 0x000f000f, 0x43004300, 0xea; sub.rn.bf16x2 t, t, $2; mul.rn.bf16x2 $0, t, $3; }"
)


def operand_rows() -> torch.Tensor:
    """kk[idx]: the tile row (0..127) held by operand column idx (int64 [128]); the x order of the kernel."""
    idx = torch.arange(BLOCK_K)
    wi, s, t, e = idx // 32, (idx // 8) % 4, (idx // 2) % 4, idx % 2
    return 32 * t + 8 * wi + 4 * e + s


def _pow2_bases(start: int, stop: int, dim: int, rank: int) -> list[list[int]]:
    out = []
    v = start
    while v < stop:
        b = [0] * rank
        b[dim] = v
        out.append(b)
        v *= 2
    return out


def layout_cache(build: Callable[..., dict]) -> Callable[..., dict]:
    """`build` runs once per arguments (~0.1 ms of host time each, which every launch paid before); each call returns
    a fresh dict of the same immutable layout objects. `__wrapped__` is the uncached build."""
    cached = functools.cache(build)

    @functools.wraps(build)
    def layouts(*args: int) -> dict:
        return dict(cached(*args))

    return layouts


@layout_cache
def tcg_layouts(block_n: int, block_m: int, warps: int) -> dict:
    """Layouts of one config: the MMA, its A operand, the 5D pair view of the operand, x's load and smem."""
    if block_n % (16 * warps) or block_m % 8 or block_m > 256:
        raise ValueError(f"BLOCK_N={block_n} must be a multiple of 16*warps={16 * warps}, BLOCK_M a multiple of 8")
    mma = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[warps, 1], instr_shape=[16, block_m, 16])
    dot = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2)
    # [BLOCK_N, wi, s, t, e]; register / lane / warp bases mirror the dot operand's (see module docstring)
    reg = [[0, 0, 0, 0, 1], [8, 0, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 2, 0, 0], [0, 1, 0, 0, 0], [0, 2, 0, 0, 0]]
    reg += _pow2_bases(16 * warps, block_n, 0, 5)
    lane = [[0, 0, 0, 1, 0], [0, 0, 0, 2, 0], [1, 0, 0, 0, 0], [2, 0, 0, 0, 0], [4, 0, 0, 0, 0]]
    warp = _pow2_bases(16, 16 * warps, 0, 5)
    l5 = gl.DistributedLinearLayout(reg, lane, warp, [], [block_n, 4, 4, 4, 2])
    reg_h = [b for b in reg if b != [0, 2, 0, 0, 0]]  # one K=64 half: words wi % 2 only
    l5h = gl.DistributedLinearLayout(reg_h, lane, warp, [], [block_n, 2, 4, 4, 2])
    # x5 [BLOCK_M, t, wi, e, s]: 8 contiguous rows of K per thread (one 16-byte load)
    xl = gl.BlockedLayout(
        size_per_thread=[1, 1, 1, 2, 4],
        threads_per_warp=[2, 4, 4, 1, 1],
        warps_per_cta=[warps, 1, 1, 1, 1],
        order=[4, 3, 2, 1, 0],
    )
    smem = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)
    # word ring (cp.async): [16 rows, BLOCK_N] per stage, 16-byte copies along N; read back in D2, which is the
    # words' operand layout [BLOCK_N, wi, t] seen as [row = 4t + wi, n]
    tpw_n = min(32, block_n // 4)
    cpl = gl.BlockedLayout(
        size_per_thread=[1, 4], threads_per_warp=[32 // tpw_n, tpw_n], warps_per_cta=[warps, 1], order=[1, 0]
    )
    ws = gl.SwizzledSharedLayout(vec=4, per_phase=1, max_phase=8, order=[1, 0])
    d2_reg = [[0, 8], [1, 0], [2, 0]] + [[0, b[0]] for b in _pow2_bases(16 * warps, block_n, 0, 1)]
    d2 = gl.DistributedLinearLayout(
        d2_reg,
        [[4, 0], [8, 0], [0, 1], [0, 2], [0, 4]],
        [[0, b[0]] for b in _pow2_bases(16, 16 * warps, 0, 1)],
        [],
        [16, block_n],
    )
    return dict(MMA=mma, DOT=dot, L5=l5, L5H=l5h, L4=gl.SliceLayout(4, l5), XL=xl, XS=smem, CPL=cpl, WS=ws, D2=d2)


@gluon.jit
def _word_offsets(offs_n, stride_qk, stride_qn, PL: gl.constexpr, BITS: gl.constexpr):
    """Offsets of words 4t + wi of a tile (from its first word row) for columns offs_n: [BLOCK_N, 4 (wi), 4 (t)];
    3-bit: word 3t + wi of triple t (wi = 3 repeats word 3t + 2, unused)."""
    wi = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(2, PL)))
    t = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(1, PL)))
    if BITS == 3:
        row = 3 * t[None, None, :] + gl.minimum(wi, 2)[None, :, None]
    else:
        row = 4 * t[None, None, :] + wi[None, :, None]
    return offs_n[:, None, None] * stride_qn + row * stride_qk


@gluon.jit
def _x_offsets(offs_m, stride_xm, XL: gl.constexpr):
    """(m * stride_xm, kk) of one tile's x5 [BLOCK_M, 4 (t), 4 (wi), 2 (e), 4 (s)], kk = 32t + 8wi + 4e + s
    (tile rows in memory order: 8 contiguous per thread)."""
    t = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(2, gl.SliceLayout(3, gl.SliceLayout(4, XL)))))
    wi = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(3, gl.SliceLayout(4, XL)))))
    e = gl.arange(0, 2, layout=gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(4, XL)))))
    s = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(3, XL)))))
    m5 = offs_m[:, None, None, None, None]
    t5 = t[None, :, None, None, None]
    w5 = wi[None, None, :, None, None]
    e5 = e[None, None, None, :, None]
    s5 = s[None, None, None, None, :]
    return m5 * stride_xm, 32 * t5 + 8 * w5 + 4 * e5 + s5


@gluon.jit
def _group_params(sc_ptr, qz_ptr, g, offs_n, mask_n, stride_sg, stride_sn, stride_zg, stride_zn,
                  SYM: gl.constexpr, ZERO_OFFSET: gl.constexpr, IS_BF16: gl.constexpr, BITS: gl.constexpr = 4):  # fmt: skip
    """MAGIC + z of group g as a 16-bit pair packed in int32 [BLOCK_N] (both halves equal), and s (16-bit);
    3-bit: z itself (int32; the operand builds its per-kind constants from it)."""
    s = gl.load(sc_ptr + g * stride_sg + offs_n * stride_sn, mask=mask_n, other=0.0)
    if BITS == 3:
        if SYM:
            z3 = gl.full(offs_n.shape, 4, gl.int32, layout=offs_n.type.layout)
        else:  # value n of the bit stream along N: bits 3n..3n+2, across a word boundary for n % 32 in (10, 21)
            bit = 3 * offs_n
            sh = (bit % 32).to(gl.uint32)
            zp = qz_ptr + g * stride_zg + (bit // 32) * stride_zn
            lo = gl.load(zp, mask=mask_n, other=0).to(gl.uint32, bitcast=True)
            hi = gl.load(zp + stride_zn, mask=mask_n & (sh > 29), other=0).to(gl.uint32, bitcast=True)
            z3 = (((lo >> sh) | (hi << ((32 - sh) & 31))) & 7).to(gl.int32) + ZERO_OFFSET
        return z3, s
    if IS_BF16:
        s = s.to(gl.bfloat16)
        magic = 0x4300
    else:
        magic = 0x6400
    if SYM:
        z = gl.full(offs_n.shape, 8, gl.int32, layout=offs_n.type.layout)
    else:
        zw = gl.load(qz_ptr + g * stride_zg + (offs_n // 8) * stride_zn, mask=mask_n, other=0)
        z = ((zw >> (4 * (offs_n % 8))) & 0xF) + ZERO_OFFSET
    zm = magic + z
    return zm | (zm << 16), s


@gluon.jit
def _side_loads(x_ptr, perm_ptr, sc_ptr, qz_ptr, kt, valid, K, x_row, x_kk, x_off, mask_mx, offs_nz, N, stride_xk,
                stride_sg, stride_sn, stride_zg, stride_zn, GROUP: gl.constexpr, SYM: gl.constexpr,
                ZERO_OFFSET: gl.constexpr, IS_BF16: gl.constexpr, HAS_PERM: gl.constexpr, BITS: gl.constexpr):  # fmt: skip
    """x5 (zero where not valid), MAGIC + z pairs (3-bit: z) and scales of the K tile at kt."""
    k0 = gl.where(kt < K, kt, 0)
    if HAS_PERM:
        xk = gl.load(perm_ptr + k0 + x_kk)
        xr = gl.load(x_ptr + x_row + xk * stride_xk, mask=mask_mx & valid, other=0.0)
    else:
        xr = gl.load(x_ptr + k0 * stride_xk + x_off, mask=mask_mx & valid, other=0.0)
    zm2, s = _group_params(sc_ptr, qz_ptr, k0 // GROUP, offs_nz, offs_nz < N, stride_sg, stride_sn, stride_zg,
                           stride_zn, SYM, ZERO_OFFSET, IS_BF16, BITS)  # fmt: skip
    return xr, zm2, s


@gluon.jit
def _operand(pw, zm2, s, L5X: gl.constexpr, DOT: gl.constexpr, dt: gl.constexpr, FULL_DEQUANT: gl.constexpr,
             IS_BF16: gl.constexpr):  # fmt: skip
    """A operand [BLOCK_N, 32 * nw] from words pw [BLOCK_N, nw, 4 (t)]: (MAGIC + q) - (MAGIC + z) per 16-bit
    pair, times s with FULL_DEQUANT; the pair view L5X [BLOCK_N, nw, 4 (s), 4 (t), 2 (e)] is the operand's."""
    L4X: gl.constexpr = gl.SliceLayout(4, L5X)
    ZX: gl.constexpr = gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(3, L4X)))
    sh = 4 * gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(3, L4X))))
    words = gl.convert_layout(pw, gl.SliceLayout(2, L4X), assert_trivial=True)[:, :, None, :] >> sh[None, None, :, None]
    zb = gl.broadcast(gl.convert_layout(zm2, ZX)[:, None, None, None], words)[0]
    if FULL_DEQUANT:
        sb16 = gl.convert_layout(s, ZX).to(gl.int16, bitcast=True).to(gl.int32) & 0xFFFF
        sb = gl.broadcast((sb16 | (sb16 << 16))[:, None, None, None], words)[0]
        if IS_BF16:
            pairs = gl.inline_asm_elementwise(_DEQ_BF16_C, "=r,r,r,r", [words, zb, sb], gl.int32, True, 1)
        else:
            pairs = gl.inline_asm_elementwise(_DEQ_F16_C, "=r,r,r,r", [words, zb, sb], gl.int32, True, 1)
    else:
        if IS_BF16:
            pairs = gl.inline_asm_elementwise(_SUB_BF16_C, "=r,r,r", [words, zb], gl.int32, True, 1)
        else:
            pairs = gl.inline_asm_elementwise(_SUB_F16_C, "=r,r,r", [words, zb], gl.int32, True, 1)
    w5 = gl.join(pairs.to(gl.int16), (pairs >> 16).to(gl.int16))  # [BLOCK_N, nw, s, t, e]
    w5 = gl.convert_layout(w5, L5X, assert_trivial=True)
    a = gl.reshape(w5, [w5.shape[0], 32 * w5.shape[1]]).to(dt, bitcast=True)
    return gl.convert_layout(a, DOT, assert_trivial=True)


@gluon.jit
def _join_tree(v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15):
    """[..., 2, 2, 2, 2] with v_i at the index bits (b0, b1, b2, b3) of i (b0 first)."""
    a0 = gl.join(gl.join(gl.join(v0, v1), gl.join(v2, v3)), gl.join(gl.join(v4, v5), gl.join(v6, v7)))
    a1 = gl.join(gl.join(gl.join(v8, v9), gl.join(v10, v11)), gl.join(gl.join(v12, v13), gl.join(v14, v15)))
    return gl.join(a0, a1)


@gluon.jit
def _operand3(pw, z, s, L5X: gl.constexpr, DOT: gl.constexpr, dt: gl.constexpr, FULL_DEQUANT: gl.constexpr):
    """3-bit A operand [BLOCK_N, 128] from the word triples pw [BLOCK_N, 4 (word 3t + wi, wi < 3), 4 (t)] and the
    zeros z [BLOCK_N] (quant_tc3): 16 half2 pairs per triple, pair i = 4 wi + s of the operand (fp16 only)."""
    L4X: gl.constexpr = gl.SliceLayout(4, L5X)
    BN: gl.constexpr = pw.shape[0]
    pw = gl.convert_layout(pw, gl.SliceLayout(2, L4X), assert_trivial=True)
    p = gl.reshape(gl.permute(pw, [0, 2, 1]), [BN, 4, 2, 2])  # [BLOCK_N, t, wi // 2, wi % 2]
    pe, po = gl.split(p)
    w0, w2 = gl.split(pe)
    w1, w3 = gl.split(po)
    ZX: gl.constexpr = gl.SliceLayout(1, w0.type.layout)
    zz = gl.convert_layout(z, ZX)
    c0 = gl.broadcast((zz * _CM0 + _CB0)[:, None], w0)[0]
    c1 = gl.broadcast((zz * _CM1 + _CB1)[:, None], w0)[0]
    c2 = gl.broadcast((zz * _CM2 + _CB2)[:, None], w0)[0]
    c3 = gl.broadcast((zz * _CM3 + _CB3)[:, None], w0)[0]
    c4 = gl.broadcast((zz * _CM4 + _CB4)[:, None], w0)[0]
    if FULL_DEQUANT:
        sb16 = gl.convert_layout(s, ZX).to(gl.int16, bitcast=True).to(gl.int32) & 0xFFFF
        sb = gl.broadcast((sb16 | (sb16 << 16))[:, None], w0)[0]
        o = gl.inline_asm_elementwise(_DEQ3_FULL_C, _CONS3_FULL_C, [w0, w1, w2, c0, c1, c2, c3, c4, sb],
                                      [gl.int32] * 16, True, 1)  # fmt: skip
    else:
        o = gl.inline_asm_elementwise(_DEQ3_C, _CONS3_C, [w0, w1, w2, c0, c1, c2, c3, c4], [gl.int32] * 16, True, 1)
    tree = _join_tree(o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7], o[8], o[9], o[10], o[11], o[12], o[13], o[14],
                      o[15])  # fmt: skip
    pairs = gl.reshape(gl.permute(tree, [0, 5, 4, 3, 2, 1]), [BN, 4, 4, 4])  # [BLOCK_N, wi, s, t]
    w5 = gl.join(pairs.to(gl.int16), (pairs >> 16).to(gl.int16))  # [BLOCK_N, wi, s, t, e]
    w5 = gl.convert_layout(w5, L5X)  # a register renaming within each thread
    a = gl.reshape(w5, [BN, 128]).to(dt, bitcast=True)
    return gl.convert_layout(a, DOT, assert_trivial=True)


@gluon.jit
def store_acc(acc, pid_m, pid_n, M, N, y_ptr, stride_ym, stride_yn, ws_ptr, cnt_ptr, SPLIT_K, USE_SPLIT: gl.constexpr,
              BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, MMA: gl.constexpr):  # fmt: skip
    """Store the fp32 accumulator acc [BLOCK_N, BLOCK_M] (layout MMA: y transposed) of tile (pid_m, pid_n) into y;
    with split-K the partials meet in the workspace and the last program to arrive stores and leaves it zeroed."""
    offs_n2 = pid_n * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, MMA))
    offs_m2 = pid_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(0, MMA))
    mask = (offs_n2 < N)[:, None] & (offs_m2 < M)[None, :]
    y_ptrs = y_ptr + offs_m2[None, :] * stride_ym + offs_n2[:, None] * stride_yn
    if USE_SPLIT:
        ws_ptrs = ws_ptr + offs_m2[None, :] * N + offs_n2[:, None]
        tile = pid_m * gl.num_programs(0) + pid_n
        gl.atomic_add(ws_ptrs, acc, mask=mask, sem="relaxed")
        gl.thread_barrier()
        arrived = gl.atomic_add(cnt_ptr + tile, 1, sem="acq_rel")
        if arrived == SPLIT_K - 1:
            bits = gl.atomic_xchg(ws_ptrs.to(gl.pointer_type(gl.int32)), gl.zeros(acc.shape, gl.int32, layout=MMA),
                                  mask=mask, sem="relaxed")  # fmt: skip
            tot = bits.to(gl.float32, bitcast=True)
            gl.store(y_ptrs, tot.to(y_ptr.dtype.element_ty), mask=mask)
            gl.store(cnt_ptr + tile, 0)
    else:
        gl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask)


@gluon.jit
def _tcg_kernel(
    x_ptr, qw_ptr, sc_ptr, qz_ptr, perm_ptr, y_ptr, ws_ptr, cnt_ptr,
    M, N, K, ITERS, SPLIT_K,
    stride_xm, stride_xk, stride_qk, stride_qn, stride_sg, stride_sn, stride_zg, stride_zn,
    stride_ym, stride_yn,
    GROUP: gl.constexpr, SYM: gl.constexpr, ZERO_OFFSET: gl.constexpr, HAS_PERM: gl.constexpr,
    USE_SPLIT: gl.constexpr, IS_BF16: gl.constexpr, FULL_DEQUANT: gl.constexpr, DEPTH: gl.constexpr,
    NSUB: gl.constexpr, STAGES: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr,
    BITS: gl.constexpr, MMA: gl.constexpr, DOT: gl.constexpr, L5: gl.constexpr, L5H: gl.constexpr, L4: gl.constexpr, XL: gl.constexpr,
    XS: gl.constexpr, CPL: gl.constexpr, WS: gl.constexpr, D2: gl.constexpr, USE_GDC: gl.constexpr = 0,
    RING: gl.constexpr = 0,
):  # fmt: skip
    # PDL (kernels.pdl): dependents may launch at the start (modes 1, 3) or after the K loop (2); the first word
    # tiles (registers or the cp.async ring) load before the wait (modes 1, 2; 3 waits first), x, scales, zeros
    # and every store after it
    ggdc_start(USE_GDC)
    ggdc_wait_first(USE_GDC)
    pid_n = gl.program_id(0)
    pid_k = gl.program_id(1)
    pid_m = gl.program_id(2)
    dt: gl.constexpr = x_ptr.dtype.element_ty
    PL: gl.constexpr = gl.SliceLayout(2, L4)  # words [BLOCK_N, wi, t]
    NL: gl.constexpr = gl.SliceLayout(1, gl.SliceLayout(2, PL))  # columns [BLOCK_N], for [:, None, None]
    ZL: gl.constexpr = gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(3, L4)))  # for [:, None, None, None]
    # columns past N read column N-1 (clamped, never stored): the word loads need no mask
    offs_n = gl.minimum(pid_n * BLOCK_N + gl.arange(0, BLOCK_N, layout=NL), N - 1)
    w_off = _word_offsets(offs_n, stride_qk, stride_qn, PL, BITS)
    TW: gl.constexpr = BLOCK_K * BITS // 32  # word rows per K tile
    offs_nz = gl.minimum(pid_n * BLOCK_N + gl.arange(0, BLOCK_N, layout=ZL), N - 1)
    XM: gl.constexpr = gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(3, gl.SliceLayout(4, XL))))
    offs_mx = pid_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=XM)
    mask_mx = (offs_mx < M)[:, None, None, None, None]
    x_row, x_kk = _x_offsets(offs_mx, stride_xm, XL)
    x_off = x_row + x_kk * stride_xk
    x_smem = gl.allocate_shared_memory(dt, [2, BLOCK_M, BLOCK_K], XS)
    acc = gl.zeros((BLOCK_N, BLOCK_M), gl.float32, layout=MMA)
    zero = gl.zeros((BLOCK_N, BLOCK_M), gl.float32, layout=MMA)
    k_begin = pid_k * (ITERS * BLOCK_K)
    k_tiles = K // BLOCK_K
    # words: DEPTH tiles ahead in registers, or STAGES-deep cp.async ring in shared memory; tiles past K re-read the
    # last tile (no mask) and are zeroed through x
    if STAGES == 0:
        p0 = gl.load(qw_ptr + gl.minimum(k_begin // BLOCK_K, k_tiles - 1) * TW * stride_qk + w_off)
        if DEPTH == 2:
            p1 = gl.load(qw_ptr + gl.minimum(k_begin // BLOCK_K + 1, k_tiles - 1) * TW * stride_qk + w_off)
    else:
        # RING > STAGES: slots allocated but never used (balance_ring: caps the programs per SM under PDL)
        SLOTS: gl.constexpr = RING if RING > STAGES else STAGES
        w_smem = gl.allocate_shared_memory(gl.int32, [SLOTS, BLOCK_K // 8, BLOCK_N], WS)
        rr = gl.arange(0, BLOCK_K // 8, layout=gl.SliceLayout(1, CPL))
        cc = pid_n * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, CPL))
        if BITS == 3:  # ring row 4t + wi <- word 3t + wi; row 4t + 3 stays unused (zero-filled)
            cp_off = (3 * (rr // 4) + rr % 4)[:, None] * stride_qk + cc[None, :] * stride_qn
            cp_mask = (rr % 4 < 3)[:, None] & (cc < N)[None, :]
        else:
            cp_off = rr[:, None] * stride_qk + cc[None, :] * stride_qn
            cp_mask = (rr[:, None] >= 0) & (cc < N)[None, :]  # columns past N: zero-filled, never stored
        for i in gl.static_range(STAGES - 1):
            tile = gl.minimum(k_begin // BLOCK_K + i, k_tiles - 1)
            async_copy.async_copy_global_to_shared(w_smem.index(i), qw_ptr + tile * TW * stride_qk + cp_off,
                                                   mask=cp_mask)  # fmt: skip
            async_copy.commit_group()
    ggdc_wait_prefetched(USE_GDC)
    # x, scales and zeros one tile ahead (L2 hits, but their latency is the loop's otherwise)
    xr, zm2, s = _side_loads(x_ptr, perm_ptr, sc_ptr, qz_ptr, k_begin, k_begin < K, K, x_row, x_kk, x_off, mask_mx,
                             offs_nz, N, stride_xk, stride_sg, stride_sn, stride_zg, stride_zn, GROUP, SYM,
                             ZERO_OFFSET, IS_BF16, HAS_PERM, BITS)  # fmt: skip
    for it in range(0, ITERS):
        kt = k_begin + it * BLOCK_K
        if STAGES == 0:
            tn = gl.minimum(kt // BLOCK_K + DEPTH, k_tiles - 1)
            p_new = gl.load(qw_ptr + tn * TW * stride_qk + w_off)
        else:
            async_copy.wait_group(STAGES - 2)  # this thread's copies of tile `it` have landed
            gl.thread_barrier()  # everyone's have, and everyone is done reading the slot refilled next
            tn = gl.minimum(kt // BLOCK_K + STAGES - 1, k_tiles - 1)
            async_copy.async_copy_global_to_shared(w_smem.index((it + STAGES - 1) % STAGES),
                                                   qw_ptr + tn * TW * stride_qk + cp_off, mask=cp_mask)  # fmt: skip
            async_copy.commit_group()
            p2 = w_smem.index(it % STAGES).load(D2)  # [16 rows, BLOCK_N], row = 4t + wi
            p0 = gl.permute(gl.reshape(p2, [4, 4, BLOCK_N]), [2, 1, 0])
            p0 = gl.convert_layout(p0, gl.SliceLayout(2, L4), assert_trivial=True)
        kx = kt + BLOCK_K
        xr_n, zm2_n, s_n = _side_loads(x_ptr, perm_ptr, sc_ptr, qz_ptr, kx, (kx < K) & (it + 1 < ITERS), K, x_row,
                                       x_kk, x_off, mask_mx, offs_nz, N, stride_xk, stride_sg, stride_sn, stride_zg,
                                       stride_zn, GROUP, SYM, ZERO_OFFSET, IS_BF16, HAS_PERM, BITS)  # fmt: skip
        buf = x_smem.index(it % 2)
        xo = gl.reshape(gl.permute(xr, [0, 2, 4, 1, 3]), [BLOCK_M, BLOCK_K])  # operand column order
        buf.store(xo)
        hopper.fence_async_shared()
        gl.thread_barrier()
        if NSUB == 1:
            if BITS == 3:
                a = _operand3(p0, zm2, s, L5, DOT, dt, FULL_DEQUANT)
            else:
                a = _operand(p0, zm2, s, L5, DOT, dt, FULL_DEQUANT, IS_BF16)
            if FULL_DEQUANT:
                tok = hopper.warpgroup_mma(a, buf.permute((1, 0)), acc, is_async=True)
                acc = hopper.warpgroup_mma_wait(0, deps=[tok])
            else:
                tok = hopper.warpgroup_mma(a, buf.permute((1, 0)), zero, use_acc=False, is_async=True)
                d = hopper.warpgroup_mma_wait(0, deps=[tok])
        else:  # two K=64 halves (words wi = 0, 1 | 2, 3), one at a time: half the operand's registers
            p4 = gl.permute(gl.reshape(p0, [BLOCK_N, 2, 2, 4]), [0, 2, 3, 1])  # [BLOCK_N, wi % 2, t, wi // 2]
            pa, pb = gl.split(p4)
            a = _operand(pa, zm2, s, L5H, DOT, dt, FULL_DEQUANT, IS_BF16)
            if FULL_DEQUANT:
                tok = hopper.warpgroup_mma(a, buf.slice(0, BLOCK_K // 2, dim=1).permute((1, 0)), acc, is_async=True)
                acc = hopper.warpgroup_mma_wait(0, deps=[tok])
            else:
                tok = hopper.warpgroup_mma(a, buf.slice(0, BLOCK_K // 2, dim=1).permute((1, 0)), zero, use_acc=False,
                                           is_async=True)  # fmt: skip
                d = hopper.warpgroup_mma_wait(0, deps=[tok])
            a = _operand(pb, zm2, s, L5H, DOT, dt, FULL_DEQUANT, IS_BF16)
            if FULL_DEQUANT:
                tok = hopper.warpgroup_mma(a, buf.slice(BLOCK_K // 2, BLOCK_K // 2, dim=1).permute((1, 0)), acc,
                                           is_async=True)  # fmt: skip
                acc = hopper.warpgroup_mma_wait(0, deps=[tok])
            else:
                tok = hopper.warpgroup_mma(a, buf.slice(BLOCK_K // 2, BLOCK_K // 2, dim=1).permute((1, 0)), d,
                                           is_async=True)  # fmt: skip
                d = hopper.warpgroup_mma_wait(0, deps=[tok])
        if not FULL_DEQUANT:
            sf = gl.convert_layout(s.to(gl.float32), gl.SliceLayout(1, MMA))
            acc += d * sf[:, None]
        xr, zm2, s = xr_n, zm2_n, s_n
        if STAGES == 0:
            if DEPTH == 2:
                p0 = p1
                p1 = p_new
            else:
                p0 = p_new

    ggdc_late(USE_GDC)
    store_acc(acc, pid_m, pid_n, M, N, y_ptr, stride_ym, stride_yn, ws_ptr, cnt_ptr, SPLIT_K, USE_SPLIT, BLOCK_M,
              BLOCK_N, MMA)  # fmt: skip


_DEQ_F16_C = gl.constexpr(_DEQ_F16)
_DEQ_BF16_C = gl.constexpr(_DEQ_BF16)
_SUB_F16_C = gl.constexpr(_SUB_F16)
_SUB_BF16_C = gl.constexpr(_SUB_BF16)
_DEQ3_C = gl.constexpr(dequant3_ptx(False))
_DEQ3_FULL_C = gl.constexpr(dequant3_ptx(True))
_CONS3_C = gl.constexpr(",".join(["=r"] * 16 + ["r"] * 8))
_CONS3_FULL_C = gl.constexpr(",".join(["=r"] * 16 + ["r"] * 9))
_CM0, _CM1, _CM2, _CM3, _CM4 = (gl.constexpr(c_mul(k)) for k in range(5))
_CB0, _CB1, _CB2, _CB3, _CB4 = (gl.constexpr(c_base(k)) for k in range(5))


def tcg_supported(w: GPTQWeight, k: int, dtype: torch.dtype = torch.float16) -> bool:
    """4-bit (fp16/bf16) or 3-bit (fp16) weights, K and group multiples of 128."""
    bits_ok = w.bits == 4 or (w.bits == 3 and dtype == torch.float16)
    return bits_ok and k % BLOCK_K == 0 and w.group_size % BLOCK_K == 0


def tcg_args(x2: torch.Tensor, w: GPTQWeight, block_m: int, block_n: int, split_k: int, warps: int, depth: int,
             full: bool, nsub: int, y: torch.Tensor) -> tuple[tuple, tuple, dict]:  # fmt: skip
    """(grid, positional args, constexpr kwargs) of one launch; shared with the offline SASS inspection."""
    m, k = x2.shape
    if not tcg_supported(w, k, x2.dtype):
        raise ValueError(f"the Gluon tensor-core kernel needs 4-bit (or fp16 3-bit) weights, K and group multiples "
                         f"of {BLOCK_K}")  # fmt: skip
    if w.bits == 3 and nsub != 1:
        raise ValueError("the 3-bit operand is built whole (nsub = 1)")
    n = w.out_features
    iters, split = split_iters(k // BLOCK_K, split_k)
    grid = (triton.cdiv(n, block_n), split, triton.cdiv(m, block_m))
    ws, cnt = bucket_workspace(x2.device, m, n, grid[0], block_m) if split > 1 else (y, y)
    perm = w.perm if w.perm is not None else w.qweight
    if w.bits == 3:  # x read through the index of the 3-bit operand order (act-order composed in)
        perm = x_index3(k, w.perm, x2.device)
    args = (
        x2, w.qweight, w.scales, w.qzeros, perm, y, ws, cnt,
        m, n, k, iters, split,
        x2.stride(0), x2.stride(1), w.qweight.stride(0), w.qweight.stride(1),
        w.scales.stride(0), w.scales.stride(1), w.qzeros.stride(0), w.qzeros.stride(1),
        y.stride(0), y.stride(1),
    )  # fmt: skip
    consts = dict(GROUP=w.group_size, SYM=w.sym, ZERO_OFFSET=w.zero_offset, HAS_PERM=w.perm is not None or w.bits == 3,
                  USE_SPLIT=split > 1, IS_BF16=x2.dtype == torch.bfloat16, FULL_DEQUANT=full, DEPTH=depth if depth <= 2 else 0,
                  NSUB=nsub, STAGES=depth if depth > 2 else 0,
                  BLOCK_M=block_m,
                  BLOCK_N=block_n, BLOCK_K=BLOCK_K, BITS=w.bits, **tcg_layouts(block_n, block_m, warps))  # fmt: skip
    return grid, args, consts


# env INLAID_PDL_TCG=0: launch these kernels plainly even inside a PDL scope (as before they were PDL-aware: the
# benchmark's ablation of the 2026-11-30 batch-8 loss)
# (1/on/true/yes or 0/off/false/no, default on; anything else is an error naming the variable: env_switch)
_PDL = env_switch("INLAID_PDL_TCG") is not False


# Under PDL a kernel's programs launch while the previous kernel still holds the SMs, so they land wherever slots free
# up first instead of being spread evenly as in a plain launch. A ring kernel of few registers (tc2 m8 n64 st4: 71
# registers, 20 KB of shared memory, 7 programs an SM) with a one-wave grid of 512 programs (7B down at M = 4 / 8,
# ~3.9 an SM) then ends up with up to 7 on some SMs, and its time is the fullest SM's: 14.2 us plain, 18.2-18.6 under
# PDL (the weight prefetch is not the cause: PDL without it, mode 3, 19.0 us). BALANCE (env INLAID_TCG_BALANCE,
# 1 = on): under PDL, when a config's own occupancy (from its compiled registers and shared memory, learnt at its
# first launch) exceeds ceil(programs / SMs), unused ring slots pad its shared memory until no more fit on an SM
# (balance_ring): 12.4-12.9 us. Configs already limited to that many (the n128 picks: 166-168 registers, 3 an SM)
# and multi-wave grids are left alone (padding those only took shared memory from the next kernels' early programs:
# the 7B step at batch 16 was 2% slower). bench/results/pdl-2026-11-30-s8-notes.md.
BALANCE = env_switch("INLAID_TCG_BALANCE") is not False  # default on; strict, as INLAID_PDL_TCG
_SMEM_RESERVED = 1024  # bytes the driver reserves per program (sm_90)
_NATURAL: dict[tuple, int] = {}  # config -> programs an SM fits (registers, shared memory, threads), unpadded


@functools.cache
def _sm_budget(index: int) -> tuple[int, int, int]:
    """(SMs, shared memory per SM, most shared memory per program) of CUDA device `index` (H200 defaults)."""
    p = torch.cuda.get_device_properties(index)
    return (p.multi_processor_count, int(getattr(p, "shared_memory_per_multiprocessor", 233472)),
            int(getattr(p, "shared_memory_per_block_optin", 232448)))  # fmt: skip


def occupancy(regs: int, shared: int, num_warps: int, smem_sm: int = 233472) -> int:
    """Programs of `num_warps` warps, `regs` registers a thread and `shared` bytes that fit on one sm_90 SM."""
    threads = 32 * num_warps
    by_regs = 65536 // (-(-max(regs, 1) // 8) * 8 * threads)
    return int(min(by_regs, smem_sm // (shared + _SMEM_RESERVED), 2048 // threads, 32))


def balance_ring(programs: int, stages: int, block_n: int, block_m: int, sms: int, natural: int | None = None,
                 smem_sm: int = 233472, smem_block: int = 232448) -> int:  # fmt: skip
    """Ring slots to allocate (0: as many as STAGES) so that at most ceil(programs / sms) programs fit on an SM by
    shared memory; 0 where padding is not needed (natural: the config's own occupancy, at most that already) or
    cannot reach it (multi-wave grids, register-path kernels)."""
    if stages < 3 or programs <= 0:
        return 0
    cap = -(-programs // sms)
    if natural is not None and natural <= cap:
        return 0
    slot = 16 * block_n * 4  # one ring slot: 16 word rows x BLOCK_N int32
    other = 2 * block_m * BLOCK_K * 2  # x's double buffer (16-bit)
    budget = min(smem_sm // cap - _SMEM_RESERVED, smem_block) - other - 1024  # 1 KB of slack for the compiler
    ring = budget // slot
    if ring <= stages or (cap + 1) * (ring * slot + other + _SMEM_RESERVED) <= smem_sm:
        return 0
    return int(ring)


def launch_tcg(x2: torch.Tensor, w: GPTQWeight, block_m: int, block_n: int, split_k: int, num_warps: int,
               depth: int, full: bool, nsub: int, y: torch.Tensor) -> None:  # fmt: skip
    """y[M, N] = x2[M, K] @ W (CUDA, sm_90); with PDL inside kernels.pdl's scope (launch_kw)."""
    grid, args, consts = tcg_args(x2, w, block_m, block_n, split_k, num_warps, depth, full, nsub, y)
    kw = launch_kw(tensor_core=True) if _PDL else {"USE_GDC": 0}
    if not (BALANCE and consts["STAGES"] and x2.is_cuda):
        _tcg_kernel[grid](*args, **consts, num_warps=num_warps, **kw)
        return
    key = (*(consts[c] for c in _KEY), num_warps)
    sms, smem_sm, smem_block = _sm_budget(x2.device.index if x2.device.index is not None else 0)
    natural = _NATURAL.get(key)
    ring = 0
    if kw["USE_GDC"] and natural is not None:
        ring = balance_ring(grid[0] * grid[1] * grid[2], consts["STAGES"], block_n, block_m, sms, natural, smem_sm,
                            smem_block)  # fmt: skip
    if ring and (ring, block_n, block_m) not in _RING_TOO_BIG:
        try:
            _tcg_kernel[grid](*args, **consts, num_warps=num_warps, **kw, RING=ring)
            return
        except OutOfResources:  # the compiler's own shared memory on top: launch unpadded from now on
            _RING_TOO_BIG.add((ring, block_n, block_m))
    kernel = _tcg_kernel[grid](*args, **consts, num_warps=num_warps, **kw)
    if natural is None and kernel is not None:
        _NATURAL[key] = occupancy(kernel.n_regs, kernel.metadata.shared, num_warps, smem_sm)


_KEY = ("STAGES", "NSUB", "BLOCK_M", "BLOCK_N", "BITS", "FULL_DEQUANT", "IS_BF16", "HAS_PERM", "USE_SPLIT", "SYM")
_RING_TOO_BIG: set[tuple[int, int, int]] = set()


__all__ = ["balance_ring", "launch_tcg", "occupancy", "operand_rows", "tcg_layouts", "tcg_supported"]
