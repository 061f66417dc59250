"""Gluon tensor-core GEMV for 4-bit GPTQ weights at M = 2..8 (timed to 16) with vector word loads and x staged once.

Session 11 (bench/kernels/NOTES.md row "tcv", bench/results/kernels-2026-11-30-s11-gemv.md). quant_tcg's small-M
kinds ("tc2": a cp.async ring of words read back from shared memory, x staged per K tile) spend ~30 SASS instructions
a packed word in their K loop, of which the dequantization (LOP3, shift, HSUB2) is ~12: the rest is the ring's wait
+ CTA barrier + 8 scalar LDS a tile, x's per-tile global load, permute, shared store, fence and second barrier, and
the address math of both (bench/kernels/s11_sass.py). This kernel takes all of it out of the loop (15-20 a word):

* Words go straight from global memory into registers with 8/16-byte loads. A thread of the wgmma A fragment holds
  MMA rows g, g + 8 (+ 16 * warps * h); which weight column feeds which MMA row is free (the epilogue stores each row
  to its own column), so row r = g + 8j + 16w + 16W h takes column col(r) = R g + 8R w + 2h + j (R = rows a thread
  holds, `row_columns`): a thread's R rows are R adjacent columns, one vector load per word row of the tile (4 a
  tile). The load layout (LP) indexes columns; a reshape + permute relabels it into the MMA row order of quant_tcg's
  operand layout with no data movement (convert_layout(assert_trivial=True) compiles).
* Look-ahead (num_stages = DEPTH): 1-3 register sets of words, the loop unrolled DEPTH tiles a step (no register
  rotation), or (DEPTH 4-8) a per-thread cp.async ring, each thread reading back only what it copied itself.
* x (operand K order, quant_tcg.operand_rows), scales and zeros (MMA row order) of the program's whole K range are
  staged in shared memory once before the loop (ITERS is a compile-time constant): one barrier a program.
* One shift a word (fp16): nibbles s = 1, 3 are read in place as 1024 + 16 q and scaled by 1/16 in one exact HFMA2;
  bf16 keeps quant_tcg's three shifts (its 7-bit mantissa puts bit 7 of a lane in the exponent).

Measured on the H200 (2026-11-30): correct, but not faster than the shipped tc2 / hgemvr picks except 7B down at
M = 2-4 under PDL; Nsight Compute shows its warps waiting on the word loads (long scoreboard), not on issue: ptxas
sinks the register look-ahead loads below the tile's MMAs, and Gluon's barrier pass adds 2 CTA barriers a tile to the
thread-private ring. The tuner offers a trimmed set (quant_matmul_config.TCV_PLANS); nothing ships in the H200 table.

Numerics are quant_tcg's "tc" kind (exact (q - z) operand, each tile's product scaled in fp32), so the result equals
the same sum up to fp32 accumulation order. 4-bit weights only, N a multiple of BLOCK_N (no column clamping: the
vector loads need aligned, unmasked columns), K and group multiples of 128. Pure-torch model: `tcv_reference` (column
and K order, per-tile fp32 scaling) and `dequant_pairs_reference`; the numeric check is dequantize + matmul (the
tuner's guard). CUDA sm_90 only (Gluon wgmma: no interpreter twin; on the CPU quant_matmul runs quant_tc's "tc", the
same product).
"""

from __future__ import annotations

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia import hopper
from triton.experimental.gluon.language.nvidia.ampere import async_copy

from .gptq_packing import GPTQWeight
from .pdl import ggdc_late, ggdc_start, ggdc_wait_first, ggdc_wait_prefetched, launch_kw
from .quant_common import bucket_workspace, split_iters
from .quant_tcg import BLOCK_K, _operand, _pow2_bases, layout_cache, tcg_layouts

X_SMEM_MAX = 64 * 1024  # bytes a program may stage: x, scales and zeros of its tiles (staged_bytes)


