"""Kernel configurations for quant_matmul and a once-per-shape tuner (CUDA only; first candidate elsewhere).

SPLIT_K is a run-time argument of every kernel, so trying several split factors costs no extra compile.
Candidates are timed inside a CUDA graph (an L2-evicting memset before every call, its own time
subtracted), so the CPU's launch cost, which exceeds these kernels' run time, does not pick the winner.
`TUNE_LOG` keeps every candidate's time of every tuned shape, so a benchmark can report the comparison.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import triton

from inlaid_worker.env_switch import EnvSwitchError, env_switch

from .device_caps import hopper_device
from .gptq_packing import GPTQWeight
from .quant_common import m_bucket, split_iters  # m_bucket lives with the workspaces it sizes
from .side_stream import side_stream


@dataclass(frozen=True)
class QMMConfig:
    block_m: int
    block_n: int
    block_k: int
    split_k: int
    num_warps: int
    num_stages: int
    use_dot: bool = True  # kind "tile" only: False = CUDA-core FMAs on the reshaped tile
    kind: str = "tile"  # "gemv" | "hgemv" | "hgemvp" | "hgemvb" | "hgemvr[q|b][f]" | "mma" | "dequant" | "tile" (see quant_matmul's docstring)


def _block_k(k: int, group: int, want: int) -> int:
    for bk in (want, 128, 64, 32):
        if bk <= want and k % bk == 0 and group % bk == 0:
            return bk
    raise ValueError(f"K={k} and group={group} admit no K tile (need a common multiple-of-32 divisor)")


def _gemv(k: int, group: int, splits: tuple[int, ...]) -> list[QMMConfig]:
    bk = _block_k(k, group, 128)
    shapes = ((128, 4), (256, 8), (64, 2))  # (block_n, warps): 16 x 128 words per warp set, no spills
    return [QMMConfig(1, bn, bk, s, w, 1, False, "gemv") for bn, w in shapes for s in splits]


HGEMV_SHAPES = ((128, 128, 4), (256, 128, 8), (64, 128, 2), (128, 64, 4))  # (block_n, block_k, warps): no spills
# (K tiles per program, stages): 1 stage = register double buffer (1 tile per program: no buffer at all);
# 3-4 stages = Triton's cp.async pipeline, worth it only with several tiles per program
HGEMV_PLANS = ((1, 1), (2, 1), (3, 1), (4, 1), (6, 1), (8, 1), (4, 3), (6, 3), (8, 3), (16, 3), (8, 4), (16, 4))


def _hgemv(mb: int, k: int, group: int) -> list[QMMConfig]:
    """Half2 GEMV (quant_hgemv), one program per block_m rows; block_m 8 also serves M = 9..16 (two row blocks)."""
    bm = min(mb, 8)
    out = []
    for bn, want_k, warps in HGEMV_SHAPES if bm <= 4 else ((128, 64, 4), (64, 64, 2)):
        bk = _block_k(k, group, want_k)
        out += [QMMConfig(bm, bn, bk, triton.cdiv(k // bk, it), warps, st, False, "hgemv") for it, st in HGEMV_PLANS]
    return out


# v5 look-ahead half2 GEMV (kind "hgemvp": num_stages is the look-ahead depth in K tiles, 1 or 2).
# (block_n, block_k, warps, deepest look-ahead): no spills in the sm_90 build (bench/kernels/sass_hgemv.py);
# M = 4 with 128-row tiles spills at look-ahead 2 (144-byte stack), so it stops at 1
HGEMVP_SHAPES = {1: ((256, 128, 8, 2), (128, 128, 4, 2), (64, 128, 2, 2), (128, 64, 4, 2)),
                 4: ((64, 64, 2, 2), (128, 64, 4, 2), (64, 128, 2, 1))}  # fmt: skip
HGEMVP_PLANS = ((2, 1), (4, 1), (6, 1), (8, 1), (4, 2), (8, 2), (16, 2))  # (K tiles per program, look-ahead)


def _hgemvp(mb: int, k: int, group: int) -> list[QMMConfig]:
    """Look-ahead half2 GEMV candidates for M <= 4 (block_m = the batch bucket)."""
    out = []
    for bn, want_k, warps, deepest in HGEMVP_SHAPES[1 if mb <= 2 else 4]:
        bk = _block_k(k, group, want_k)
        out += [QMMConfig(mb, bn, bk, triton.cdiv(k // bk, it), warps, ahead, False, "hgemvp")
                for it, ahead in HGEMVP_PLANS if ahead <= deepest]  # fmt: skip
    return out


# v7 row-accumulating half2 GEMV (quant_hgemvr, M <= 4): kinds "hgemvr" (look-ahead loop), "hgemvrq" (the same, the
# next tile's loads pinned before the arithmetic by a value-returning barrier), "hgemvrb" (burst); block_n 64, 2 warps,
# block_k 128; (kind, K tiles per program): the plans that won a row on the H200 (kernels-2026-11-30-v7.md), and
# (session 8) shorter programs (2-3 tiles: picked for 4096x4096 and 4096x11008 at M = 1-2) and burst 2 / 4. The
# finish-epilogue kinds ("hgemvrf", "hgemvrqf", "hgemvrbf": red-only partials + quant_common.finish_rows) are NOT
# candidates: on the H200 they were slower than their store_tile twins in 70 of 100 same-plan pairs under PDL
# (median +0.49 us, up to +5.3 at M = 2) and 65 of 100 launched plainly (median +0.38 us) (kernels-2026-11-30-s8-gemv.md;
# bench/kernels/s8_gemv.py times them).
HGEMVR_PLANS = {1: (("hgemvr", 2), ("hgemvr", 3), ("hgemvr", 4), ("hgemvr", 6), ("hgemvr", 8), ("hgemvrq", 6),
                    ("hgemvrb", 2), ("hgemvrb", 3), ("hgemvrb", 4)),
                4: (("hgemvr", 4), ("hgemvr", 6), ("hgemvr", 8), ("hgemvrb", 3))}  # fmt: skip


def _hgemvr(mb: int, k: int, group: int) -> list[QMMConfig]:
    """Row-accumulating half2 GEMV candidates for M <= 4 (block_m = the batch bucket); K tiles of 128 in one group."""
    if k % 128 or group % 128:
        return []
    return [QMMConfig(mb, 64, 128, triton.cdiv(k // 128, it), 2, 1, False, kind)
            for kind, it in HGEMVR_PLANS[1 if mb <= 2 else 4]]  # fmt: skip


# v6 burst half2 GEMV (kind "hgemvb"): small tiles, many programs, each loading all its 2-4 K tiles at once
# (the fastest read pattern of the v6 sweep). NOT among candidate_configs: on the H200 it lost to hgemvp at every
# M = 1..4 on both 7B MLP shapes (bench/kernels/NOTES.md v6); bench/kernels/gemv_h200.py times these directly.
# (block_n, block_k, warps), K tiles per program
HGEMVB_SHAPES = ((64, 128, 2), (128, 128, 4))
HGEMVB_TILES = {1: (2, 3, 4), 4: (2, 3)}


def _hgemvb(mb: int, k: int, group: int) -> list[QMMConfig]:
    """Burst half2 GEMV configs for M <= 4 (block_m = the batch bucket); benches only (see above)."""
    out = []
    for bn, want_k, warps in HGEMVB_SHAPES:
        bk = _block_k(k, group, want_k)
        out += [QMMConfig(mb, bn, bk, triton.cdiv(k // bk, it), warps, 1, False, "hgemvb")
                for it in HGEMVB_TILES[1 if mb <= 2 else 4] if k // bk > it]  # fmt: skip
    return out


# 3-bit half2 GEMV (quant_hgemv3, kind "hgemv3", M <= 4): (block_n, block_k, warps) and (K tiles per program,
# words' look-ahead in tiles = num_stages); offline sm_90 build (bench/kernels/sass_hgemv3.py): no spills except a
# 16-byte stack at M = 4 with (64, 128, 2), which was still the fastest at M = 4 on the H200 (kernels-2026-11-30-int3.md)
HGEMV3_SHAPES = ((128, 128, 4), (64, 128, 2), (256, 128, 8), (128, 64, 4), (64, 64, 2))
HGEMV3_PLANS = ((1, 1), (2, 1), (4, 1), (8, 1), (4, 2), (8, 2))


def _hgemv3(mb: int, k: int, group: int) -> list[QMMConfig]:
    """3-bit half2 GEMV candidates for M <= 4 (block_m = the batch bucket)."""
    out = []
    for bn, want_k, warps in HGEMV3_SHAPES:
        bk = _block_k(k, group, want_k)
        out += [QMMConfig(mb, bn, bk, triton.cdiv(k // bk, it), warps, ahead, False, "hgemv3") for it, ahead in HGEMV3_PLANS]
    return out


def _tc(mb: int, k: int, group: int) -> list[QMMConfig]:
    """Tensor-core kernel (quant_tc / quant_tcg) for M >= 3 (8-row tiles at least; rows past M masked). Kinds: "tc" scales each K tile's product in fp32,
    "tcf" puts (q - z) * s in the operand (one accumulator); a trailing "2" builds the operand in two K=64 halves
    (half the registers). num_stages: 1-2 = words prefetched that many tiles ahead in registers, >= 3 = a
    cp.async ring of that many tiles in shared memory."""
    if k % 128 or group % 128:
        return []
    bm = max(8, min(mb, 64))
    plans = ((64, 1, "tc", (2, 4, 8)), (64, 4, "tc2", (2, 4, 8)), (64, 6, "tc2", (2, 4, 8)), (128, 4, "tc", (2, 4)),
             (128, 4, "tc2", (2, 4)))  # (block_n, stages, kind, splits)  # fmt: skip
    if mb >= 32:
        plans = ((64, 1, "tc", (2, 4)), (64, 4, "tc2", (2, 4)), (64, 6, "tc2", (2, 4)))
    if mb >= 128:  # 64-row x tiles: larger ones spill in the sm_90 build
        return [QMMConfig(64, 64, 128, s, 4, 4, True, kind) for kind, s in (("tc2", 2), ("tc2", 4), ("tcf2", 1))]
    return [QMMConfig(bm, bn, 128, s, 4, st, True, kind) for bn, st, kind, splits in plans for s in splits]


# quant_tcv (kinds "tcv" / "tcv2", 4-bit, M = 2..8; session 11): (block_n, num_stages, kind) x splits, num_stages =
# 1-3 word tiles in registers or 4-8 slots of a per-thread cp.async ring; 4 warps. Trimmed to the plans and splits that
# won a (shape, M) point on the H200 (kernels-2026-11-30-s11-gemv.md: 7B down M = 2-4 under PDL, o M = 4 iso); it lost
# every M = 16 point by 10-30%, so M = 16 is not offered. A split is offered only where the program's staged x, scales
# and zeros fit quant_tcv.X_SMEM_MAX and N is a multiple of block_n.
TCV_PLANS = ((128, 4, "tcv"), (128, 2, "tcv"), (64, 2, "tcv"))
TCV_SPLITS = (4, 16)
TCV_X_SMEM_MAX = 64 * 1024  # = quant_tcv.X_SMEM_MAX (that module imports Gluon's Hopper support: not here)


def _tcv(mb: int, n: int, k: int, group: int) -> list[QMMConfig]:
    """Small-M tensor-core GEMV (quant_tcv): 8-row x tiles at M = 2..8."""
    if not 2 <= mb <= 8 or k % 128 or group % 128:
        return []
    bm = 8
    out = []
    for bn, depth, kind in TCV_PLANS:
        for s in TCV_SPLITS:
            iters = triton.cdiv(k // 128, max(1, min(s, k // 128)))  # = quant_common.split_iters
            run = depth if depth <= 3 else 1
            staged = triton.cdiv(iters, run) * run * (bm * 256 + bn * 6) + (depth * bn * 64 if depth > 3 else 0)
            if n % bn == 0 and staged <= TCV_X_SMEM_MAX:
                out.append(QMMConfig(bm, bn, 128, s, 4, depth, True, kind))
    return out


# quant_tcl's kinds, indexed by its PIPE constant (0 / 1 / 2): quant_tc and quant_matmul launch with TCL_KINDS.index;
# quant_matmul re-exports it (llama_fast and bench scripts import it from there).
TCL_KINDS = ("tcl", "tclp", "tcls")

# quant_tcl (kinds "tcl" / "tcls", M >= 64): (block_m, block_n, stages, kind, splits) per M bucket; block_n / 16 warps
# (one warpgroup per 64 weight columns); no spills in the K loop of the offline sm_90 build (bench/kernels/sass_tcl.py);
# block_n 64 with 2-3 stages lets 2-3 programs share an SM. "tclp" lost everywhere, "tcls" nearly everywhere, and
# so did block_n 128 with block_m 128-256 at M >= 128 (kernels-2026-11-30-tcl-run1.md, -run2.md).
TCL_PLANS = {
    64: ((64, 128, 4, "tcl", (2,)), (64, 64, 4, "tcl", (1, 2, 4)), (64, 128, 4, "tcls", (1, 4))),
    128: ((128, 64, 2, "tcl", (1, 2, 4)), (128, 64, 3, "tcl", (1, 2)), (128, 128, 4, "tcls", (4,))),
    256: ((128, 64, 2, "tcl", (1, 2, 3)), (128, 64, 3, "tcl", (1, 2)), (128, 128, 4, "tcls", (2,))),
    512: ((128, 64, 2, "tcl", (1, 2)), (128, 64, 3, "tcl", (1,)), (256, 128, 3, "tcl", (1,))),
}


def _tcl(mb: int, k: int, group: int) -> list[QMMConfig]:
    """Large-M tile kernel (quant_tcl): the weight dequantized once per program for up to 256 rows of x."""
    if k % 128 or group % 128 or mb < 64:
        return []
    plans = TCL_PLANS[mb]
    return [QMMConfig(bm, bn, 128, s, bn // 16, st, True, kind) for bm, bn, st, kind, splits in plans for s in splits]


# quant_tcw (kinds "tcw" = ping-pong consumers, "tcwn" = without; M >= 256, 4-bit): block_n 128 (two consumer
# warpgroups) x block_m rows, one CTA per SM; num_warps 4 = the default partition. Winners of
# kernels-2026-11-30-s10-tcw.md: ping-pong pays at block_m 256, costs 1.5-3% at 128; split-K only where the grid is
# a small fraction of the SMs (7B down, M = 256: 32 column tiles).
TCW_PLANS = {
    256: (("tcw", 256, 3, (1,)), ("tcwn", 128, 4, (1,)), ("tcw", 128, 4, (2,))),
    512: (("tcwn", 128, 4, (1,)), ("tcw", 256, 3, (1,))),
}


def _tcw(mb: int, n: int, k: int, group: int) -> list[QMMConfig]:
    """Warp-specialized large-M kernel (quant_tcw): TMA needs 16-byte word rows (N % 4 == 0)."""
    if k % 128 or group % 128 or n % 4 or mb not in TCW_PLANS:
        return []
    return [QMMConfig(bm, 128, 128, s, 4, st, True, kind) for kind, bm, st, splits in TCW_PLANS[mb] for s in splits]


# quant_tcs (sessions 12-14, 16; kinds "tcs2a" and "tcsat" offered at M = 2 / 4 / 8 / 16 / 32 / 64, speed-ups in
# quant_tcs's docstring; "tcs" / "tcss" / "tcs2" / "tcsa" / "tcs2ao" / "tcs2at" and the bench script's "tcs0" are
# bench kinds; 4-bit): the small-M GEMV with a TMA producer warp and a deep word ring. Per M bucket: (block_n = 64 x
# consumer warpgroups, ring stages, kind, splits); block_m 8 up to M = 8, the bucket above (16 / 32 / 64). A split is
# offered only where the ring and the staged x, scales and zeros fit quant_tcs.SMEM_MAX.
# The plans that won a (shape, M) point of kernels-2026-11-30-s12-tcs.md: two consumer warpgroups (128 columns), a
# 4-stage ring, one wave of programs on the H200 (7B up split 3, down split 8 / 4); deeper rings (6-8), one warpgroup
# and M = 1 (0.76-0.80x the hgemvr GEMV) lost.
# Session 14 (kernels-2026-12-01-s14-tcs-summary.md): "tcsat" (tcsa's loop, scale / zero rows by the producer's TMA:
# g128 and N % 32 == 0 only) ~1-4% faster than tcs2a iso at the 7B points, -3..+4% under PDL; rings of 6 / 8 stages
# 5-15% slower than 4 (26-34% at block_m 16).
_TCS_PLAN = ((128, 4, "tcs2a", (2, 3, 4, 8)),  # split 2: 13B qkv M = 2..8 (kernels-2026-11-30-s13-retune-summary.md)
             (128, 4, "tcsat", (2, 3, 4, 8)))
# Session 16 (issue 4: M = 17..64, where the table had quant_tcg "tc" / quant_tcl "tcl" picks at ~1.8x / ~3.2x the
# M = 16 time on the same weight bytes): the same two kinds with block_m = the bucket (the wgmma's N = 32 / 64 tokens;
# x of the program's K range staged in shared memory: 8 KiB / 16 KiB a K tile, so block_m 64 needs splits of <= 9
# tiles, one program an SM, quant_tcs.tcs_regs). On the H200 the best of them beat the old picks by 1.00-1.17x iso /
# 1.09-1.44x PDL at M = 32 and at M = 64 on o / up (lost 0.63-0.89x to tcl on qkv / gate-up / 7B down); nine picks
# shipped (bench/results/kernels-2026-12-01-s16-mid.md)
_TCS_PLAN_32 = ((128, 4, "tcs2a", (2, 3, 4, 6, 8, 11)), (128, 4, "tcsat", (2, 3, 4, 6, 8, 11)))
_TCS_PLAN_64 = ((128, 4, "tcs2a", (4, 6, 8, 11, 16)), (128, 4, "tcsat", (4, 6, 8, 11, 16)))
TCS_PLANS: dict[int, tuple] = {2: _TCS_PLAN, 4: _TCS_PLAN, 8: _TCS_PLAN, 16: _TCS_PLAN, 32: _TCS_PLAN_32,
                               64: _TCS_PLAN_64}  # fmt: skip
TCS_SMEM_MAX = 200 * 1024  # = quant_tcs.SMEM_MAX (that module imports Gluon's Hopper support: not here)
# quant_tcs's kinds that quant_matmul dispatches (= quant_tcs.KINDS less the bench-only EARLY_KINDS, asserted there)
# and those with ACC_SCALE (the exact (q - z) operand; quant_tc "tc" under the interpreter) (= quant_tcs.ACC_KINDS)
TCS_KINDS = ("tcs", "tcss", "tcs2", "tcsa", "tcs2a", "tcs2ao", "tcs2at", "tcsat")
TCS_ACC_KINDS = ("tcsa", "tcs2a", "tcs2ao", "tcs2at", "tcsat")


TCS_SZ_TMA_KINDS = ("tcs2at", "tcsat")  # = the kinds of quant_tcs.SZ_MODES with SZ_MODE 2 (scale / zero rows by TMA)


def tcs_smem_bytes(iters: int, stages: int, block_m: int, nwg: int, sz_tma: bool = False) -> int:
    """Shared memory of one quant_tcs program: the word ring, the staged x (16-bit), scales (16-bit) and zeros (int32);
    sz_tma (SZ_MODE 2): the TMA boxes of scales (16-bit) and zero words (one word per 8 columns) and their barrier."""
    p2 = triton.next_power_of_2(iters)
    sz = p2 * 64 * nwg * 2 + max(p2, 4) * 8 * nwg * 4 + 8 if sz_tma else 0
    return stages * 16 * 64 * nwg * 4 + iters * block_m * 128 * 2 + p2 * 64 * nwg * 6 + 1024 + sz


def tcs_fits(k: int, block_m: int, split_k: int, stages: int, nwg: int, sz_tma: bool = False) -> bool:
    iters, _ = split_iters(k // 128, split_k)
    return tcs_smem_bytes(iters, stages, block_m, nwg, sz_tma) <= TCS_SMEM_MAX


def _tcs(mb: int, n: int, k: int, group: int) -> list[QMMConfig]:
    """Small-M TMA-ring GEMV (quant_tcs): TMA needs 16-byte word rows (N % 4 == 0)."""
    if k % 128 or group % 128 or n % 4 or mb not in TCS_PLANS:
        return []
    bm = 8 if mb <= 8 else mb  # 16 / 32 / 64: the bucket (quant_tcs.BLOCK_MS)
    tma_sz = group == 128 and n % 32 == 0  # SZ_MODE 2 (quant_tcs.sz_tma_supported's shape part)
    return [QMMConfig(bm, bn, 128, s, 4, st, True, kind) for bn, st, kind, splits in TCS_PLANS[mb] for s in splits
            if tcs_fits(k, bm, s, st, bn // 64, kind in TCS_SZ_TMA_KINDS)
            and (tma_sz or kind not in TCS_SZ_TMA_KINDS)]


# quant_tcsx (kinds "tcsx" / "tcsx2", session 17; = quant_tcsx.KINDS, asserted there): quant_tcs's ACC_SCALE K loop
# with x streamed through the TMA word ring a K tile at a time from an operand-ordered copy of x (quant_tcl.permute_x,
# a pre-pass launched inside each call), so shared memory is only the ring and splits of 1-2 fit at every K. On the
# H200 (bench/results/kernels-2026-12-01-s17-tcsx-run2.md, pre-pass included) 16 picks ship at M = 32 / 64 / 128
# (qkv, gate/up, up, down: 1.05-1.94x iso / 1.05-1.95x under PDL against tcl / tcsat / tcs2a / tc / dequant); it lost
# on the o shapes, at 7B gate/up and 13B down at M = 128 (tcl) and at M = 16 (run 1, kernels-2026-12-01-s17-tcsx.md),
# so it is offered at buckets 32 / 64 / 128 (and 256, below). Decode step, old table against new: 7B batch 32 / 64 / 128
# 0.972x / 0.961x / 0.991x, 13B 0.904x / 0.934x / 0.980x (decode-2026-12-01-s17-tcsx.md). Bucket 256 (helper H7,
# kernels-2026-12-01-s17-tcsx-m256.md: block_m 128 = two row blocks, the splits counted over both): 4 picks ship, 7B
# gate/up and 13B gate/up / qkv / o (1.04-1.11x iso / 1.04-1.11x PDL against tcl); decode step at batch 256 (256
# cached tokens) 7B 0.983x, 13B 0.955x (decode-2026-12-01-s17-tcsx-m256-7b / -13b.json); 7B qkv / up / o / down and
# 13B down keep tcl / tcw / dequant (tcsx 0.82-0.99x). Bucket 512 (every M > 256, prefill too) was measured bench-only
# and is not offered. Plans per bucket: (block_m, block_n = 64 x consumer warpgroups, ring stages, kinds); offline
# sm_90 builds without spills (quant_tcsx's docstring); block_m 32 at M = 64 = two row blocks; the splits by
# tcsx_splits (run 1's rule; at bucket 256 over both row blocks, tcsx_row_blocks).
TCSX_SPLIT_KINDS = ("tcsx", "tcsx2")  # the split-K grid's kinds
TCSXK_KINDS = ("tcsxk", "tcsxks")  # session 19's stream-K grid (quant_tcsxk)
TCSX_KINDS = (*TCSX_SPLIT_KINDS, *TCSXK_KINDS)  # every kind quant_tcsx launches (= quant_tcsx.KINDS)
TCSX_PLANS: dict[int, tuple] = {
    32: ((32, 128, 4, TCSX_SPLIT_KINDS),),
    64: ((64, 128, 4, TCSX_SPLIT_KINDS), (64, 64, 4, TCSX_SPLIT_KINDS), (64, 128, 8, ("tcsx2",)), (32, 128, 4, ("tcsx2",))),
    128: ((128, 128, 4, TCSX_SPLIT_KINDS), (128, 128, 5, ("tcsx2",))),
    256: ((128, 128, 4, TCSX_SPLIT_KINDS), (128, 128, 5, ("tcsx2",))),  # two row blocks of 128 (helper H7, M = 256)
}
# "tcsxk" / "tcsxks" (session 19, quant_tcsxk; shared tiles by read-and-clear atomics / fp32 slots): one persistent
# program an SM (split_k = programs an SM) over the stream-K units, block_m 128 x block_n 128 (one program an SM by
# registers), 4 stages (5: 1-3% slower at every point, s19-bigm run 1), at bucket 256 only. On the H200
# (kernels-2026-12-01-s19-bigm.md) 0.69-0.96x the shipped picks at 12 of 14 points (every M = 128 point lost, 0.82-0.92x:
# bucket 128 is not offered); two picks ship: 13B down and 13B gate/up at M = 256 (1.13x / 1.07x iso and under PDL
# against tcl / tcsx)
TCSXK_PLANS: dict[int, tuple] = {256: ((128, 128, 4),)}
TCSX_SPLITS = (1, 2, 4, 8, 16)


def tcsx_row_blocks(mb: int, block_m: int) -> int:
    """Row blocks tcsx_splits counts at bucket mb: one at buckets <= 128 (run 1's rule, kept: block_m 32 at M = 64
    counts one), all of them above (bucket 256: two of 128 rows, so the splits fill the grid as a whole)."""
    return 1 if mb <= 128 else triton.cdiv(mb, block_m)


def tcsx_splits(k: int, n: int, block_n: int, row_blocks: int = 1) -> list[int]:
    """Up to three splits (of TCSX_SPLITS) whose grid of `row_blocks` row blocks holds 66..700 programs (half a wave of
    the H200's 132 SMs up to ~5 waves); split 1 where none does."""
    tiles = triton.cdiv(n, block_n) * row_blocks
    out = [s for s in TCSX_SPLITS if s <= k // 128 and 66 <= tiles * split_iters(k // 128, s)[1] <= 700]
    return out[:3] or [1]


def _tcsx(mb: int, n: int, k: int, group: int) -> list[QMMConfig]:
    """quant_tcsx candidates (TMA: N % 4 == 0; K and group multiples of 128) at the buckets of TCSX_PLANS."""
    if k % 128 or group % 128 or n % 4 or mb not in TCSX_PLANS:
        return []
    out = [QMMConfig(bm, bn, 128, s, 4, st, True, kind) for bm, bn, st, kinds in TCSX_PLANS[mb] for kind in kinds
           for s in tcsx_splits(k, n, bn, tcsx_row_blocks(mb, bm))]  # fmt: skip
    return out + [QMMConfig(bm, bn, 128, 1, 4, st, True, kind) for bm, bn, st in TCSXK_PLANS.get(mb, ())
                  for kind in TCSXK_KINDS]  # fmt: skip


# 3-bit weights in the tensor-core kernels (quant_tc3; fp16 x, M >= 8): quant_tcg kinds "tc" / "tcf" (the 3-bit
# operand is built whole: no "2" kinds) for M = 8..256 and quant_tcl's plans for M >= 64. Offline sm_90 build
# (bench/kernels/sass_tc3.py, bench/results/kernels-2026-11-30-k4-tc3-sass.md): no spills in any of these (the
# 256x128 tcl tile spills 256 bytes outside its K loop, as its int4 twin does). Not yet timed on the H200.
TC3_PLANS = ((64, 1, "tc", (2, 4, 8)), (64, 4, "tc", (2, 4, 8)), (64, 6, "tc", (2, 4)), (128, 4, "tc", (2, 4)),
             (64, 1, "tcf", (2, 4)))  # (block_n, stages, kind, splits)  # fmt: skip
TC3_PLANS_32 = ((64, 1, "tc", (2, 4)), (64, 4, "tc", (2, 4)), (64, 4, "tcf", (1, 2, 4)))


def _tc3(mb: int, k: int, group: int) -> list[QMMConfig]:
    """3-bit tensor-core candidates for M >= 8 (fp16): quant_tcg tiles up to 64 rows, quant_tcl above
    (INLAID_QMM_TC3=0 withdraws them)."""
    if k % 128 or group % 128 or mb < 8 or env_switch("INLAID_QMM_TC3") is False:
        return []
    if mb >= 128:
        out = [QMMConfig(64, 64, 128, s, 4, 4, True, "tcf") for s in (1, 2, 4)]
    else:
        plans = TC3_PLANS_32 if mb >= 32 else TC3_PLANS
        out = [QMMConfig(max(8, mb), bn, 128, s, 4, st, True, kind) for bn, st, kind, splits in plans for s in splits]
    return out + _tcl(mb, k, group)


def _mma(bm: int, k: int, group: int, shapes: tuple, splits: tuple[int, ...]) -> list[QMMConfig]:
    if k % 128 or group % 128:  # each nibble's operand needs K >= 16 rows, i.e. 128-row tiles
        return []
    return [QMMConfig(bm, bn, 128, s, w, st, True, "mma") for bn, w, st in shapes for s in splits]


def _tile(m: int, n: int, k: int, group: int) -> list[QMMConfig]:
    """The v2 kernel's own candidates (tl.dot on reshaped tiles, or its CUDA-core path)."""
    mb = m_bucket(m)
    if mb <= 16:
        bk = _block_k(k, group, 128)
        out = [QMMConfig(16, bn, bk, s, 4, 4) for bn in (64, 128) for s in (8, 16)]
        if mb <= 4:
            out = [QMMConfig(mb, 64, _block_k(k, group, 64), s, 4, 3, False) for s in (8, 16)] + out
        return out
    if mb <= 64:
        return [QMMConfig(bm, bn, _block_k(k, group, 128), s, 4, 4) for bm in (min(mb, 64), 16) for bn in (64, 128)
                for s in (4, 2)]  # fmt: skip
    bk = _block_k(k, group, 64)
    return [QMMConfig(64, 128, bk, 1, 4, 4), QMMConfig(128, 128, bk, 1, 8, 3), QMMConfig(64, 64, bk, 2, 4, 4)]


DEQUANT = QMMConfig(0, 0, 0, 1, 0, 0, False, "dequant")


def hopper_only(kind: str) -> bool:
    """Kinds whose CUDA kernels need sm_90: every "tc*" kind (quant_tcg, quant_tcv, quant_tcl, quant_tcw, quant_tcs and
    the 3-bit quant_tc3 plans) is Gluon with Hopper's wgmma (tcw / tcs also TMA and mbarriers), which sm_80 / sm_89
    (A100, L40S, RTX 4090) lack and sm_100 / sm_120 no longer have. The others (gemv, hgemv*, mma, tile, dequant) are
    plain Triton or cuBLAS. Under the interpreter every "tc*" kind runs quant_tc's plain-Triton twin."""
    return kind.startswith("tc")


def candidate_configs(m: int, n: int, k: int, group: int, bits: int = 4,
                      dtype: torch.dtype = torch.float16, hopper: bool = True) -> list[QMMConfig]:  # fmt: skip
    """Ordered candidates (the first is the untuned default) for an [m, k] x [k, n] product. hopper=False (the tuner
    passes hopper_device of the input's device) leaves out the Hopper-only kinds, which would only fail to compile:
    the same list in the same order without them (the first candidate is never one)."""
    mb = m_bucket(m)
    extra = _hgemv(mb, k, group) if bits == 4 and dtype == torch.float16 and mb <= 16 else []
    extra += _hgemvp(mb, k, group) if bits == 4 and dtype == torch.float16 and mb <= 4 else []
    extra += _hgemvr(mb, k, group) if bits == 4 and dtype == torch.float16 and mb <= 4 else []
    extra += _tc(mb, k, group) if bits == 4 and mb >= 4 else []  # M = 3-4 in an 8-row tile (masked rows)
    extra += _hgemv3(mb, k, group) if bits == 3 and dtype == torch.float16 and mb <= 4 else []
    extra += _tcv(mb, n, k, group) if bits == 4 else []
    extra += _tcl(mb, k, group) if bits == 4 else []
    extra += _tcw(mb, n, k, group) if bits == 4 else []
    extra += _tcs(mb, n, k, group) if bits == 4 else []
    extra += _tcsx(mb, n, k, group) if bits == 4 else []
    extra += _tc3(mb, k, group) if bits == 3 and dtype == torch.float16 else []
    out = _base_candidates(m, n, k, group, bits) + extra
    return out if hopper else [c for c in out if not hopper_only(c.kind)]


def _base_candidates(m: int, n: int, k: int, group: int, bits: int) -> list[QMMConfig]:
    """The v3 kernels' candidates (gemv, mma, tile, dequant)."""
    mb = m_bucket(m)
    small = ((128, 4, 3), (64, 4, 4))  # (block_n, warps, stages) of the MMA kernel at M <= 32
    if mb <= 4:
        out = _gemv(k, group, (8, 4, 16))
        if bits == 4:
            out += _mma(16, k, group, small, (8, 16, 4))
        return out + (_tile(m, n, k, group)[:2] if bits == 3 else [])
    if mb <= 32:
        out = _mma(max(16, mb), k, group, small, (8, 4, 16, 2)) if bits == 4 else []
        if mb == 8:
            out += _gemv(k, group, (8, 4))[:4]
        return out + (_tile(m, n, k, group) if bits == 3 or not out else []) + [DEQUANT]
    if bits == 4 and k % 128 == 0 and group % 128 == 0:
        bm = 64 if mb == 64 else 128
        large = ((128, 4, 3), (64, 4, 3)) if bm == 64 else ((128, 8, 3), (64, 4, 3))  # no register spills
        return _mma(bm, k, group, large, (1, 2)) + [DEQUANT]
    return [DEQUANT] + _tile(m, n, k, group)


_FLUSH: dict[torch.device, tuple[torch.Tensor, float]] = {}


def _graph_ms(fn: Callable[[], object], flush: torch.Tensor | None, device: torch.device, reps: int = 10) -> float:
    """Median ms of `reps` x (flush; fn) replayed as one CUDA graph on `device`, per repetition."""
    with torch.cuda.device(device):
        side = side_stream(device)  # one per device: a new stream would keep a cuBLAS workspace (side_stream.py)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            fn()  # compiles and allocates outside the capture
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(reps):
                if flush is not None:
                    flush.zero_()
                fn()
        times = []
        for _ in range(5):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / reps)
    return sorted(times)[2]


def time_cold_ms(fn: Callable[[], object], device: torch.device) -> float:
    """Kernel time of fn with a cold L2 and no CPU launch cost (graph replay, memset time subtracted)."""
    if device not in _FLUSH:
        buf = torch.empty(2**25, dtype=torch.float32, device=device)  # 128 MB, > 2x the H200's L2
        _FLUSH[device] = (buf, _graph_ms(lambda: None, buf, device))
    buf, base = _FLUSH[device]
    return max(_graph_ms(fn, buf, device) - base, 1e-4)


_TUNED: dict[tuple, QMMConfig] = {}


def _key(x2: torch.Tensor, w: GPTQWeight) -> tuple:
    """Tuning key; the last field marks a K-major qweight (gptq_packing.to_k_major)."""
    m, k = x2.shape
    return (x2.device, x2.dtype, m_bucket(m), w.out_features, k, w.bits, w.group_size, w.sym, w.perm is not None,
            w.qweight.stride(0) == 1 and w.qweight.shape[1] > 1)  # fmt: skip
TUNE_LOG: dict[str, list[tuple[str, float]]] = {}  # shape key -> [(config, us)] of the tuning run


def agrees(out: torch.Tensor, ref: torch.Tensor, tol: float = 1e-2) -> bool:
    """Relative Frobenius error of a candidate's output against the dequantize + cuBLAS reference."""
    err = (out.float() - ref.float()).norm() / ref.float().norm().clamp_min(1e-12)
    return bool(torch.isfinite(err)) and float(err) <= tol


def pick_config(
    x2: torch.Tensor,
    w: GPTQWeight,
    run: Callable[[QMMConfig], None],
    verify: Callable[[QMMConfig], bool] | None = None,
) -> QMMConfig:
    """Best candidate for this shape, timed once on CUDA (cold L2) and cached; the default elsewhere.

    With `verify`, a candidate whose output disagrees with the reference is never picked (a guard
    against a compiled kernel that is wrong on one shape only, as seen for int4 M=4 on the H200)."""
    m, k = x2.shape
    key = _key(x2, w) if x2.is_cuda else None
    best = _TUNED.get(key) if key is not None else None
    if best is not None:  # the hot path: one dict lookup per call once a shape is tuned
        LAST_PICK[0] = best
        return best
    cands = candidate_configs(m, w.out_features, k, w.group_size, w.bits, x2.dtype, hopper=hopper_device(x2.device))
    if key is None or len(cands) == 1 or m * w.out_features * k < 2**22:  # tiny: tuning costs more
        return cands[0]
    if torch.cuda.is_current_stream_capturing():  # an untuned shape met inside someone's graph capture
        return cands[0]
    shipped = _shipped(x2, w, key[2], cands, verify)
    if shipped is not None:
        _TUNED[key] = shipped
        LAST_PICK[0] = shipped
        return shipped
    times = []
    for c in cands:
        try:
            t = time_cold_ms(lambda c=c: run(c), x2.device)
            if verify is not None and not verify(c):
                TUNE_LOG.setdefault(str(key[2:]), []).append((str(c), -2.0))
                print(f"quant_matmul: rejected {c}: output disagrees with the dequantized reference"[:300])
                continue
            times.append((t, c))
        except EnvSwitchError:  # a mistyped switch read by a kernel module (at import): an error, not a skip
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. shared memory, or a kernel that refuses this weight
            TUNE_LOG.setdefault(str(key[2:]), []).append((str(c), -1.0))
            print(f"quant_matmul: skipped {c}: {exc!r}"[:300])
            continue
    best = min(times, key=lambda t: t[0])[1] if times else DEQUANT
    TUNE_LOG[str(key[2:])] = TUNE_LOG.get(str(key[2:]), []) + [(str(c), t * 1e3) for t, c in times]
    _TUNED[key] = best
    LAST_PICK[0] = best
    return best


def _shipped(x2: torch.Tensor, w: GPTQWeight, mb: int, cands: list[QMMConfig],
             verify: Callable[[QMMConfig], bool] | None) -> QMMConfig | None:  # fmt: skip
    """A pick shipped for this device (qmm_tuned), if still a candidate and accepted by the guard."""
    from .qmm_tuned import shipped_pick  # late: qmm_tuned imports QMMConfig from here

    c = shipped_pick(x2.device, x2.dtype, mb, w.out_features, x2.shape[1], w.bits, w.group_size)
    if c is None or c not in cands:
        return None
    try:
        if verify is not None and not verify(c):
            print(f"quant_matmul: shipped pick {c} disagrees with the dequantized reference; tuning instead"[:300])
            return None
    except EnvSwitchError:
        raise
    except Exception as exc:  # noqa: BLE001 - a shipped pick that no longer compiles here: tune instead
        print(f"quant_matmul: shipped pick {c} failed: {exc!r}; tuning instead"[:300])
        return None
    return c


LAST_PICK: list[QMMConfig | None] = [None]  # what the last tuned call chose (benchmark reporting)
