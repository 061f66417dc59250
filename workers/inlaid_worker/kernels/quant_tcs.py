"""Warp-specialized Gluon int4 g128 GEMV for small M (1..16; 17..64 since session 16) with a TMA word ring: kind "tcs"
(issue 4, session 12).

Nsight (bench/results/kernels-2026-11-30-s11-ncu.md) shows the small-M tensor-core GEMVs (quant_tcg "tc2",
quant_tcv) waiting on their word loads: too few bytes in flight per SM, because ptxas sinks register look-ahead
loads below the MMAs and Gluon's barrier pass puts CTA barriers into a thread-private cp.async ring. Here the loads
belong to a producer warp that does nothing else (quant_tcw's structure, sized for decode):

- a producer warp (24 registers) TMA-copies the words [16, BLOCK_N] of each K tile into a STAGES-deep ring
  (`ready` expect-tx / `empty` mbarriers): up to STAGES tiles in flight per program, independent of the consumers'
  registers, and issued before the PDL wait (weights only);
- NWG consumer warpgroups (64 weight columns each, BLOCK_N = 64 * NWG) first stage x (operand K order, act-order
  gather; rows past M zero), scales and zeros of the program's whole K range in shared memory (one round trip,
  overlapped with the producer's first copies; with two warpgroups each stages half of the x tiles and they meet
  on an mbarrier), then per K tile: wait `ready`, read the words (quant_tcg's D2 operand layout), build the
  register-A operand ((q - z) * s, FULL_DEQUANT, quant_tcg._operand), run one wgmma 64 x BLOCK_M x 128 over the
  staged x tile (y^T = W^T x^T, BLOCK_M = 8, 16, 32 or 64: BLOCK_MS), wait for it, then release the slot (`empty`).
- split-K (ITERS tiles a program, the last split shorter): read-and-clear atomics (kind "tcs") or per-split fp32
  slots summed by the last arriver ("tcss"), quant_tcw._tcw_store, counters per warpgroup tile.
Numerics (reference `tcs_reference`): kinds "tcs" / "tcss" / "tcs2" (and "tcs0") have quant_tcw's (operand (q - z) * s
in the 16-bit type, fp32 accumulation); the ACC_SCALE kinds "tcsa" / "tcs2a" (session 13, below) have quant_tc "tc"'s
(exact q - z operand, each K tile's fp32 product times its group's scale). Both first round the group scale to x's
16-bit type (s2.to(bfloat16), scales staged in x's dtype): a no-op for fp16 scales with fp16 x, a bf16 rounding
(relative error up to 2^-9) with bf16 x; tcs_reference and quant_tc (s.to(dt)) round the same way.
Session 12 measured on the H200 (bench/results/kernels-2026-11-30-s12-tcs.md, NOTES.md row "tcs"): 4-11% faster than
the tc2 picks at M = 4..16 on the 7B up / down shapes (best: two warpgroups, 4 stages, one wave of programs), 36-43% of
copy bandwidth iso, 41-50% under PDL; the ring's stream alone reaches 56-60% / 69-76%, the consumers' per-tile chain is
not hidden under it (kernels-2026-11-30-s12-tcs-layer.md had "tcs" shipped at six 7B points; session 13 replaced them).
With one warpgroup no x barrier is allocated: Triton otherwise reuses the dead mbarrier's bytes as the epilogue's
scratch (undefined on sm_90; it lost split-K arrivals).
4-bit weights, K and group multiples of 128, N-contiguous qweight with 16-byte rows (TMA); CUDA sm_90 only (no Gluon
interpreter twin: on the CPU quant_matmul.launch_tcs_kind runs quant_tc, kind "tcf" for the (q - z) * s kinds and "tc"
for the ACC_SCALE kinds, the same operand numerics).
Session 13 (bench/results/kernels-2026-11-30-s13-tcs-summary.md):
- Slot release after use. Session 12 released a slot right after the warps' shared-memory reads and one warpgroup
  barrier, before the wgmma that consumed the words. At block_m 16 on 7B gate/up (4096 x 22016, the shipped M = 16
  plan n128 split 3, and split 4) that gave sporadically wrong results: 8-11 of 40 single launches, errors 1e-3 to
  6e-3, one warp's 16 columns of a tile wrong in all rows (words of the next tile in that slot), split-K workspace
  clean; a GPU-scope fence in the split-K epilogue did not change it; the PIPE = 1 kinds, which release after the
  wgmma wait, never failed (s13_tcs_diag.py). Now every K loop releases a slot after the wgmma that used it completed
  (CUTLASS's consumer_release after warpgroup_wait): 0 of 40 at those plans, and 2-7% faster per call at the six
  shipped points. Session 12's "unexplained 4.95e-3" in the tcs2 check was this tcs pick (its exact inputs: the
  shipped tcs m16 s3 failed 2 of 32, tcs2 0 of 288). Kind "tcs0" (bench-only) keeps the early release and reproduces
  the race; test_quant_tcs.py checks the release order in the sm_90 PTX offline (tests/kernels/tcs_ptx_order.py).
- ACC_SCALE (kinds "tcsa", "tcs2a"; quant_matmul.launch_tcs_kind dispatches them, s13_tcs_dispatch.py): the
  operand is the exact q - z (_operand_qz: no scale multiply; fp16 keeps the odd nibbles in place and takes magic and
  zero off with one fma by 1/16, one shift a word instead of three) and each tile's fp32 wgmma result is scaled by its
  group's s, rounded to x's 16-bit type, on the accumulator (quant_tc "tc" numerics, tcs_reference(acc_scale=True));
  145 instead of 181 SASS instructions a K tile (s13_tcs_sass.py). Speed-ups (the figures quant_matmul and
  quant_matmul_config refer to): 5-15% faster than tcs at M = 4..16; "tcs2a" against the table's earlier picks at
  7B up / gate-up / down M = 4 / 8 / 16: 1.03-1.13x iso, 1.07-1.22x under PDL (kernels-2026-11-30-s13-tcs-summary.md).
Session 14 (bench/results/kernels-2026-12-01-s14-tcs-summary.md), issue 4's levers a / b:
- SZ_MODE (where the scales and zeros come from; the K loop is unchanged). Before, each consumer warpgroup loaded its
  scales and zeros from global memory and staged them before it issued its x loads: two serial round trips before the
  first K tile. SZ_MODE 1 (kind "tcs2ao") stages them after the x loads are issued (the round trips overlap);
  SZ_MODE 2 (kinds "tcs2at", "tcsat" = tcs2a's / tcsa's loops) has the producer warp TMA-copy the program's scale rows
  [ITERS_P2, 64] and zero-word rows [>= 4, 8] per warpgroup onto their own mbarrier before the first word tile
  (scales are weights: before the PDL wait), and the consumers stage them from shared memory after issuing their x
  loads (g128, N % 32 == 0, 16-byte rows: sz_tma_supported). Same numerics as tcsa / tcs2a. On the H200 (two runs,
  same-run A/B): tcsat against tcs2a (both 4 stages, the shipped splits) 1.00-1.05x iso and 0.97-1.04x under PDL at
  7B up / gate-up / down M = 2..16; tcs2ao 0.99-1.01x iso, 0.97-1.03x PDL. Shipped where >= 3% faster both ways in
  both runs: 7B gate/up M = 16 (tcsat m16 n128 s3, 25.57 / 23.74 -> 24.36 / 22.86 us iso / pdl).
- Deeper rings (lever b): 6 and 8 stages (tcs2a, tcs2at, tcsat) are 5-15% slower than 4 at M = 2..8 and 26-34% at
  M = 16 (block_m 16, 8 stages: one program an SM), in both PDL modes.
Which kinds run where: the tuner (quant_matmul_config.TCS_PLANS) offers "tcs2a" (PIPE + ACC_SCALE) and "tcsat"
(ACC_SCALE + SZ_MODE 2) at M = 2..16 (splits 2 / 3 / 4 / 8) and, since session 16, at M = 17..64 (block_m 32 / 64,
splits 2-11 / 4-16 where they fit), and the shipped table (tuned/nvidia-h200.json) has "tcs2a" at ten 7B points (up /
down at M = 2 / 4 / 8 / 16, gate-up at M = 4 / 8, kernels-2026-11-30-s13-tcs-summary.md and -s13-retune-summary.md)
and five 13B points (qkv at M = 2 / 4 / 8 split 2 and M = 16 split 4, gate/up at M = 16 split 3), "tcsat" at 7B
gate/up M = 16 (session 14); session 16 added nine M = 32 / 64 points ("tcsat" at 7B o / gate-up / down and 13B qkv /
o / gate-up M = 32 and 13B o M = 64, "tcs2a" at 7B o / up M = 64). "tcs", "tcss", "tcs2" (PIPE = 1: half-tile wgmmas
under the next half's dequantization), "tcsa", "tcs2ao" and "tcs2at" are bench / candidate kinds: quant_matmul
dispatches them (quant_matmul_config.TCS_KINDS), the tuner does not offer them.
Bench-only (launch_tcs, never dispatched): "tcs0" (session 12's early release, reproduces the race) and launch_tcs's
`diag` (DIAG 1-3: staging, operand or MMA left out to time the ring's stream alone; wrong results).
Session 16 (issue 4, M = 17..64; bench/results/kernels-2026-12-01-s16-mid.md): BLOCK_M 32 and 64 (the wgmma's N =
the tuner's M buckets 32 / 64). The x staging keeps XCH = 4 / 2 / 1 tiles in flight per warpgroup at BLOCK_M <= 16 /
32 / 64 (16-64 registers; BLOCK_M <= 16 builds the same PTX as before). BLOCK_M 64 spilled at the 80 / 104 register
caps (32-44 spill stores: accumulator, each tile's product and the half operands are ~96 registers); its programs
(x of 8 K tiles = 128 KiB) run one an SM anyway, so they launch at tcs_regs's WIDE_REGS (12 warps x 168, the worker
warpgroup 232, the default 248): no spills offline. On the H200 (same run, iso / PDL) the best tcs candidate against
the shipped quant_tcg "tc" / quant_tcl "tcl" picks: 1.00-1.17x / 1.09-1.44x at M = 32 (7B and 13B qkv / o / gate-up /
up / down but 13B down, 0.96x), at M = 64 1.02-1.10x / 1.05-1.18x on o / up / 13B down but 0.63-0.89x on qkv /
gate-up / 7B down (tcl wins there). Nine picks shipped (>= 3% both ways): decode step batch 32 0.952x (7B) and 0.972x
(13B), batch 64 0.998x / 0.996x, every round lower in two runs. Still 1.5-3x the M = 16 time for the same weight bytes:
each program stages x of its whole K range before its first tile (at M = 64, 86 column tiles re-read x: twice the
7B up weight bytes from L2) and block_m 64 leaves one program an SM (2.6 waves at 7B up split 4).
Session 16b (bench/results/kernels-2026-12-01-s16-big.md; the variant ran from that session's tree, not kept): 4 x
tiles in flight at block_m 32 / 64 instead of 2 / 1 changed nothing (0.99-1.01x, decode step 1.000x): the x staging
is not latency-bound. launch_tcs's diag modes at the session-16 configs (split 4) split the time into nearly additive
parts, e.g. 7B gate/up M = 64: 69.5 us ~ the ring's stream alone 39.7 (28% of copy bandwidth: one program an SM, 4
stages, the split-K epilogue) + staging 16.2 + operand / MMA 15.7 (sum 71.6); and each extra split costs ~3.5 ns per
output element at M = 64 (tcs2a split 4 -> 16: 69 -> 129 us at gate/up), so whole-range x staging, which forces split >= 4
at M = 64, is the limit (next: x streamed per tile, splits 1-2, more than one program an SM).
Session 15: launch_tcs's `defer` (DEFER_KINDS, split-K): the splits' fp32 adds only, no counter, no last arriver, y not
written; the add + RMSNorm that follows reads and zeroes the sums (kernels.consumer_finish.TCS_DEFER, the "cfin"
decode fusion; 7B down at M = 2..16: step 0.982-0.998x, bench/results/decode-2026-12-01-s15-tcsfin.md).
"""