def staged_bytes(iters: int, depth: int, block_m: int, block_n: int) -> int:
    """Shared memory of the staged x (16-bit), scales (16-bit) and zeros (int32) of a program's tiles, padded to a
    multiple of the tiles run per loop step (depth)."""
    run = depth if depth <= 3 else 1
    ring = depth * block_n * 64 if depth > 3 else 0
    return -(-iters // run) * run * (block_m * BLOCK_K * 2 + block_n * 6) + ring


def rows_per_thread(block_n: int, warps: int) -> int:
    """R: MMA rows (= adjacent weight columns) one thread holds."""
    return 2 * block_n // (16 * warps)


def row_columns(block_n: int, warps: int) -> torch.Tensor:
    """col[r]: the weight column (within the tile) that MMA row r multiplies (int64 [block_n]); a permutation."""
    r = torch.arange(block_n)
    rr = rows_per_thread(block_n, warps)
    g, j, w, h = r % 8, (r // 8) % 2, (r // 16) % warps, r // (16 * warps)
    return rr * g + 8 * rr * w + 2 * h + j


# one word -> its 4 operand pairs (s = 0..3: nibbles s and s + 4), one shift a word: s = 0, 2 as (MAGIC + q) - (MAGIC + z);
# s = 1, 3 from the 0x00f0 nibbles as (MAGIC + 16 q) / 16 - (MAGIC / 16 + z) in one FMA (exact: every step is an
# integer the 16-bit float holds, and the FMA rounds once). $4 = MAGIC + z pair, $5 = MAGIC / 16 + z pair (negated).
_DEQ4_F16 = (
    "{ .reg .b32 t, u, c; mov.b32 c, 0x2c002c00; lop3.b32 t, $4, 0x000f000f, 0x64006400, 0xea; sub.rn.f16x2 $0, t, $5;"
    " lop3.b32 u, $4, 0x00f000f0, 0x64006400, 0xea; fma.rn.f16x2 $1, u, c, $6;"
    " shr.u32 t, $4, 8; lop3.b32 u, t, 0x000f000f, 0x64006400, 0xea; sub.rn.f16x2 $2, u, $5;"
    " lop3.b32 u, t, 0x00f000f0, 0x64006400, 0xea; fma.rn.f16x2 $3, u, c, $6; }"
)
_DEQ4_BF16 = (
    "{ .reg .b32 t, u, c; mov.b32 c, 0x3d803d80; lop3.b32 t, $4, 0x000f000f, 0x43004300, 0xea; sub.rn.bf16x2 $0, t, $5;"
    " lop3.b32 u, $4, 0x00f000f0, 0x43004300, 0xea; fma.rn.bf16x2 $1, u, c, $6;"
    " shr.u32 t, $4, 8; lop3.b32 u, t, 0x000f000f, 0x43004300, 0xea; sub.rn.bf16x2 $2, u, $5;"
    " lop3.b32 u, t, 0x00f000f0, 0x43004300, 0xea; fma.rn.bf16x2 $3, u, c, $6; }"
)


def dequant_pairs_reference(q: torch.Tensor, z: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The asm's value for nibble q (0..15) and zero z, computed the way the asm does (torch, fp32 then one rounding
    to the 16-bit type): stacked [2, ...] = (s even: (MAGIC + q) - (MAGIC + z), s odd: (MAGIC + 16 q) / 16 -
    (MAGIC / 16 + z) with one FMA rounding). Both equal q - z exactly."""
    magic = 1024.0 if dtype == torch.float16 else 128.0
    lo = (torch.tensor(magic) + q.float()).to(dtype).float() - (magic + z.float()).to(dtype).float()
    hi_in = (magic + 16 * q.float()).to(dtype).float()  # the LOP3's (MAGIC + 16 q): exact in the 16-bit type
    hi = hi_in * (1 / 16) + (-(magic / 16 + z.float())).to(dtype).float()  # the FMA: exact product, one rounding
    return torch.stack([lo.to(dtype), hi.to(dtype)])


def tcv_reference(x: torch.Tensor, w: GPTQWeight, block_n: int = 128, warps: int = 4) -> torch.Tensor:
    """Pure-torch model of the kernel (fp32 [M, N]): per 128-row K tile and BLOCK_N column tile, MMA row r holds
    weight column col(r) (row_columns) and operand column j holds tile row operand_rows()[j]; the exact (q - z)
    operand times x in that order, each tile's product scaled by its group's scale in fp32 and summed over tiles.
    4-bit, act-order through w.perm (packed row k reads x[:, perm[k]])."""
    from .gptq_packing import unpack_bitstream
    from .quant_tcg import operand_rows

    k, n = x.shape[1], w.out_features
    q = unpack_bitstream(w.qweight, 4, k, 0).float()  # [K, N]
    if w.sym:
        z = torch.full((k // w.group_size, n), 8.0, device=x.device)
    else:
        z = unpack_bitstream(w.qzeros, 4, n, 1).float() + w.zero_offset
    xs = x.float() if w.perm is None else x.float()[:, w.perm.long()]
    order, cols = operand_rows().to(x.device), row_columns(block_n, warps).to(x.device)
    y = torch.zeros(x.shape[0], n, device=x.device)
    for n0 in range(0, n, block_n):
        cc = n0 + cols  # MMA row r -> column cc[r]
        for t in range(k // BLOCK_K):
            rows = t * BLOCK_K + order
            g = t * BLOCK_K // w.group_size
            a = q[rows][:, cc] - z[g, cc]  # [128 (operand column), BLOCK_N (MMA row)]
            d = xs[:, rows] @ a  # [M, BLOCK_N]: the tile's exact-operand product
            y[:, cc] += d * w.scales[g, cc].float()
    return y


@layout_cache
def tcv_layouts(block_n: int, block_m: int, warps: int) -> dict:
    """quant_tcg's layouts plus LP, the word load layout [BLOCK_N (column), 4 (wi), 4 (t)]: R adjacent columns in a
    thread's first registers (one vector load per word row), lanes (t, g), warps along columns."""
    out = tcg_layouts(block_n, block_m, warps)
    rr = rows_per_thread(block_n, warps)
    if rr < 2 or rr > 4 or block_n % (16 * warps):
        raise ValueError(f"tcv needs 2-4 rows a thread (BLOCK_N={block_n}, warps={warps})")
    reg = _pow2_bases(1, rr, 0, 3) + [[0, 1, 0], [0, 2, 0]]
    lane = [[0, 0, 1], [0, 0, 2], [rr, 0, 0], [2 * rr, 0, 0], [4 * rr, 0, 0]]
    warp = _pow2_bases(8 * rr, 8 * rr * warps, 0, 3)
    out["LP"] = gl.DistributedLinearLayout(reg, lane, warp, [], [block_n, 4, 4])
    # the per-thread word ring [BLOCK_N, wi, t]: columns fastest (one 8/16-byte cp.async and LDS per word row), the
    # 8-column groups XOR-swizzled by t so that the lanes of one access hit distinct banks
    out["WR"] = gl.SwizzledSharedLayout(vec=8, per_phase=1, max_phase=4, order=[0, 2, 1])
    return out


@gluon.jit
def _col_of_row(r, BLOCK_N: gl.constexpr, WARPS: gl.constexpr):
    R: gl.constexpr = 2 * BLOCK_N // (16 * WARPS)
    return R * (r % 8) + 8 * R * ((r // 16) % WARPS) + 2 * (r // (16 * WARPS)) + (r // 8) % 2


@gluon.jit
def _relabel(p, BLOCK_N: gl.constexpr, WARPS: gl.constexpr, PL: gl.constexpr):
    """Words [BLOCK_N (column), 4, 4] in LP -> [BLOCK_N (MMA row), 4, 4] in PL (the same registers)."""
    HB: gl.constexpr = BLOCK_N // (16 * WARPS)
    q = gl.reshape(p, [WARPS, 8, HB, 2, 4, 4])  # column = ((w * 8 + g) * HB + h) * 2 + j
    q = gl.permute(q, [2, 0, 3, 1, 4, 5])  # row = ((h * W + w) * 2 + j) * 8 + g
    q = gl.reshape(q, [BLOCK_N, 4, 4])
    return gl.convert_layout(q, PL, assert_trivial=True)


_DEQ4_F16_C = gl.constexpr(_DEQ4_F16)
_DEQ4_BF16_C = gl.constexpr(_DEQ4_BF16)


@gluon.jit
def _operand1(pw, zm2, zn2, L5X: gl.constexpr, DOT: gl.constexpr, dt: gl.constexpr, IS_BF16: gl.constexpr):
    """quant_tcg._operand (exact (q - z) pairs) with one shift a word: pw [BLOCK_N, nw, 4 (t)] -> [BLOCK_N, 32 nw]."""
    L4X: gl.constexpr = gl.SliceLayout(4, L5X)
    PX: gl.constexpr = gl.SliceLayout(2, L4X)
    words = gl.convert_layout(pw, PX, assert_trivial=True)
    zb = gl.broadcast(gl.convert_layout(zm2, gl.SliceLayout(1, gl.SliceLayout(2, PX)))[:, None, None], words)[0]
    nb = gl.broadcast(gl.convert_layout(zn2, gl.SliceLayout(1, gl.SliceLayout(2, PX)))[:, None, None], words)[0]
    if IS_BF16:
        o = gl.inline_asm_elementwise(_DEQ4_BF16_C, "=r,=r,=r,=r,r,r,r", [words, zb, nb], [gl.int32] * 4, True, 1)
    else:
        o = gl.inline_asm_elementwise(_DEQ4_F16_C, "=r,=r,=r,=r,r,r,r", [words, zb, nb], [gl.int32] * 4, True, 1)
    q = gl.join(gl.join(o[0], o[1]), gl.join(o[2], o[3]))  # [BLOCK_N, nw, t, s % 2, s // 2]
    pairs = gl.reshape(gl.permute(q, [0, 1, 4, 3, 2]), [pw.shape[0], pw.shape[1], 4, 4])  # [BLOCK_N, nw, s, t]
    w5 = gl.join(pairs.to(gl.int16), (pairs >> 16).to(gl.int16))  # [BLOCK_N, nw, s, t, e]
    w5 = gl.convert_layout(w5, L5X, assert_trivial=True)
    a = gl.reshape(w5, [w5.shape[0], 32 * w5.shape[1]]).to(dt, bitcast=True)
    return gl.convert_layout(a, DOT, assert_trivial=True)


@gluon.jit
def _zeros(qz_ptr, g, cols, stride_zg, stride_zn, SYM: gl.constexpr, ZERO_OFFSET: gl.constexpr):
    """z (stored + offset) of group g for columns cols (int32)."""
    if SYM:
        z = gl.full(cols.shape, 8, gl.int32, layout=cols.type.layout)
    else:
        zw = gl.load(qz_ptr + g * stride_zg + (cols // 8) * stride_zn)
        z = ((zw >> (4 * (cols % 8))) & 0xF) + ZERO_OFFSET
    return z


@gluon.jit
def _zero_pairs(z, IS_BF16: gl.constexpr):
    """(MAGIC + z, -(MAGIC / 16 + z)) as 16-bit pairs in int32 (both halves equal); the second is used by the fp16
    one-shift operand only."""
    if IS_BF16:
        zm = 0x4300 + z
        zn = (-(8 + z)).to(gl.float32).to(gl.bfloat16).to(gl.int16, bitcast=True).to(gl.int32) & 0xFFFF
    else:
        zm = 0x6400 + z
        zn = (-(64 + z)).to(gl.float32).to(gl.float16).to(gl.int16, bitcast=True).to(gl.int32) & 0xFFFF
    return zm | (zm << 16), zn | (zn << 16)


@gluon.jit
def _tile(p, zm2, zn2, sf, buf, acc, BLOCK_N: gl.constexpr, BLOCK_M: gl.constexpr, WARPS: gl.constexpr,
          NSUB: gl.constexpr, DEQ: gl.constexpr, IS_BF16: gl.constexpr, MMA: gl.constexpr, DOT: gl.constexpr,
          L4: gl.constexpr, L5: gl.constexpr, L5H: gl.constexpr):  # fmt: skip
    """acc + s * (W_tile - z)^T x_tile^T for one K tile: words p in the load layout, x in shared memory (buf)."""
    dt: gl.constexpr = buf.dtype
    HK: gl.constexpr = 64  # half of the 128-row K tile
    pw = _relabel(p, BLOCK_N, WARPS, gl.SliceLayout(2, L4))
    zero = gl.zeros((BLOCK_N, BLOCK_M), gl.float32, layout=MMA)
    if NSUB == 1:
        if DEQ == 1 and not IS_BF16:
            a = _operand1(pw, zm2, zn2, L5, DOT, dt, IS_BF16)
        else:
            a = _operand(pw, zm2, zm2, L5, DOT, dt, False, IS_BF16)
        tok = hopper.warpgroup_mma(a, buf.permute((1, 0)), zero, use_acc=False, is_async=True)
        d = hopper.warpgroup_mma_wait(0, deps=[tok])
    else:  # two K=64 halves (words wi = 0, 1 | 2, 3): half the operand's registers
        p4 = gl.permute(gl.reshape(pw, [BLOCK_N, 2, 2, 4]), [0, 2, 3, 1])  # [BLOCK_N, wi % 2, t, wi // 2]
        pa, pb = gl.split(p4)
        if DEQ == 1 and not IS_BF16:
            a = _operand1(pa, zm2, zn2, L5H, DOT, dt, IS_BF16)
        else:
            a = _operand(pa, zm2, zm2, L5H, DOT, dt, False, IS_BF16)
        tok = hopper.warpgroup_mma(a, buf.slice(0, HK, dim=1).permute((1, 0)), zero, use_acc=False,
                                   is_async=True)  # fmt: skip
        d = hopper.warpgroup_mma_wait(0, deps=[tok])
        if DEQ == 1 and not IS_BF16:
            a = _operand1(pb, zm2, zn2, L5H, DOT, dt, IS_BF16)
        else:
            a = _operand(pb, zm2, zm2, L5H, DOT, dt, False, IS_BF16)
        tok = hopper.warpgroup_mma(a, buf.slice(HK, HK, dim=1).permute((1, 0)), d,
                                   is_async=True)  # fmt: skip
        d = hopper.warpgroup_mma_wait(0, deps=[tok])
    return acc + d * sf[:, None]


@gluon.jit
def _step(p, i, t_next, t_last, qw_ptr, w_off, stride_qk, x_smem, s_smem, z_smem, acc, BLOCK_N: gl.constexpr,
          BLOCK_M: gl.constexpr, WARPS: gl.constexpr, NSUB: gl.constexpr, DEQ: gl.constexpr, IS_BF16: gl.constexpr,
          MMA: gl.constexpr, DOT: gl.constexpr, L4: gl.constexpr, L5: gl.constexpr, L5H: gl.constexpr):  # fmt: skip
    """Tile i of the program from words p (the register set refilled with tile t_next, returned); zeros and scales
    from their staged rows."""
    p_new = gl.load(qw_ptr + gl.minimum(t_next, t_last) * 16 * stride_qk + w_off)
    ZL: gl.constexpr = gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(3, L4)))  # operand rows
    zm2, zn2 = _zero_pairs(z_smem.index(i).load(ZL), IS_BF16)
    sf = s_smem.index(i).load(gl.SliceLayout(1, MMA)).to(gl.float32)  # accumulator rows
    acc = _tile(p, zm2, zn2, sf, x_smem.index(i), acc, BLOCK_N, BLOCK_M, WARPS, NSUB, DEQ, IS_BF16, MMA, DOT, L4, L5,
                L5H)  # fmt: skip
    return acc, p_new


@gluon.jit
def _x_stage_offsets(pid_m, M, stride_xm, BLOCK_M: gl.constexpr, XL: gl.constexpr):
    """(x_row, x_kk, mask_mx) of x's staging loads (this kernel's and quant_tcs's) in layout XL [BLOCK_M, 4 (t),
    4 (wi), 2 (e), 4 (s)]: row offsets m * stride_xm, the K offsets kk = 32t + 8wi + 4e + s of the operand's K order
    within a tile, and the row mask m < M."""
    XM: gl.constexpr = gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(3, gl.SliceLayout(4, XL))))
    offs_mx = pid_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=XM)
    mask_mx = (offs_mx < M)[:, None, None, None, None]
    tx = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(2, gl.SliceLayout(3, gl.SliceLayout(4, XL)))))
    wx = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(3, gl.SliceLayout(4, XL)))))
    ex = gl.arange(0, 2, layout=gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(4, XL)))))
    sx = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(3, XL)))))
    x_kk = (32 * tx[None, :, None, None, None] + 8 * wx[None, None, :, None, None] + 4 * ex[None, None, None, :, None]
            + sx[None, None, None, None, :])  # fmt: skip
    x_row = offs_mx[:, None, None, None, None] * stride_xm
    return x_row, x_kk, mask_mx