from __future__ import annotations

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia import hopper
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma

from .gptq_packing import GPTQWeight
from .pdl import ggdc_late, ggdc_start, ggdc_wait_first, ggdc_wait_prefetched, launch_kw
from .quant_common import bucket_workspace, split_iters
from .quant_matmul_config import TCS_ACC_KINDS, TCS_KINDS, TCS_SZ_TMA_KINDS
from .quant_matmul_config import TCS_SMEM_MAX as SMEM_MAX  # bytes a program may use (ring + staged x, scales, zeros)
from .quant_matmul_config import tcs_fits as fits
from .quant_matmul_config import tcs_smem_bytes as smem_bytes
from .quant_tcg import BLOCK_K, _operand, layout_cache, tcg_layouts
from .quant_tcv import _x_stage_offsets, _xtile
from .quant_tcw import _tcw_store, slot_workspace

BK = gl.constexpr(BLOCK_K)  # the K tile as a kernel global
WG_N = 64  # weight columns per consumer warpgroup
BLOCK_MS = (8, 16, 32, 64)  # x rows a program (the wgmma's N); 32 / 64 since session 16 (M = 17..64)
# kind -> split-K in per-split slots (else read-and-clear atomics)
KINDS = {"tcs": False, "tcss": True, "tcs2": False, "tcsa": False, "tcs2a": False, "tcs2ao": False, "tcs2at": False,
         "tcsat": False, "tcs0": False}