@gluon.jit
def _xtile(x_ptr, perm_ptr, x_row, x_kk, mask_mx, kx, K, stride_xk, HAS_PERM: gl.constexpr):
    """x[rows, K tile at kx] (x5, _x_stage_offsets' layout; act-order: gathered through perm; zero past K)."""
    k0 = gl.where(kx < K, kx, 0)
    ok = mask_mx & (kx < K)
    if HAS_PERM:
        xk = gl.load(perm_ptr + k0 + x_kk)
        return gl.load(x_ptr + x_row + xk * stride_xk, mask=ok, other=0.0)
    return gl.load(x_ptr + x_row + (k0 + x_kk) * stride_xk, mask=ok, other=0.0)


@gluon.jit
def _tcv_kernel(
    x_ptr, qw_ptr, sc_ptr, qz_ptr, perm_ptr, y_ptr, ws_ptr, cnt_ptr,
    M, N, K, SPLIT_K,
    stride_xm, stride_xk, stride_qk, stride_qn, stride_sg, stride_sn, stride_zg, stride_zn,
    stride_ym, stride_yn,
    ITERS: gl.constexpr, GROUP: gl.constexpr, SYM: gl.constexpr, ZERO_OFFSET: gl.constexpr, HAS_PERM: gl.constexpr,
    USE_SPLIT: gl.constexpr, IS_BF16: gl.constexpr, DEPTH: gl.constexpr, NSUB: gl.constexpr, DEQ: gl.constexpr,
    BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, WARPS: gl.constexpr,
    MMA: gl.constexpr, DOT: gl.constexpr, L5: gl.constexpr, L5H: gl.constexpr, L4: gl.constexpr, XL: gl.constexpr,
    XS: gl.constexpr, LP: gl.constexpr, WR: gl.constexpr, CPL: gl.constexpr, WS: gl.constexpr, D2: gl.constexpr,
    USE_GDC: gl.constexpr = 0,
):  # fmt: skip
    ggdc_start(USE_GDC)
    ggdc_wait_first(USE_GDC)
    pid_n = gl.program_id(0)
    pid_k = gl.program_id(1)
    pid_m = gl.program_id(2)
    dt: gl.constexpr = x_ptr.dtype.element_ty
    AL: gl.constexpr = gl.SliceLayout(1, MMA)  # accumulator rows
    n0 = pid_n * BLOCK_N
    # word offsets in the load layout: column c of the tile, word row 4t + wi
    cl = n0 + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, gl.SliceLayout(2, LP)))
    wi = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(2, LP)))
    t = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(1, LP)))
    w_off = cl[:, None, None] * stride_qn + (4 * t[None, None, :] + wi[None, :, None]) * stride_qk
    cols_a = n0 + _col_of_row(gl.arange(0, BLOCK_N, layout=AL), BLOCK_N, WARPS)
    TW: gl.constexpr = BLOCK_K // 8  # word rows per K tile
    k_begin = pid_k * (ITERS * BLOCK_K)
    t0 = k_begin // BLOCK_K
    t_last = gl.minimum(t0 + ITERS, K // BLOCK_K) - 1  # look-ahead past the program's tiles re-reads its last one
    if DEPTH <= 3:  # DEPTH register sets of words
        p0 = gl.load(qw_ptr + gl.minimum(t0, t_last) * TW * stride_qk + w_off)
        if DEPTH >= 2:
            p1 = gl.load(qw_ptr + gl.minimum(t0 + 1, t_last) * TW * stride_qk + w_off)
        if DEPTH >= 3:
            p2 = gl.load(qw_ptr + gl.minimum(t0 + 2, t_last) * TW * stride_qk + w_off)
    else:  # a DEPTH-slot cp.async ring that each thread fills and reads for itself: no CTA barrier
        w_ring = gl.allocate_shared_memory(gl.int32, [DEPTH, BLOCK_N, 4, 4], WR)
        for i in gl.static_range(DEPTH - 1):
            async_copy.async_copy_global_to_shared(
                w_ring.index(i), qw_ptr + gl.minimum(t0 + i, t_last) * TW * stride_qk + w_off
            )
            async_copy.commit_group()
    ggdc_wait_prefetched(USE_GDC)
    # x (in the operand's K order), scales and zeros (in MMA row order) of all the program's tiles into shared memory
    # once: the loop's only global loads are the words
    x_row, x_kk, mask_mx = _x_stage_offsets(pid_m, M, stride_xm, BLOCK_M, XL)
    RUN: gl.constexpr = DEPTH if DEPTH <= 3 else 1  # tiles a loop step runs
    XT: gl.constexpr = (ITERS + RUN - 1) // RUN * RUN  # zero x tiles pad the last step
    x_smem = gl.allocate_shared_memory(dt, [XT, BLOCK_M, BLOCK_K], XS)
    SL: gl.constexpr = gl.BlockedLayout([1], [32], [WARPS], [0])
    cols_s = n0 + _col_of_row(gl.arange(0, BLOCK_N, layout=SL), BLOCK_N, WARPS)
    FLAT: gl.constexpr = gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[0])
    s_smem = gl.allocate_shared_memory(sc_ptr.dtype.element_ty, [XT, BLOCK_N], FLAT)
    z_smem = gl.allocate_shared_memory(gl.int32, [XT, BLOCK_N], FLAT)
    g_last = (K - 1) // GROUP
    for i in gl.static_range(XT):
        kx = k_begin + i * BLOCK_K
        xr = _xtile(x_ptr, perm_ptr, x_row, x_kk, mask_mx & (i < ITERS), kx, K, stride_xk, HAS_PERM)  # pad: zeros
        x_smem.index(i).store(gl.reshape(gl.permute(xr, [0, 2, 4, 1, 3]), [BLOCK_M, BLOCK_K]))
        g = gl.minimum(kx // GROUP, g_last)
        s_smem.index(i).store(gl.load(sc_ptr + g * stride_sg + cols_s * stride_sn))
        z_smem.index(i).store(_zeros(qz_ptr, g, cols_s, stride_zg, stride_zn, SYM, ZERO_OFFSET))
    hopper.fence_async_shared()
    gl.thread_barrier()
    acc = gl.zeros((BLOCK_N, BLOCK_M), gl.float32, layout=MMA)
    if DEPTH > 3:
        ZL: gl.constexpr = gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(3, L4)))
        for it in range(0, ITERS):
            async_copy.wait_group(DEPTH - 2)  # this thread's copies of tile `it` have landed
            p = w_ring.index(it % DEPTH).load(LP)
            async_copy.async_copy_global_to_shared(w_ring.index((it + DEPTH - 1) % DEPTH),
                                                   qw_ptr + gl.minimum(t0 + it + DEPTH - 1, t_last) * TW * stride_qk
                                                   + w_off)  # fmt: skip
            async_copy.commit_group()
            zm2, zn2 = _zero_pairs(z_smem.index(it).load(ZL), IS_BF16)
            sf = s_smem.index(it).load(AL).to(gl.float32)
            acc = _tile(p, zm2, zn2, sf, x_smem.index(it), acc, BLOCK_N, BLOCK_M, WARPS, NSUB, DEQ, IS_BF16, MMA, DOT,
                        L4, L5, L5H)  # fmt: skip
    else:
        for it in range(0, ITERS, RUN):  # DEPTH register sets, each refilled DEPTH tiles ahead
            tt = t0 + it
            acc, p0 = _step(p0, it, tt + DEPTH, t_last, qw_ptr, w_off, stride_qk, x_smem, s_smem, z_smem, acc, BLOCK_N,
                            BLOCK_M, WARPS, NSUB, DEQ, IS_BF16, MMA, DOT, L4, L5, L5H)  # fmt: skip
            if DEPTH >= 2:
                acc, p1 = _step(p1, it + 1, tt + 1 + DEPTH, t_last, qw_ptr, w_off, stride_qk, x_smem, s_smem, z_smem, acc,
                                BLOCK_N, BLOCK_M, WARPS, NSUB, DEQ, IS_BF16, MMA, DOT, L4, L5, L5H)  # fmt: skip
            if DEPTH >= 3:
                acc, p2 = _step(p2, it + 2, tt + 2 + DEPTH, t_last, qw_ptr, w_off, stride_qk, x_smem, s_smem, z_smem, acc,
                                BLOCK_N, BLOCK_M, WARPS, NSUB, DEQ, IS_BF16, MMA, DOT, L4, L5, L5H)  # fmt: skip

    ggdc_late(USE_GDC)
    offs_m2 = pid_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(0, MMA))
    mask = (cols_a < N)[:, None] & (offs_m2 < M)[None, :]
    y_ptrs = y_ptr + offs_m2[None, :] * stride_ym + cols_a[:, None] * stride_yn
    if USE_SPLIT:  # quant_tcg.store_acc's self-cleaning read-and-clear, at this kernel's columns
        ws_ptrs = ws_ptr + offs_m2[None, :] * N + cols_a[:, None]
        tile = pid_m * gl.num_programs(0) + pid_n
        gl.atomic_add(ws_ptrs, acc, mask=mask, sem="relaxed")
        gl.thread_barrier()
        arrived = gl.atomic_add(cnt_ptr + tile, 1, sem="acq_rel")
        if arrived == SPLIT_K - 1:
            bits = gl.atomic_xchg(ws_ptrs.to(gl.pointer_type(gl.int32)), gl.zeros(acc.shape, gl.int32, layout=MMA),
                                  mask=mask, sem="relaxed")  # fmt: skip
            gl.store(y_ptrs, bits.to(gl.float32, bitcast=True).to(y_ptr.dtype.element_ty), mask=mask)
            gl.store(cnt_ptr + tile, 0)
    else:
        gl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask)