# kinds with the barrier-free, MMA-overlapped K loop (PIPE = 1; "tcs2a" ships)
PIPE_KINDS = ("tcs2", "tcs2a", "tcs2ao", "tcs2at")
# session 13: ACC_SCALE = 1, the exact (q - z) operand (no scale in the operand, fewer instructions a K tile) and the
# tile's fp32 result scaled on the accumulator (quant_tc "tc" / quant_tcv numerics; a K tile is within one group)
ACC_KINDS = ("tcsa", "tcs2a", "tcs2ao", "tcs2at", "tcsat")
# session 14 (lever a): where the scales and zeros come from (SZ_MODE). 0: the consumers load them from global memory
# before the PDL wait and stage them before they load x (two serial round trips before the first tile); 1 ("...o"):
# the same loads, staged after the x loads were issued (the two round trips overlap); 2 ("...t"): the producer warp
# TMA-copies the program's scale and zero rows (one box each per warpgroup, its own mbarrier) before the first word
# tile, and the consumers stage them from shared memory after issuing their x loads (g128, N % 32 == 0)
SZ_MODES = {"tcs2ao": 1, "tcs2at": 2, "tcsat": 2}
# bench-only "tcs0": session 12's tcs, which released a ring slot right after reading it (before the wgmma that
# consumes the words): sporadically wrong results at block_m 16 (session 13, kernels-2026-11-30-s13-tcs-summary.md)
EARLY_KINDS = ("tcs0",)
# session 15: the kinds whose split-K epilogue launch_tcs's `defer` can replace (the read-and-clear atomics; not the
# per-split slots of "tcss", not the bench-only early release): the "cfin" decode fusion's tcs deferral
DEFER_KINDS = tuple(k for k, slots in KINDS.items() if not slots and k not in EARLY_KINDS)
# quant_matmul dispatches every kind but the bench-only EARLY_KINDS (quant_matmul_config's copies: no Gluon import)
assert tuple(k for k in KINDS if k not in EARLY_KINDS) == TCS_KINDS and ACC_KINDS == TCS_ACC_KINDS
assert tuple(k for k, v in SZ_MODES.items() if v == 2) == TCS_SZ_TMA_KINDS


def tcs_supported(w: GPTQWeight, k: int) -> bool:
    """4-bit weights, K and group multiples of 128, qweight N-contiguous with 16-byte rows (TMA)."""
    tma_ok = w.qweight.stride(1) == 1 and w.qweight.stride(0) % 4 == 0 and w.qweight.data_ptr() % 16 == 0
    return w.bits == 4 and k % BLOCK_K == 0 and w.group_size % BLOCK_K == 0 and tma_ok


def tcs_reference(x: torch.Tensor, w: GPTQWeight, acc_scale: bool = False) -> torch.Tensor:
    """Pure-torch model (fp32 [M, N]): per 128-row K tile, the operand (q - z) * s rounded to x's 16-bit type (as the
    kernel builds it), times x (act-order: packed row k reads x[:, perm[k]]), accumulated in fp32. The K order inside a
    tile changes only the fp32 summation order, so natural order is used. acc_scale (kinds ACC_KINDS): the operand is
    the exact q - z and each tile's fp32 product is scaled by its group's s. Either way s is first rounded to x's 16-bit
    type, as the kernel stages it: a no-op for fp16 scales with fp16 x (so with acc_scale the weights see no 16-bit
    rounding at all), a bf16 rounding (relative error up to 2^-9) with bf16 x."""
    from .gptq_packing import unpack_bitstream

    k, n = x.shape[1], w.out_features
    q = unpack_bitstream(w.qweight, 4, k, 0).float()  # [K, N]
    g = torch.arange(k, device=x.device) // w.group_size
    if w.sym:
        z = torch.full((k // w.group_size, n), 8.0, device=x.device)
    else:
        z = unpack_bitstream(w.qzeros, 4, n, 1).float() + w.zero_offset
    sg = w.scales.to(x.dtype).float()[g]  # the kernel stages the scales in x's 16-bit type
    a = (q - z[g]) if acc_scale else ((q - z[g]) * sg).to(x.dtype).float()  # the operand
    xs = x.float() if w.perm is None else x.float()[:, w.perm.long()]
    y = torch.zeros(x.shape[0], n, device=x.device)
    for t in range(k // BLOCK_K):
        sl = slice(t * BLOCK_K, (t + 1) * BLOCK_K)
        y += (xs[:, sl] @ a[sl]) * sg[t * BLOCK_K] if acc_scale else xs[:, sl] @ a[sl]
    return y


@layout_cache
def tcs_layouts(block_m: int) -> dict:
    """One consumer warpgroup's layouts (quant_tcg's for a 64-column, 4-warp tile)."""
    lay = tcg_layouts(WG_N, block_m, 4)
    return dict(MMA=lay["MMA"], DOT=lay["DOT"], L5=lay["L5"], L4=lay["L4"], D2=lay["D2"], XL=lay["XL"], XS=lay["XS"])


def word_smem_layout() -> gl.NVMMASharedLayout:
    return gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=32, rank=2)


# (q - z) pairs of one word, exact in the 16-bit type (no scale): four f16x2 / bf16x2 pairs, pair s = nibbles s and
# s + 4. fp16: nibbles 1 and 3 of each half keep their place (lop3 mask 0x00f0: 1024 + 16 q) and one fma by 1/16 with
# -(64 + z) takes off the magic and the zero (exact), so one shift a word instead of three and no scale multiply.
_QZ_F16 = (
    "{ .reg .b32 t0, t1, t2, t3, w8, c; lop3.b32 t0, $4, 0x000f000f, 0x64006400, 0xea; "
    "lop3.b32 t1, $4, 0x00f000f0, 0x64006400, 0xea; shr.u32 w8, $4, 8; "
    "lop3.b32 t2, w8, 0x000f000f, 0x64006400, 0xea; lop3.b32 t3, w8, 0x00f000f0, 0x64006400, 0xea; "
    "mov.b32 c, 0x2c002c00; sub.rn.f16x2 $0, t0, $5; fma.rn.f16x2 $1, t1, c, $6; sub.rn.f16x2 $2, t2, $5; "
    "fma.rn.f16x2 $3, t3, c, $6; }"
)
_QZ_BF16 = (  # bf16's 7-bit mantissa has no room for 16 q: a shift a pair
    "{ .reg .b32 t0, t1, t2, t3, w; lop3.b32 t0, $4, 0x000f000f, 0x43004300, 0xea; shr.u32 w, $4, 4; "
    "lop3.b32 t1, w, 0x000f000f, 0x43004300, 0xea; shr.u32 w, $4, 8; lop3.b32 t2, w, 0x000f000f, 0x43004300, 0xea; "
    "shr.u32 w, $4, 12; lop3.b32 t3, w, 0x000f000f, 0x43004300, 0xea; sub.rn.bf16x2 $0, t0, $5; "
    "sub.rn.bf16x2 $1, t1, $5; sub.rn.bf16x2 $2, t2, $5; sub.rn.bf16x2 $3, t3, $5; }"
)
_QZ_F16_C = gl.constexpr(_QZ_F16)
_QZ_BF16_C = gl.constexpr(_QZ_BF16)


@gluon.jit
def _operand_qz(pw, zm2, L5X: gl.constexpr, DOT: gl.constexpr, dt: gl.constexpr, IS_BF16: gl.constexpr):
    """A operand [64, 32 * nw] of (q - z) (exact small integers) from words pw [64, nw, 4 (t)] and the packed
    (MAGIC + z) pairs zm2 [64] (ACC_SCALE; quant_tcg._operand's layouts, the scale left to the accumulator)."""
    L4X: gl.constexpr = gl.SliceLayout(4, L5X)
    PL: gl.constexpr = gl.SliceLayout(2, L4X)  # [64, nw, t]
    BN: gl.constexpr = pw.shape[0]
    NW: gl.constexpr = pw.shape[1]
    words = gl.convert_layout(pw, PL, assert_trivial=True)
    zl = gl.convert_layout(zm2, gl.SliceLayout(1, gl.SliceLayout(2, PL)))
    zlb = gl.broadcast(zl[:, None, None], words)[0]
    if IS_BF16:
        o = gl.inline_asm_elementwise(_QZ_BF16_C, "=r,=r,=r,=r,r,r", [words, zlb], [gl.int32] * 4, True, 1)
    else:
        zh = ((zl & 0xFFFF) << 4) + (0xD400 - 0x64000)  # fp16 -(64 + z) from 0x6400 + z
        zhb = gl.broadcast((zh | (zh << 16))[:, None, None], words)[0]
        o = gl.inline_asm_elementwise(_QZ_F16_C, "=r,=r,=r,=r,r,r,r", [words, zlb, zhb], [gl.int32] * 4, True, 1)
    p = gl.join(gl.join(o[0], o[2]), gl.join(o[1], o[3]))  # [64, nw, t, j, i]: pair s = 2 j + i
    pairs = gl.permute(gl.reshape(p, [BN, NW, 4, 4]), [0, 1, 3, 2])  # [64, nw, s, t]
    w5 = gl.join(pairs.to(gl.int16), (pairs >> 16).to(gl.int16))  # [64, nw, s, t, e]
    w5 = gl.convert_layout(w5, L5X)  # a register renaming within each thread
    a = gl.reshape(w5, [BN, 32 * NW]).to(dt, bitcast=True)
    return gl.convert_layout(a, DOT, assert_trivial=True)


@gluon.jit
def _sz_store(s2, zw, cz, s_smem, z_smem, WG: gl.constexpr, ITERS_P2: gl.constexpr, SYM: gl.constexpr,
              ZERO_OFFSET: gl.constexpr, IS_BF16: gl.constexpr, SZ: gl.constexpr):  # fmt: skip
    """Stage one warpgroup's scales (x's 16-bit type) and packed (MAGIC + z) pairs [ITERS_P2, 64]: zw holds each
    column's qzeros word (column c: nibble c % 8), cz the columns."""
    if IS_BF16:
        s2 = s2.to(gl.bfloat16)
        magic = 0x4300
    else:
        magic = 0x6400
    if SYM:
        z2 = gl.full([ITERS_P2, 64], 8, gl.int32, layout=SZ)
    else:
        z2 = ((zw >> (4 * (cz % 8))[None, :]) & 0xF) + ZERO_OFFSET
    zm = magic + z2
    s_smem.slice(WG * ITERS_P2, ITERS_P2, dim=0).store(s2.to(s_smem.dtype))
    z_smem.slice(WG * ITERS_P2, ITERS_P2, dim=0).store(zm | (zm << 16))


@gluon.jit
def _sz_from_tma(s_tma, z_tma, szbar, cz, s_smem, z_smem, WG: gl.constexpr, ITERS_P2: gl.constexpr,
                 SYM: gl.constexpr, ZERO_OFFSET: gl.constexpr, IS_BF16: gl.constexpr, SZ: gl.constexpr,
                 STAGE: gl.constexpr):  # fmt: skip
    """SZ_MODE 2: wait for the producer's scale / zero boxes of this warpgroup ([ITERS_P2, 64] scales, [ITERS_P2, 8]
    zero words) and stage them as _sz_store does (STAGE 0: diagnosis without staging, only the wait)."""
    mbarrier.wait(szbar.index(0), 0)
    if STAGE:
        s2 = s_tma.index(WG).load(SZ)
        Z3: gl.constexpr = gl.BlockedLayout([1, 1, 2], [1, 8, 4], [4, 1, 1], [2, 1, 0])  # [tile, word, nibble]
        zw8 = z_tma.index(WG).slice(0, ITERS_P2, dim=0).load(gl.SliceLayout(2, Z3))  # (the box has >= 4 rows)
        nib = gl.arange(0, 8, layout=gl.SliceLayout(0, gl.SliceLayout(1, Z3)))
        zw3 = gl.broadcast(zw8[:, :, None], nib[None, None, :])[0]  # each word repeated for its 8 columns
        zw = gl.convert_layout(gl.reshape(zw3, [ITERS_P2, 64]), SZ)
        _sz_store(s2, zw, cz, s_smem, z_smem, WG, ITERS_P2, SYM, ZERO_OFFSET, IS_BF16, SZ)


@gluon.jit
def _tcs_producer(w_desc, w_smem, ready, empty, t0, n_it, pid_n, STAGES: gl.constexpr, BLOCK_N: gl.constexpr,
                  USE_GDC: gl.constexpr, s_desc, z_desc, s_tma, z_tma, szbar, SZ_MODE: gl.constexpr,
                  SYM: gl.constexpr):  # fmt: skip
    ggdc_wait_first(USE_GDC)  # PDL mode 3 (no weight prefetch, an ablation): wait before the first copy
    if SZ_MODE == 2:  # the program's scale and zero rows (g128: row = K tile), one box each per warpgroup, first
        NWG: gl.constexpr = BLOCK_N // 64
        NB: gl.constexpr = NWG * (s_desc.block_type.nbytes + (0 if SYM else z_desc.block_type.nbytes))
        mbarrier.expect(szbar.index(0), NB)
        for wg in gl.static_range(NWG):
            tma.async_copy_global_to_shared(s_desc, [t0, pid_n * BLOCK_N + wg * 64], szbar.index(0), s_tma.index(wg))
            if not SYM:
                tma.async_copy_global_to_shared(z_desc, [t0, pid_n * (BLOCK_N // 8) + wg * 8], szbar.index(0),
                                                z_tma.index(wg))  # fmt: skip
    for it in range(n_it):
        st = it % STAGES
        mbarrier.wait(empty.index(st), ((it // STAGES) & 1) ^ 1)  # fresh barriers count as released
        bar = ready.index(st)
        mbarrier.expect(bar, w_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(w_desc, [(t0 + it) * 16, pid_n * BLOCK_N], bar, w_smem.index(st))


@gluon.jit
def _tcs_consumer(x_ptr, perm_ptr, sc_ptr, qz_ptr, y_ptr, ws_ptr, cnt_ptr, x_smem, s_smem, z_smem, w_smem, ready, empty,
                  xbar, s_tma, z_tma, szbar, M, N, K, t0, n_it, pid_n, pid_m, pid_k, tiles, SPLIT_K, stride_xm,
                  stride_xk, stride_sg, stride_sn, stride_zg, stride_zn, stride_ym, stride_yn,
                  WG: gl.constexpr, NWG: gl.constexpr, ITERS: gl.constexpr, GROUP: gl.constexpr, SYM: gl.constexpr,
                  ZERO_OFFSET: gl.constexpr, HAS_PERM: gl.constexpr, USE_SPLIT: gl.constexpr, SLOTS: gl.constexpr,
                  IS_BF16: gl.constexpr, STAGES: gl.constexpr, BLOCK_M: gl.constexpr, USE_GDC: gl.constexpr,
                  MMA: gl.constexpr, DOT: gl.constexpr, L5: gl.constexpr, L4: gl.constexpr, D2: gl.constexpr,
                  XL: gl.constexpr, DIAG: gl.constexpr, PIPE: gl.constexpr = 0,
                  L5H: gl.constexpr = None, ACC_SCALE: gl.constexpr = 0,
                  EARLY_RELEASE: gl.constexpr = 0, SZ_MODE: gl.constexpr = 0, DEFER: gl.constexpr = 0):  # fmt: skip
    dt: gl.constexpr = x_smem.dtype
    SA: gl.constexpr = gl.SliceLayout(1, MMA)  # the accumulator's rows (weight columns): ACC_SCALE's scales
    ZL: gl.constexpr = gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(3, L4)))  # operand rows (= columns)
    ITERS_P2: gl.constexpr = triton.next_power_of_2(ITERS)
    col0 = pid_n * (NWG * 64) + WG * 64
    k_begin = t0 * BK
    g_last = (K - 1) // GROUP
    # scales and zeros of this warpgroup's columns for all the program's tiles, one 2D load each (one round trip;
    # weights: before the PDL wait)
    ggdc_wait_first(USE_GDC)  # PDL mode 3: nothing before the wait
    SZ: gl.constexpr = gl.BlockedLayout([1, 2], [1, 32], [4, 1], [1, 0])
    ti = gl.arange(0, ITERS_P2, layout=gl.SliceLayout(1, SZ))
    cz = gl.minimum(col0 + gl.arange(0, 64, layout=gl.SliceLayout(0, SZ)), N - 1)
    gz = gl.minimum((k_begin + ti * BK) // GROUP, g_last)
    if SZ_MODE < 2:  # the consumers' own loads (SZ_MODE 0: staged here; 1: staged once x's first loads are issued)
        s2 = gl.load(sc_ptr + gz[:, None] * stride_sg + cz[None, :] * stride_sn)
        if SYM:
            zw = s2  # unused
        else:
            zw = gl.load(qz_ptr + gz[:, None] * stride_zg + (cz // 8)[None, :] * stride_zn)
        if SZ_MODE == 0 and DIAG % 2 == 0:
            _sz_store(s2, zw, cz, s_smem, z_smem, WG, ITERS_P2, SYM, ZERO_OFFSET, IS_BF16, SZ)
    ggdc_wait_prefetched(USE_GDC)  # x (and the split-K workspace) may be written by the previous kernel
    # x in the operand's K order (quant_tcv's staging): this warpgroup's share of the tiles, loads of XCH tiles issued
    # before their shared-memory stores
    # (session 16: XCH = x tiles in flight per warpgroup, 4 at BLOCK_M <= 16, 2 at 32, 1 at 64: 16-64 registers;
    # LB / LC / LD switch the 2nd-4th load of a round off where XCH leaves it out)
    x_row, x_kk, mask_mx = _x_stage_offsets(pid_m, M, stride_xm, BLOCK_M, XL)
    XCH: gl.constexpr = 4 if BLOCK_M <= 16 else (2 if BLOCK_M == 32 else 1)
    LB: gl.constexpr = ITERS if XCH >= 2 else 0
    LC: gl.constexpr = ITERS if XCH >= 3 else 0
    LD: gl.constexpr = ITERS if XCH >= 4 else 0
    for c in gl.static_range(WG, ITERS if DIAG % 2 == 0 else 0, XCH * NWG):
        xa = _xtile(x_ptr, perm_ptr, x_row, x_kk, mask_mx, k_begin + c * BK, K, stride_xk, HAS_PERM)
        if c + NWG < LB:
            xb = _xtile(x_ptr, perm_ptr, x_row, x_kk, mask_mx, k_begin + (c + NWG) * BK, K, stride_xk, HAS_PERM)
        if c + 2 * NWG < LC:
            xc = _xtile(x_ptr, perm_ptr, x_row, x_kk, mask_mx, k_begin + (c + 2 * NWG) * BK, K, stride_xk, HAS_PERM)
        if c + 3 * NWG < LD:
            xd = _xtile(x_ptr, perm_ptr, x_row, x_kk, mask_mx, k_begin + (c + 3 * NWG) * BK, K, stride_xk, HAS_PERM)
        if c == WG:  # SZ_MODE 1 / 2: scales and zeros staged while the first x loads are in flight
            if SZ_MODE == 1:
                _sz_store(s2, zw, cz, s_smem, z_smem, WG, ITERS_P2, SYM, ZERO_OFFSET, IS_BF16, SZ)
            if SZ_MODE == 2:
                _sz_from_tma(s_tma, z_tma, szbar, cz, s_smem, z_smem, WG, ITERS_P2, SYM, ZERO_OFFSET, IS_BF16, SZ, 1)
        x_smem.index(c).store(gl.reshape(gl.permute(xa, [0, 2, 4, 1, 3]), [BLOCK_M, BK]))
        if c + NWG < LB:
            x_smem.index(c + NWG).store(gl.reshape(gl.permute(xb, [0, 2, 4, 1, 3]), [BLOCK_M, BK]))
        if c + 2 * NWG < LC:
            x_smem.index(c + 2 * NWG).store(gl.reshape(gl.permute(xc, [0, 2, 4, 1, 3]), [BLOCK_M, BK]))
        if c + 3 * NWG < LD:
            x_smem.index(c + 3 * NWG).store(gl.reshape(gl.permute(xd, [0, 2, 4, 1, 3]), [BLOCK_M, BK]))
    if WG >= ITERS or DIAG % 2 == 1:  # no x tile of this warpgroup (or no staging): the loop above never ran
        if SZ_MODE == 1 and DIAG % 2 == 0:
            _sz_store(s2, zw, cz, s_smem, z_smem, WG, ITERS_P2, SYM, ZERO_OFFSET, IS_BF16, SZ)
        if SZ_MODE == 2:  # (the wait also under DIAG: no TMA copy outstanding at exit)
            _sz_from_tma(s_tma, z_tma, szbar, cz, s_smem, z_smem, WG, ITERS_P2, SYM, ZERO_OFFSET, IS_BF16, SZ,
                         DIAG % 2 == 0)  # fmt: skip
    hopper.fence_async_shared()
    gl.thread_barrier()
    if NWG > 1:
        mbarrier.arrive(xbar.index(0), count=1)
        mbarrier.wait(xbar.index(0), 0)
    # the same row-major bytes seen through a rank-1 layout: one row (tile) at a time in the operand's column layout
    FLAT: gl.constexpr = gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[0])
    s_rows = s_smem._reinterpret(s_smem.dtype, s_smem.shape, FLAT)
    z_rows = z_smem._reinterpret(gl.int32, z_smem.shape, FLAT)
    acc = gl.zeros((64, BLOCK_M), gl.float32, layout=MMA)
    acc0 = gl.zeros((64, BLOCK_M), gl.float32, layout=MMA)  # ACC_SCALE: each tile's wgmma starts from zero
    for it in range(n_it if PIPE == 0 else 0):
        st = it % STAGES
        mbarrier.wait(ready.index(st), (it // STAGES) & 1)
        if DIAG >= 2:  # diagnosis only: the ring's stream alone (no operand, no MMA; wrong result)
            mbarrier.arrive(empty.index(st), count=1)
        else:
            p2 = w_smem.index(st).slice(WG * 64, 64, dim=1).load(D2)  # [16 rows, 64], row = 4t + wi
            if EARLY_RELEASE:  # bench-only kind "tcs0" (session 12's tcs): released before the words are used
                gl.thread_barrier()  # (races: see the module docstring)
                mbarrier.arrive(empty.index(st), count=1)
            p0 = gl.convert_layout(gl.permute(gl.reshape(p2, [4, 4, 64]), [2, 1, 0]), gl.SliceLayout(2, L4),
                                   assert_trivial=True)  # fmt: skip
            zm2 = z_rows.index(WG * ITERS_P2 + it).load(ZL)
            if ACC_SCALE:  # the tile's (q - z) x product, then acc += s * it (fp32)
                sv = s_rows.index(WG * ITERS_P2 + it).load(SA).to(gl.float32)
                a = _operand_qz(p0, zm2, L5, DOT, dt, IS_BF16)
                tok = hopper.warpgroup_mma(a, x_smem.index(it).permute((1, 0)), acc0, use_acc=False, is_async=True)
                part = hopper.warpgroup_mma_wait(0, deps=[tok])
                mbarrier.arrive(empty.index(st), count=1)  # no ACC_SCALE kind releases early (EARLY_KINDS)
                acc = acc + part * sv[:, None]
            else:
                s = s_rows.index(WG * ITERS_P2 + it).load(ZL)
                a = _operand(p0, zm2, s, L5, DOT, dt, True, IS_BF16)
                tok = hopper.warpgroup_mma(a, x_smem.index(it).permute((1, 0)), acc, is_async=True)
                acc = hopper.warpgroup_mma_wait(0, deps=[tok])
                # the slot goes back once the wgmma that consumed this tile's words completed (every warp's reads
                # of the slot went into it: PIPE 1's argument, CUTLASS's consumer_release after warpgroup_wait)
                if not EARLY_RELEASE:
                    mbarrier.arrive(empty.index(st), count=1)
    # PIPE (kind "tcs2"): each K tile as two K = 64 halves (words wi = 0, 1 | 2, 3, quant_tcv's "tcv2" split), the
    # second half's operand built while the first half's wgmma runs; no thread barrier of ours in the K loop. The slot
    # of tile i-1 is released at the top of tile i, after wait(0) saw tile i-1's wgmmas complete: a wgmma starts only
    # once all four warps issued it, and each warp's operand came from its own reads of the slot, so its completion
    # means every warp of this warpgroup has read the slot (CUTLASS's consumer_release after warpgroup_wait: one
    # arrival per warpgroup). Releasing just before the next `ready` wait lets one warpgroup barrier (which Triton's
    # barrier pass puts between successive waits / arrivals on one mbarrier array) serve both.
    if PIPE == 1:
        HK: gl.constexpr = 64
        for it in range(n_it):
            st = it % STAGES
            mbarrier.arrive(empty.index((it + STAGES - 1) % STAGES), count=1, pred=it > 0)
            mbarrier.wait(ready.index(st), (it // STAGES) & 1)
            if DIAG < 2:  # DIAG >= 2 (diagnosis only): the ring's stream alone (no operand, no MMA; wrong result)
                p2 = w_smem.index(st).slice(WG * 64, 64, dim=1).load(D2)  # [16 rows, 64], row = 4t + wi
                p0 = gl.convert_layout(gl.permute(gl.reshape(p2, [4, 4, 64]), [2, 1, 0]), gl.SliceLayout(2, L4),
                                       assert_trivial=True)  # fmt: skip
                zm2 = z_rows.index(WG * ITERS_P2 + it).load(ZL)
                pa, pb = gl.split(gl.permute(gl.reshape(p0, [64, 2, 2, 4]), [0, 2, 3, 1]))  # [64, wi % 2, t] each
                xt = x_smem.index(it)
                if ACC_SCALE:
                    sv = s_rows.index(WG * ITERS_P2 + it).load(SA).to(gl.float32)
                    a0 = _operand_qz(pa, zm2, L5H, DOT, dt, IS_BF16)
                    tok = hopper.warpgroup_mma(a0, xt.slice(0, HK, dim=1).permute((1, 0)), acc0, use_acc=False,
                                               is_async=True)  # fmt: skip
                    a1 = _operand_qz(pb, zm2, L5H, DOT, dt, IS_BF16)  # while half 0's wgmma runs
                    tok = hopper.warpgroup_mma(a1, xt.slice(HK, HK, dim=1).permute((1, 0)), tok, is_async=True)
                    part, a0, a1 = hopper.warpgroup_mma_wait(0, deps=[tok, a0, a1])
                    acc = acc + part * sv[:, None]
                else:
                    s = s_rows.index(WG * ITERS_P2 + it).load(ZL)
                    a0 = _operand(pa, zm2, s, L5H, DOT, dt, True, IS_BF16)
                    tok = hopper.warpgroup_mma(a0, xt.slice(0, HK, dim=1).permute((1, 0)), acc, is_async=True)
                    a1 = _operand(pb, zm2, s, L5H, DOT, dt, True, IS_BF16)  # while half 0's wgmma runs
                    tok = hopper.warpgroup_mma(a1, xt.slice(HK, HK, dim=1).permute((1, 0)), tok, is_async=True)
                    acc, a0, a1 = hopper.warpgroup_mma_wait(0, deps=[tok, a0, a1])
    ggdc_late(USE_GDC)
    if DEFER:  # (split-K, read-and-clear kinds; launch_tcs checks) the consumer reads and clears the sums
        _red_sums(acc, pid_m * BLOCK_M, col0, M, N, ws_ptr, BLOCK_M)
    else:
        tile = WG * tiles + pid_m * gl.num_programs(0) + pid_n
        _tcw_store(acc, pid_m * BLOCK_M, col0, M, N, y_ptr, stride_ym, stride_yn, ws_ptr, cnt_ptr, tile, pid_k,
                   SPLIT_K, USE_SPLIT, SLOTS, BLOCK_M)  # fmt: skip


@gluon.jit
def _red_sums(acc, row0, col0, M, N, ws_ptr, BLOCK_M: gl.constexpr):
    """DEFER (session 15, the "cfin" decode fusion's tcs deferral, kernels.consumer_finish): a split's partial sums
    acc [64, BLOCK_M] (y[row0:, col0:]^T) added into the workspace's row-major [M, N] sums with fire-and-forget fp32
    atomics (the result unused: RED), as _tcw_store's read-and-clear path adds them, but no arrival counter and no last
    program: the consumer (fused_norm.add_rms_norm_sums) reads and zeroes them after its PDL wait."""
    LA: gl.constexpr = acc.type.layout
    offs_n2 = col0 + gl.arange(0, 64, layout=gl.SliceLayout(1, LA))
    offs_m2 = row0 + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(0, LA))
    offs = offs_m2[None, :] * N + offs_n2[:, None]
    gl.atomic_add(ws_ptr + offs, acc, mask=(offs_n2 < N)[:, None] & (offs_m2 < M)[None, :], sem="relaxed")


@gluon.jit
def _ws_wg(consumer: gl.constexpr, cargs, WG: gl.constexpr, cconst):
    """Consumer warpgroup WG: consumer(*cargs, WG, *cconst)."""
    consumer(*cargs, WG, *cconst)


@gluon.jit
def _ws_producer(producer: gl.constexpr, pargs):
    """The producer warp: producer(*pargs) (warp_specialize takes a function, not a constexpr holding one)."""
    producer(*pargs)


@gluon.jit
def ws_partitions(consumer: gl.constexpr, producer: gl.constexpr, cargs, cconst, pargs, NWG: gl.constexpr,
                  CONS_REGS: gl.constexpr):  # fmt: skip
    """The warp-specialized region of quant_tcs and quant_tcsx: NWG consumer warpgroups (the default partition, then a
    4-warp worker at CONS_REGS registers) running consumer on its arguments but WG (cargs: runtime values, cconst:
    constexprs) and a 1-warp producer (24 registers) on pargs."""
    if NWG == 2:
        gl.warp_specialize([(_ws_wg, (consumer, cargs, 0, cconst)), (_ws_wg, (consumer, cargs, 1, cconst)),
                            (_ws_producer, (producer, pargs))], [4, 1], [CONS_REGS, 24])  # fmt: skip
    else:
        gl.warp_specialize([(_ws_wg, (consumer, cargs, 0, cconst)), (_ws_producer, (producer, pargs))], [1],
                           [24])  # fmt: skip


@gluon.jit
def _tcs_kernel(
    w_desc, x_ptr, perm_ptr, sc_ptr, qz_ptr, y_ptr, ws_ptr, cnt_ptr,
    M, N, K, SPLIT_K,
    stride_xm, stride_xk, stride_sg, stride_sn, stride_zg, stride_zn, stride_ym, stride_yn, s_desc, z_desc,
    ITERS: gl.constexpr, GROUP: gl.constexpr, SYM: gl.constexpr, ZERO_OFFSET: gl.constexpr, HAS_PERM: gl.constexpr,
    USE_SPLIT: gl.constexpr, SLOTS: gl.constexpr, IS_BF16: gl.constexpr, STAGES: gl.constexpr, BLOCK_M: gl.constexpr,
    NWG: gl.constexpr, CONS_REGS: gl.constexpr,
    MMA: gl.constexpr, DOT: gl.constexpr, L5: gl.constexpr, L4: gl.constexpr, D2: gl.constexpr, XL: gl.constexpr,
    XS: gl.constexpr, USE_GDC: gl.constexpr = 0, DIAG: gl.constexpr = 0, PIPE: gl.constexpr = 0,
    L5H: gl.constexpr = None, ACC_SCALE: gl.constexpr = 0, EARLY_RELEASE: gl.constexpr = 0, SZ_MODE: gl.constexpr = 0,
    DEFER: gl.constexpr = 0,
):  # fmt: skip
    ggdc_start(USE_GDC)
    pid_n = gl.program_id(0)
    pid_k = gl.program_id(1)
    pid_m = gl.program_id(2)
    tiles = gl.num_programs(0) * gl.num_programs(2)
    BLOCK_N: gl.constexpr = NWG * 64
    w_smem = gl.allocate_shared_memory(gl.int32, [STAGES, 16, BLOCK_N], w_desc.layout)
    x_smem = gl.allocate_shared_memory(x_ptr.dtype.element_ty, [ITERS, BLOCK_M, BK], XS)
    ITERS_P2: gl.constexpr = triton.next_power_of_2(ITERS)
    SF: gl.constexpr = gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[1, 0])  # row-major, unswizzled
    s_smem = gl.allocate_shared_memory(x_ptr.dtype.element_ty, [NWG * ITERS_P2, 64], SF)
    z_smem = gl.allocate_shared_memory(gl.int32, [NWG * ITERS_P2, 64], SF)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=NWG)  # one arrival per consumer warpgroup
    if NWG > 1:
        xbar = gl.allocate_shared_memory(gl.int64, [1, 1], mbarrier.MBarrierLayout())
        mbarrier.init(xbar.index(0), count=NWG)
    else:  # no x barrier: Triton reuses a dead mbarrier's bytes as epilogue scratch (undefined behaviour on sm_90)
        xbar = ready
    if SZ_MODE == 2:  # the producer's scale / zero boxes (one each per warpgroup) and their barrier
        s_tma = gl.allocate_shared_memory(s_desc.dtype, [NWG, ITERS_P2, 64], s_desc.layout)
        ZP2: gl.constexpr = 4 if ITERS_P2 < 4 else ITERS_P2  # >= 128 bytes a box: TMA boxes are 128-byte aligned
        z_tma = gl.allocate_shared_memory(gl.int32, [NWG, ZP2, 8], z_desc.layout)
        szbar = gl.allocate_shared_memory(gl.int64, [1, 1], mbarrier.MBarrierLayout())
        mbarrier.init(szbar.index(0), count=1)
    else:
        s_tma, z_tma, szbar = s_smem, z_smem, ready  # unused
    hopper.fence_async_shared()
    k_tiles = K // BK
    t0 = pid_k * ITERS
    n_it = gl.minimum(ITERS, k_tiles - t0)  # the last split may hold fewer tiles
    # the partitions' arguments, written once: consumers' runtime values, their constexprs, the producer's (passed as
    # call arguments: a Gluon tuple assigned to a name or joined with `+` loses its constexprs, strides of 1 included)
    ws_partitions(
        _tcs_consumer, _tcs_producer,
        (x_ptr, perm_ptr, sc_ptr, qz_ptr, y_ptr, ws_ptr, cnt_ptr, x_smem, s_smem, z_smem, w_smem, ready, empty, xbar,
         s_tma, z_tma, szbar, M, N, K, t0, n_it, pid_n, pid_m, pid_k, tiles, SPLIT_K, stride_xm, stride_xk, stride_sg,
         stride_sn, stride_zg, stride_zn, stride_ym, stride_yn),
        (NWG, ITERS, GROUP, SYM, ZERO_OFFSET, HAS_PERM, USE_SPLIT, SLOTS, IS_BF16, STAGES, BLOCK_M, USE_GDC, MMA, DOT,
         L5, L4, D2, XL, DIAG, PIPE, L5H, ACC_SCALE, EARLY_RELEASE, SZ_MODE, DEFER),
        (w_desc, w_smem, ready, empty, t0, n_it, pid_n, STAGES, BLOCK_N, USE_GDC, s_desc, z_desc, s_tma, z_tma, szbar,
         SZ_MODE, SYM), NWG, CONS_REGS)  # fmt: skip


def plan_grid(m: int, n: int, k: int, block_m: int, split_k: int, nwg: int) -> tuple[tuple[int, int, int], int]:
    """(grid, ITERS): column tiles of 64 * nwg, splits of ITERS K tiles (the last may be shorter), row blocks."""
    iters, split = split_iters(k // BLOCK_K, split_k)
    return (triton.cdiv(n, WG_N * nwg), split, triton.cdiv(m, block_m)), iters


def sz_tma_supported(w: GPTQWeight) -> bool:
    """SZ_MODE 2 (the producer TMA-copies scale and zero rows): g128 (a scale row a K tile), N % 32 == 0 and
    row-major scales / zeros with 16-byte rows (TMA)."""
    tensors = (w.scales, w.qzeros)
    rows_ok = all(t.stride(1) == 1 and (t.stride(0) * t.element_size()) % 16 == 0 and t.data_ptr() % 16 == 0
                  for t in tensors)  # fmt: skip
    return w.group_size == BLOCK_K and w.out_features % 32 == 0 and rows_ok


def sz_descriptors(scales: torch.Tensor, qzeros: torch.Tensor, iters: int) -> tuple:
    """SZ_MODE 2's TMA descriptors: scales [ITERS_P2, 64] and zero words [max(ITERS_P2, 4), 8] boxes (one per
    warpgroup; each box's shared-memory destination must be 128-byte aligned: a 1-2 row zero box was misaligned)."""
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    p2 = triton.next_power_of_2(iters)
    bits = scales.element_size() * 8
    s_desc = TensorDescriptor.from_tensor(scales, [p2, WG_N], gl.NVMMASharedLayout(0, bits, 2))
    z_desc = TensorDescriptor.from_tensor(qzeros, [max(p2, 4), WG_N // 8], gl.NVMMASharedLayout(0, 32, 2))
    return s_desc, z_desc


def tcs_args(x2: torch.Tensor, w: GPTQWeight, block_m: int, split_k: int, stages: int, nwg: int, y: torch.Tensor,
             slots: bool = False, sz_tma: bool = False) -> tuple[tuple, tuple, dict]:  # fmt: skip
    """(grid, positional args, constexpr kwargs) of one launch; shared with the offline build. sz_tma: SZ_MODE 2's
    scale / zero descriptors (else the word descriptor stands in, unused)."""
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    m, k = x2.shape
    n = w.out_features
    if not tcs_supported(w, k):
        raise ValueError(f"tcs needs 4-bit N-contiguous weights, K and group multiples of {BLOCK_K}")
    if stages < 2 or block_m not in BLOCK_MS or nwg not in (1, 2):
        raise ValueError(f"tcs: stages >= 2, block_m in {BLOCK_MS}, 1-2 consumer warpgroups (got {stages}, {block_m}, "
                         f"{nwg})")  # fmt: skip
    if not fits(k, block_m, split_k, stages, nwg, sz_tma):
        raise ValueError(f"tcs: ring + staging over {SMEM_MAX} bytes of shared memory")
    grid, iters = plan_grid(m, n, k, block_m, split_k, nwg)
    split = grid[1]
    if split == 1:
        ws, cnt = y, y
    elif slots:
        ws, cnt = bucket_workspace(x2.device, m, n, nwg * grid[0], block_m, planes=split, alloc=slot_workspace)
    else:
        ws, cnt = bucket_workspace(x2.device, m, n, nwg * grid[0], block_m)
    w_desc = TensorDescriptor.from_tensor(w.qweight, [BLOCK_K // 8, WG_N * nwg], word_smem_layout())
    perm = w.perm if w.perm is not None else w.qweight
    if sz_tma and not sz_tma_supported(w):
        raise ValueError("tcs SZ_MODE 2: g128, N % 32 == 0 and 16-byte scale / zero rows (TMA)")
    sz = sz_descriptors(w.scales, w.qzeros, iters) if sz_tma else (w_desc, w_desc)
    args = (
        w_desc, x2, perm, w.scales, w.qzeros, y, ws, cnt,
        m, n, k, split,
        x2.stride(0), x2.stride(1), w.scales.stride(0), w.scales.stride(1), w.qzeros.stride(0), w.qzeros.stride(1),
        y.stride(0), y.stride(1), *sz,
    )  # fmt: skip
    consts = dict(ITERS=iters, GROUP=w.group_size, SYM=w.sym, ZERO_OFFSET=w.zero_offset, HAS_PERM=w.perm is not None,
                  USE_SPLIT=split > 1, SLOTS=slots, IS_BF16=x2.dtype == torch.bfloat16, STAGES=stages, BLOCK_M=block_m,
                  NWG=nwg, CONS_REGS=tcs_regs(block_m, nwg)[1], **tcs_layouts(block_m))  # fmt: skip
    return grid, args, consts


# launch register caps: 8 warps x 80 (one consumer warpgroup, which setmaxnreg raises to 136) = 3 programs an SM,
# 12 x 80 (two: the worker warpgroup gets CONS_REGS, the default one the rest, 112) = 2 programs an SM
CONS_REGS = 104
LAUNCH_REGS = {1: 80, 2: 80}
# session 16: block_m 64 (the x staging of 8 K tiles alone is 128 KiB: one program an SM) spills at 104 / 112 (the
# accumulator, each tile's product and the two half operands are 96 registers a thread); it gets the SM's registers:
# 12 warps x 168, the worker warpgroup 232, the default one 248 (3 x 168 - 232 - 24)
WIDE_REGS = (168, 232)


def tcs_regs(block_m: int, nwg: int) -> tuple[int, int]:
    """(launch maxnreg, the worker consumer warpgroup's setmaxnreg) of a launch."""
    return WIDE_REGS if block_m >= 64 else (LAUNCH_REGS[nwg], CONS_REGS)


def launch_tcs(x2: torch.Tensor, w: GPTQWeight, block_m: int, split_k: int, stages: int, nwg: int, y: torch.Tensor,
               kind: str = "tcs", diag: int = 0, defer: bool = False) -> torch.Tensor | None:  # fmt: skip
    """y[M, N] = x2[M, K] @ W (CUDA, sm_90); with PDL inside kernels.pdl's scope (launch_kw). diag (benches only,
    wrong results): 1 = no x / scale / zero staging, 2 = no operand or MMA, 3 = neither (the ring's stream alone).
    defer (DEFER_KINDS with more than one K split, no diag; kernels.consumer_finish, session 15): the splits only add
    their partial sums into the shared workspace (quant_common.workspace; no arrival counter, no last program, y not
    written) and the workspace is returned: its first M * N values hold y's fp32 sums (row-major) until the consumer
    reads and zeroes them (fused_norm.add_rms_norm_sums). Otherwise None."""
    sz_mode = SZ_MODES.get(kind, 0)
    grid, args, consts = tcs_args(x2, w, block_m, split_k, stages, nwg, y, KINDS[kind], sz_mode == 2)
    if defer and (kind not in DEFER_KINDS or grid[1] < 2 or diag):
        raise ValueError(f"tcs defer: a read-and-clear kind {DEFER_KINDS} with split-K (got {kind!r}, {grid[1]} "
                         f"split(s), diag {diag})")  # fmt: skip
    pipe = dict(PIPE=1, L5H=tcg_layouts(WG_N, block_m, 4)["L5H"]) if kind in PIPE_KINDS else {}
    _tcs_kernel[grid](*args, **consts, num_warps=4, maxnreg=tcs_regs(block_m, nwg)[0], DIAG=diag, **pipe,
                      ACC_SCALE=int(kind in ACC_KINDS), EARLY_RELEASE=int(kind in EARLY_KINDS), SZ_MODE=sz_mode,
                      DEFER=int(defer), **launch_kw(tensor_core=True))  # fmt: skip
    return args[6] if defer else None


__all__ = ["ACC_KINDS", "BLOCK_MS", "DEFER_KINDS", "EARLY_KINDS", "KINDS", "PIPE_KINDS", "SZ_MODES", "fits",
           "launch_tcs", "plan_grid", "smem_bytes", "sz_descriptors", "sz_tma_supported", "tcs_args", "tcs_layouts",
           "tcs_reference", "tcs_regs", "tcs_supported"]  # fmt: skip