def tcv_supported(w: GPTQWeight, n: int, k: int, block_n: int, block_m: int, split_k: int, depth: int = 2) -> bool:
    """4-bit weights, N a multiple of BLOCK_N, K and group multiples of 128, the staging within X_SMEM_MAX."""
    if w.bits != 4 or n % block_n or k % BLOCK_K or w.group_size % BLOCK_K:
        return False
    iters, _ = split_iters(k // BLOCK_K, split_k)
    return staged_bytes(iters, depth, block_m, block_n) <= X_SMEM_MAX


def tcv_args(x2: torch.Tensor, w: GPTQWeight, block_m: int, block_n: int, split_k: int, warps: int, depth: int,
             nsub: int, y: torch.Tensor, deq: int = 1) -> tuple[tuple, tuple, dict]:  # fmt: skip
    """(grid, positional args, constexpr kwargs) of one launch; shared with the offline SASS count."""
    m, k = x2.shape
    n = w.out_features
    if not tcv_supported(w, n, k, block_n, block_m, split_k, depth):
        raise ValueError(f"tcv needs 4-bit weights, N % {block_n} == 0, K and group multiples of {BLOCK_K}, and x "
                         f"staging within {X_SMEM_MAX} bytes")  # fmt: skip
    if not 1 <= depth <= 8 or nsub not in (1, 2) or deq not in (0, 1):
        raise ValueError("tcv: depth 1-3 (registers) or 4-8 (ring), nsub 1-2, deq 0-1")
    iters, split = split_iters(k // BLOCK_K, split_k)
    grid = (n // block_n, split, triton.cdiv(m, block_m))
    ws, cnt = bucket_workspace(x2.device, m, n, grid[0], block_m) if split > 1 else (y, y)
    perm = w.perm if w.perm is not None else w.qweight
    args = (
        x2, w.qweight, w.scales, w.qzeros, perm, y, ws, cnt,
        m, n, k, split,
        x2.stride(0), x2.stride(1), w.qweight.stride(0), w.qweight.stride(1),
        w.scales.stride(0), w.scales.stride(1), w.qzeros.stride(0), w.qzeros.stride(1),
        y.stride(0), y.stride(1),
    )  # fmt: skip
    consts = dict(ITERS=iters, GROUP=w.group_size, SYM=w.sym, ZERO_OFFSET=w.zero_offset, HAS_PERM=w.perm is not None,
                  USE_SPLIT=split > 1, IS_BF16=x2.dtype == torch.bfloat16, DEPTH=depth, NSUB=nsub, DEQ=deq, BLOCK_M=block_m,
                  BLOCK_N=block_n, BLOCK_K=BLOCK_K, WARPS=warps, **tcv_layouts(block_n, block_m, warps))  # fmt: skip
    return grid, args, consts


def launch_tcv(x2: torch.Tensor, w: GPTQWeight, block_m: int, block_n: int, split_k: int, num_warps: int,
               depth: int, nsub: int, y: torch.Tensor, deq: int = 1) -> None:  # fmt: skip
    """y[M, N] = x2[M, K] @ W (CUDA, sm_90); with PDL inside kernels.pdl's scope (launch_kw)."""
    grid, args, consts = tcv_args(x2, w, block_m, block_n, split_k, num_warps, depth, nsub, y, deq)
    _tcv_kernel[grid](*args, **consts, num_warps=num_warps, **launch_kw(tensor_core=True))


__all__ = [
    "X_SMEM_MAX",
    "dequant_pairs_reference",
    "launch_tcv",
    "staged_bytes",
    "row_columns",
    "tcv_reference",
    "rows_per_thread",
    "tcv_args",
    "tcv_layouts",
    "tcv_supported",
]
