"""quant_tcs with x streamed through the word ring: kinds "tcsx" / "tcsx2" (issue 4, session 17; session 19's stream-K
grid "tcsxk" / "tcsxks" is quant_tcsxk's, launched through launch_tcsx / launch_tcsxk), offered by the tuner
at M buckets 32 / 64 / 128 / 256 (quant_matmul_config.TCSX_PLANS; 256: kernels-2026-12-01-s17-tcsx-m256.md) and
dispatched by quant_matmul (pre-pass + kernel in one call; quant_tc "tc" under the interpreter).

Measured on the H200 (bench/results/kernels-2026-12-01-s17-tcsx-run2.md: `bash bench/kernels/s17_h1.sh`; 278 candidates
and the 27 shipped picks checked, PDL off and on, 4 stress launches each: 0 failures, worst 2.1e-4 against
tcs_reference(acc_scale=True); pre-pass included in every time, 1.5-5.9 us of it; us iso / PDL, CUDA graph over
weights > 3x L2). 16 picks ship at M = 32-128 (best tcsx >= 1.03x the old pick iso AND under PDL; 4 more at M = 256,
kernels-2026-12-01-s17-tcsx-m256.md: 7B gate/up, 13B gate/up / qkv / o, 1.04-1.11x against tcl):
  shape            M    old pick (iso / pdl)       tcsx pick                    iso / pdl       speed-up iso / pdl
  7B gate/up       32   tcsat  36.29 / 34.31        tcsx2 m32 n128 s1 st4        31.72 / 31.86   1.144 / 1.077
  7B gate/up       64   tcl    50.36 / 50.53        tcsx  m64 n64  s1 st4        47.85 / 47.61   1.053 / 1.061
  7B qkv           64   tcl    31.42 / 31.54        tcsx  m64 n64  s1 st4        26.04 / 26.20   1.207 / 1.204
  7B qkv           128  tcl    34.66 / 34.37        tcsx  m128 n128 s1 st4       32.19 / 32.52   1.077 / 1.057
  7B up            64   tcs2a  36.88 / 35.09        tcsx  m64 n64  s1 st4        25.44 / 25.54   1.450 / 1.374
  7B up            128  dequant 61.61 / 61.94       tcsx  m128 n128 s1 st4       31.69 / 31.80   1.944 / 1.948
  7B down          64   tcl    27.63 / 27.48        tcsx2 m64 n128 s4 st4        24.26 / 24.27   1.139 / 1.132
  7B down          128  tcl    34.82 / 34.92        tcsx2 m128 n128 s4 st5       33.03 / 33.32   1.054 / 1.048
  13B gate/up      32   tcsat  51.94 / 51.36        tcsx2 m32 n128 s1 st4        40.06 / 40.14   1.296 / 1.280
  13B gate/up      64   tcl    67.91 / 67.49        tcsx  m64 n64  s1 st4        60.55 / 60.30   1.122 / 1.119
  13B gate/up      128  tcl    84.02 / 84.50        tcsx  m128 n128 s1 st4       76.77 / 76.67   1.094 / 1.102
  13B qkv          32   tcsat  32.97 / 31.51        tcsx2 m32 n128 s2 st4        26.83 / 27.03   1.229 / 1.166
  13B qkv          64   tcl    38.97 / 39.03        tcsx  m64 n64  s1 st4        33.41 / 33.63   1.167 / 1.161
  13B qkv          128  tcl    44.92 / 44.83        tcsx  m128 n128 s1 st4       40.78 / 40.79   1.102 / 1.099
  13B down         32   tc     34.17 / 33.66        tcsx2 m32 n128 s8 st4        30.03 / 30.16   1.138 / 1.116
  13B down         64   tcl    53.87 / 54.30        tcsx2 m32 n128 s8 st4        43.76 / 43.82   1.231 / 1.239
Not shipped at M = 32-128 (tcsx slower or < 3% faster either way): every o shape (7B 0.74-0.97x under PDL, 13B 0.71-0.98x; quant_tcs's
split-K tcsat / tcs2a and tcl keep them), 7B qkv / up / down at M = 32 (1.01-1.13x iso but 0.998-1.003x under PDL),
7B gate/up and 13B down at M = 128 (0.81-0.82x / 0.87-0.90x against tcl), and M = 16 (run 1,
kernels-2026-12-01-s17-tcsx.md: 0.65-1.00x against tcs2a / tcsat / tc / tc2 where timed; block_m 16 is not offered).
The kernel alone (x permuted once outside the timed call, what a producer of x writing the operand order would give)
is another 1.03-1.09x iso / 1.06-1.18x under PDL at the shipped points. Decode step, old table against new,
alternating on one runner (decode-2026-12-01-s17-tcsx.md): 7B batch 32 / 64 / 128 0.972x / 0.961x / 0.991x, 13B
0.904x / 0.934x / 0.980x in device time, every round; batch 16 (no change) 0.999-1.001x.

Why (quant_tcs's docstring, sessions 16 / 16b): quant_tcs's consumers stage x of the program's WHOLE K range in shared
memory before the first K tile (8 / 16 KiB a tile at block_m 32 / 64). At M = 64 that forces split-K >= 4 (shared
memory), one program an SM, the staging does not overlap the K loop (7B gate/up M = 64: 69.5 us ~ ring + epilogue
39.7 + staging 16.2 + operand / MMA 15.7) and each extra split costs ~3.5 ns an output element.

What: quant_tcw's structure (a producer warp TMA-copies the x tile AND the word tile of each K tile into one ring slot
under one expect-tx `ready` barrier) with quant_tcs's consumer K loop (ACC_SCALE: the exact (q - z) operand,
quant_tcs._operand_qz, each tile's fp32 wgmma result times its group's scale rounded to x's 16-bit type):
- x is first written in the operand's K order by a tiny pre-pass (quant_tcl.permute_x: x[:, x_order(K, perm)], the
  act-order gather composed in; one Triton launch, x read once and written once): the operand order interleaves K
  (column p = 32 wi + 8 s + 2 t + e of a tile holds kk = 32 t + 8 wi + 4 e + s), which a plain TMA box of x cannot
  express. launch_tcsx takes `xp` (an already permuted x) to skip it: model.llama_fast's TCSX_XP (env INLAID_TCSX_XP,
  default on) has the add + RMSNorm before qkv / gate-up and silu_mul before down write the operand order themselves
  where the pick is tcsx (no act-order), removing the pre-pass's launch from the decode step (~1.5 us each: 7B batch
  32 / 64 / 128 0.992x / 0.981x / 0.992x, 13B 0.978x / 0.987x / 0.994x, bench/results/decode-2026-12-01-s17-xp.md).
- a producer warp (24 registers): per K tile, the words [16, 64 NWG] and the x tile [BLOCK_M, 128] (rows past M
  zero-filled by TMA; 128B-swizzled, quant_tcg's XS = quant_tcw's x layout) into slot it % STAGES, one
  mbarrier.expect of both boxes' bytes. Word copies of the first min(STAGES, tiles) slots go out before the PDL wait
  (weights), their x copies after it (x may be written by the previous kernel), then the steady ring.
- NWG consumer warpgroups (64 weight columns each, the same x slot): per tile wait `ready`, read the words, build the
  operand, wgmma 64 x BLOCK_M x 128 against the slot's x (PIPE 1, "tcsx2": two K = 64 halves, the second operand
  built under the first wgmma, as quant_tcs "tcs2a"), load the NEXT tile's scales / zeros from global memory under
  the wgmma (quant_tcw's prefetch: registers, no staging), wait, and only then give the slot back (`empty`, one
  arrival per warpgroup): the wgmma that read the slot's x and the operand built from its words has completed
  (session 13's race fix; PIPE 1 releases tile i - 1 at the top of tile i, after tile i - 1's wait). No x, scale or
  zero staging, no CTA barrier, no x barrier between the warpgroups.
- split-K: quant_tcw._tcw_store's read-and-clear atomics (counters per warpgroup tile), as quant_tcs "tcs2a" / "tcsat".
Shared memory: STAGES x (8 KiB words at NWG = 2 + BLOCK_M x 256 B x) whatever the split or K (tcsx_smem_bytes), so
splits of 1-2 fit at every shape. Offline sm_90 builds (s17_tcsx_sass.py, 7B up, 4 stages, two warpgroups, both kinds,
split 1 and 2; ptxas of Triton 3.6's wheel):
  block_m  launch regs (worker / default WG)  spills  shared bytes (estimate)  programs an SM  K-loop SASS a tile
  16       80 x 12 warps (104 / 112)          0       49,384 (50,176)          2 (registers)   176-192
  32       80 x 12 warps (104 / 112)          0       65,768 (66,560)          2 (registers)   182-198
  64       168 x 12 warps (232 / 248)         0       98,536 (99,328)          1 (registers)   197-215
  128      168 x 12 warps (232 / 248)         0       164,072 (164,864)        1 (registers)   231-250
(tcs2a's loop at block_m 16: 145; the extra ~30-45 are the next tile's scale / zero loads and their addresses).
block_m 64 at quant_tcs's 80 / 104 caps (which would let two programs share an SM: 97 KiB each) spills 152-204 bytes
(50-67 local loads / stores in the loop; the accumulator, each tile's product and the operand are ~130 registers a
thread); block_m 128 does not build at 80 (ptxas C7602: >= 94). Also building clean: block_m 64 with ONE warpgroup
(8 warps x 80, the consumer at 136; 82,100 bytes: two programs an SM), block_m 64 with 6 / 8 stages (147,736 /
196,904 bytes), block_m 128 with 5 stages (205,056), bf16 x, sym, PDL mode 2. Every consumer K loop releases its slot
only after a wgmma.wait_group (tests/kernels/tcs_ptx_order.py: 0 early releases; the same kernel with the arrival moved
above the wait has 1 a loop). The shipped kinds' sm_90 PTX is unchanged (this module imports quant_tcs, quant_tcw,
quant_tcl and quant_tcg and changes none of them).
4-bit weights, K and group multiples of 128, N % 4 == 0 (16-byte word rows, TMA), fp16 / bf16 x; CUDA sm_90 only
(launch_tcsx refuses elsewhere; quant_matmul runs quant_tc's "tc", the same ACC_SCALE numerics, under the interpreter).
"""

from __future__ import annotations

import os

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia import hopper
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma

from .gptq_packing import GPTQWeight
from .pdl import ggdc_late, ggdc_start, ggdc_wait_first, ggdc_wait_prefetched, launch_kw
from .quant_common import bucket_workspace
from .quant_matmul_config import TCSX_KINDS
from .quant_tcg import BLOCK_K, tcg_layouts
from .quant_tcl import tcl_permute
from .quant_tcs import (
    WG_N,
    WIDE_REGS,
    _operand_qz,
    plan_grid,
    tcs_layouts,
    tcs_supported,
    word_smem_layout,
    ws_partitions,
)
from .quant_tcw import _tcw_store

BK = gl.constexpr(BLOCK_K)
# kind -> PIPE (1: two K = 64 half wgmmas a tile, quant_tcs "tcs2a"'s loop); "tcsxk" (session 19): PIPE 0's loop on a
# persistent stream-K grid (quant_tcsxk; split_k = programs an SM)
KINDS = {"tcsx": 0, "tcsx2": 1, "tcsxk": 0, "tcsxks": 0}  # "tcsxks": shared tiles summed through fp32 slots
assert tuple(KINDS) == TCSX_KINDS  # what quant_matmul dispatches (quant_matmul_config keeps Gluon off the CPU)
BLOCK_MS = (16, 32, 64, 128)  # the wgmma's N (x rows a program)
SMEM_MAX = 232448  # the H200's (sm_90) largest dynamic shared memory of one block (227 KiB)
SMEM_SM = 233472  # shared memory of one SM (228 KiB); each resident block also reserves 1 KiB
# launch register caps (maxnreg, the worker consumer warpgroup's setmaxnreg) by block_m: quant_tcs's (12 warps x 80:
# two programs an SM by registers) up to 32; block_m 64 / 128 (accumulator + each tile's product are 64 / 128
# registers a thread) quant_tcs's WIDE_REGS (12 warps x 168: one program an SM)
REGS = {16: (80, 104), 32: (80, 104), 64: WIDE_REGS, 128: WIDE_REGS}
ONE_WG_REGS = (80, 136)  # NWG = 1: 8 warps x 80, the consumer warpgroup raised to 136 (quant_tcs LAUNCH_REGS[1])


def tcsx_smem_bytes(stages: int, block_m: int, nwg: int) -> int:
    """Shared memory of one program: STAGES x (word box [16, 64 NWG] int32 + x box [BLOCK_M, 128] 16-bit), the two
    barrier arrays and alignment slack (1 KiB; the offline builds check the estimate bounds the compiled figure)."""
    return stages * (16 * WG_N * nwg * 4 + block_m * BLOCK_K * 2) + 1024


def tcsx_regs(block_m: int, nwg: int) -> tuple[int, int]:
    return REGS[block_m] if nwg == 2 else ONE_WG_REGS


def programs_per_sm(stages: int, block_m: int, nwg: int, regs: tuple[int, int] | None = None) -> int:
    """Resident programs an SM by shared memory and registers (65536 a SM; 4 warps a consumer warpgroup, the
    producer warp padded to a warpgroup)."""
    launch = (regs or tcsx_regs(block_m, nwg))[0]
    by_smem = SMEM_SM // (tcsx_smem_bytes(stages, block_m, nwg) + 1024)
    by_regs = 65536 // (launch * 32 * 4 * (nwg + 1))
    return min(by_smem, by_regs, 32)


@gluon.jit
def _tile_params(sc_ptr, qz_ptr, g, cs, cz, stride_sg, stride_sn, stride_zg, stride_zn, SYM: gl.constexpr,
                 ZERO_OFFSET: gl.constexpr, IS_BF16: gl.constexpr, dt: gl.constexpr):  # fmt: skip
    """Group g's scales of columns cs (the accumulator's rows, fp32 after rounding to x's 16-bit type dt, as quant_tcs
    stages them) and packed (MAGIC + z) pairs of columns cz (the operand's rows), from global memory."""
    sv = gl.load(sc_ptr + g * stride_sg + cs * stride_sn).to(dt).to(gl.float32)
    if IS_BF16:
        magic = 0x4300
    else:
        magic = 0x6400
    if SYM:
        z = gl.full(cz.shape, 8, gl.int32, layout=cz.type.layout)
    else:
        zw = gl.load(qz_ptr + g * stride_zg + (cz // 8) * stride_zn)
        z = ((zw >> (4 * (cz % 8))) & 0xF) + ZERO_OFFSET
    zm = magic + z
    return sv, zm | (zm << 16)


@gluon.jit
def _tcsx_producer(x_desc, w_desc, x_smem, w_smem, ready, empty, t0, n_it, pid_n, pid_m, STAGES: gl.constexpr,
                   BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, USE_GDC: gl.constexpr):  # fmt: skip
    ggdc_wait_first(USE_GDC)  # PDL mode 3 (an ablation): nothing before the wait
    NB: gl.constexpr = x_desc.block_type.nbytes + w_desc.block_type.nbytes  # one slot: words + x
    n_pre = gl.minimum(n_it, STAGES)
    for it in range(n_pre):  # fresh slots: the first tiles' words before the PDL wait (weights)
        mbarrier.expect(ready.index(it), NB)
        tma.async_copy_global_to_shared(w_desc, [(t0 + it) * 16, pid_n * BLOCK_N], ready.index(it), w_smem.index(it))
    ggdc_wait_prefetched(USE_GDC)  # x may be written by the previous kernel
    for it in range(n_pre):
        tma.async_copy_global_to_shared(x_desc, [pid_m * BLOCK_M, (t0 + it) * BK], ready.index(it), x_smem.index(it))
    for it in range(n_pre, n_it):
        st = it % STAGES
        mbarrier.wait(empty.index(st), ((it // STAGES) & 1) ^ 1)  # every consumer warpgroup released tile it - STAGES
        bar = ready.index(st)
        mbarrier.expect(bar, NB)
        tma.async_copy_global_to_shared(w_desc, [(t0 + it) * 16, pid_n * BLOCK_N], bar, w_smem.index(st))
        tma.async_copy_global_to_shared(x_desc, [pid_m * BLOCK_M, (t0 + it) * BK], bar, x_smem.index(st))


@gluon.jit
def _tcsx_consumer(x_smem, w_smem, ready, empty, sc_ptr, qz_ptr, y_ptr, ws_ptr, cnt_ptr, M, N, K, t0, n_it, pid_n,
                   pid_m, pid_k, tiles, SPLIT_K, stride_sg, stride_sn, stride_zg, stride_zn, stride_ym, stride_yn,
                   WG: gl.constexpr, NWG: gl.constexpr, GROUP: gl.constexpr, SYM: gl.constexpr,
                   ZERO_OFFSET: gl.constexpr, USE_SPLIT: gl.constexpr, IS_BF16: gl.constexpr, STAGES: gl.constexpr,
                   BLOCK_M: gl.constexpr, USE_GDC: gl.constexpr, MMA: gl.constexpr, DOT: gl.constexpr,
                   L5: gl.constexpr, L4: gl.constexpr, D2: gl.constexpr, L5H: gl.constexpr,
                   PIPE: gl.constexpr):  # fmt: skip
    dt: gl.constexpr = x_smem.dtype
    SA: gl.constexpr = gl.SliceLayout(1, MMA)  # the accumulator's rows (weight columns): the scales
    ZL: gl.constexpr = gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(3, L4)))  # operand rows: the zeros
    col0 = pid_n * (NWG * 64) + WG * 64
    cs = gl.minimum(col0 + gl.arange(0, 64, layout=SA), N - 1)
    cz = gl.minimum(col0 + gl.arange(0, 64, layout=ZL), N - 1)
    t_last = K // BK - 1
    ggdc_wait_first(USE_GDC)
    # the first tile's scales / zeros (weights: before the PDL wait)
    sv, zm2 = _tile_params(sc_ptr, qz_ptr, (t0 * BK) // GROUP, cs, cz, stride_sg, stride_sn, stride_zg, stride_zn,
                           SYM, ZERO_OFFSET, IS_BF16, dt)  # fmt: skip
    ggdc_wait_prefetched(USE_GDC)  # the split-K workspace and y may be in use by the previous kernel
    acc = gl.zeros((64, BLOCK_M), gl.float32, layout=MMA)
    acc0 = gl.zeros((64, BLOCK_M), gl.float32, layout=MMA)  # each tile's wgmma starts from zero (ACC_SCALE)
    if PIPE == 0:
        for it in range(n_it):
            st = it % STAGES
            mbarrier.wait(ready.index(st), (it // STAGES) & 1)
            p2 = w_smem.index(st).slice(WG * 64, 64, dim=1).load(D2)  # [16 rows, 64], row = 4t + wi
            p0 = gl.convert_layout(gl.permute(gl.reshape(p2, [4, 4, 64]), [2, 1, 0]), gl.SliceLayout(2, L4),
                                   assert_trivial=True)  # fmt: skip
            a = _operand_qz(p0, zm2, L5, DOT, dt, IS_BF16)
            tok = hopper.warpgroup_mma(a, x_smem.index(st).permute((1, 0)), acc0, use_acc=False, is_async=True)
            # the next tile's scales / zeros under the wgmma (the last tile re-reads its own)
            gn = (gl.minimum(t0 + it + 1, t_last) * BK) // GROUP
            svn, zmn = _tile_params(sc_ptr, qz_ptr, gn, cs, cz, stride_sg, stride_sn, stride_zg, stride_zn, SYM,
                                    ZERO_OFFSET, IS_BF16, dt)  # fmt: skip
            part, a = hopper.warpgroup_mma_wait(0, deps=[tok, a])
            # the slot (its words and its x) goes back only once the wgmma that read it completed (session 13)
            mbarrier.arrive(empty.index(st), count=1)
            acc = acc + part * sv[:, None]
            sv = svn
            zm2 = zmn
    else:
        # PIPE (quant_tcs "tcs2a"'s loop): the slot of tile i - 1 released at the top of tile i, after tile i - 1's
        # wait(0) saw its wgmmas complete (each warp's operand came from its own reads of the slot; the wgmma read
        # the slot's x); the last slot is never needed again
        HK: gl.constexpr = 64
        for it in range(n_it):
            st = it % STAGES
            mbarrier.arrive(empty.index((it + STAGES - 1) % STAGES), count=1, pred=it > 0)
            mbarrier.wait(ready.index(st), (it // STAGES) & 1)
            p2 = w_smem.index(st).slice(WG * 64, 64, dim=1).load(D2)
            p0 = gl.convert_layout(gl.permute(gl.reshape(p2, [4, 4, 64]), [2, 1, 0]), gl.SliceLayout(2, L4),
                                   assert_trivial=True)  # fmt: skip
            pa, pb = gl.split(gl.permute(gl.reshape(p0, [64, 2, 2, 4]), [0, 2, 3, 1]))  # [64, wi % 2, t] each
            xt = x_smem.index(st)
            a0 = _operand_qz(pa, zm2, L5H, DOT, dt, IS_BF16)
            tok = hopper.warpgroup_mma(a0, xt.slice(0, HK, dim=1).permute((1, 0)), acc0, use_acc=False,
                                       is_async=True)  # fmt: skip
            a1 = _operand_qz(pb, zm2, L5H, DOT, dt, IS_BF16)  # while half 0's wgmma runs
            tok = hopper.warpgroup_mma(a1, xt.slice(HK, HK, dim=1).permute((1, 0)), tok, is_async=True)
            gn = (gl.minimum(t0 + it + 1, t_last) * BK) // GROUP
            svn, zmn = _tile_params(sc_ptr, qz_ptr, gn, cs, cz, stride_sg, stride_sn, stride_zg, stride_zn, SYM,
                                    ZERO_OFFSET, IS_BF16, dt)  # fmt: skip
            part, a0, a1 = hopper.warpgroup_mma_wait(0, deps=[tok, a0, a1])
            acc = acc + part * sv[:, None]
            sv = svn
            zm2 = zmn
    ggdc_late(USE_GDC)
    tile = WG * tiles + pid_m * gl.num_programs(0) + pid_n
    _tcw_store(acc, pid_m * BLOCK_M, col0, M, N, y_ptr, stride_ym, stride_yn, ws_ptr, cnt_ptr, tile, pid_k, SPLIT_K,
               USE_SPLIT, False, BLOCK_M)  # fmt: skip


@gluon.jit
def _tcsx_kernel(
    x_desc, w_desc, sc_ptr, qz_ptr, y_ptr, ws_ptr, cnt_ptr,
    M, N, K, ITERS, SPLIT_K,
    stride_sg, stride_sn, stride_zg, stride_zn, stride_ym, stride_yn,
    GROUP: gl.constexpr, SYM: gl.constexpr, ZERO_OFFSET: gl.constexpr, USE_SPLIT: gl.constexpr,
    IS_BF16: gl.constexpr, STAGES: gl.constexpr, BLOCK_M: gl.constexpr, NWG: gl.constexpr, CONS_REGS: gl.constexpr,
    MMA: gl.constexpr, DOT: gl.constexpr, L5: gl.constexpr, L4: gl.constexpr, D2: gl.constexpr, L5H: gl.constexpr,
    PIPE: gl.constexpr = 0, USE_GDC: gl.constexpr = 0,
):  # fmt: skip
    ggdc_start(USE_GDC)
    pid_n = gl.program_id(0)
    pid_k = gl.program_id(1)
    pid_m = gl.program_id(2)
    tiles = gl.num_programs(0) * gl.num_programs(2)
    BLOCK_N: gl.constexpr = NWG * 64
    x_smem = gl.allocate_shared_memory(x_desc.dtype, [STAGES, BLOCK_M, BK], x_desc.layout)
    w_smem = gl.allocate_shared_memory(gl.int32, [STAGES, 16, BLOCK_N], w_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=NWG)  # one arrival per consumer warpgroup
    hopper.fence_async_shared()
    t0 = pid_k * ITERS
    n_it = gl.minimum(ITERS, K // BK - t0)  # the last split may hold fewer tiles
    ws_partitions(
        _tcsx_consumer, _tcsx_producer,
        (x_smem, w_smem, ready, empty, sc_ptr, qz_ptr, y_ptr, ws_ptr, cnt_ptr, M, N, K, t0, n_it, pid_n, pid_m, pid_k,
         tiles, SPLIT_K, stride_sg, stride_sn, stride_zg, stride_zn, stride_ym, stride_yn),
        (NWG, GROUP, SYM, ZERO_OFFSET, USE_SPLIT, IS_BF16, STAGES, BLOCK_M, USE_GDC, MMA, DOT, L5, L4, D2, L5H, PIPE),
        (x_desc, w_desc, x_smem, w_smem, ready, empty, t0, n_it, pid_n, pid_m, STAGES, BLOCK_M, BLOCK_N, USE_GDC),
        NWG, CONS_REGS)  # fmt: skip


def x_smem_layout() -> gl.NVMMASharedLayout:
    """The x box's layout: quant_tcg's XS (the wgmma B operand, 128B swizzle) = quant_tcw's x layout."""
    return gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)


def tcsx_args(xp: torch.Tensor, w: GPTQWeight, block_m: int, split_k: int, stages: int, nwg: int, y: torch.Tensor,
              pipe: int = 0, regs: tuple[int, int] | None = None) -> tuple[tuple, tuple, dict]:  # fmt: skip
    """(grid, positional args, constexpr kwargs) of one launch on the already permuted xp (operand K order,
    quant_tcl.tcl_permute); shared with the offline build. regs: (maxnreg, worker setmaxnreg), default tcsx_regs."""
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    m, k = xp.shape
    n = w.out_features
    if not tcs_supported(w, k):
        raise ValueError(f"tcsx needs 4-bit N-contiguous weights, K and group multiples of {BLOCK_K}")
    if stages < 2 or block_m not in BLOCK_MS or nwg not in (1, 2):
        raise ValueError(f"tcsx: stages >= 2, block_m in {BLOCK_MS}, 1-2 consumer warpgroups (got {stages}, "
                         f"{block_m}, {nwg})")  # fmt: skip
    if block_m == 128 and nwg == 1:  # ONE_WG_REGS' 80-register launch: ptxas needs >= 94 there (C7602, offline)
        raise ValueError("tcsx: block_m 128 needs two consumer warpgroups (one does not build at 80 registers)")
    if tcsx_smem_bytes(stages, block_m, nwg) > SMEM_MAX:
        raise ValueError(f"tcsx: {stages} stages at block_m {block_m}: over {SMEM_MAX} bytes of shared memory")
    if xp.stride(1) != 1 or (xp.stride(0) * xp.element_size()) % 16 or xp.data_ptr() % 16:
        raise ValueError("tcsx: xp must be row-major with 16-byte rows (TMA)")
    grid, iters = plan_grid(m, n, k, block_m, split_k, nwg)
    split = grid[1]
    ws, cnt = bucket_workspace(xp.device, m, n, nwg * grid[0], block_m) if split > 1 else (y, y)
    x_desc = TensorDescriptor.from_tensor(xp, [block_m, BLOCK_K], x_smem_layout())
    w_desc = TensorDescriptor.from_tensor(w.qweight, [BLOCK_K // 8, WG_N * nwg], word_smem_layout())
    args = (
        x_desc, w_desc, w.scales, w.qzeros, y, ws, cnt,
        m, n, k, iters, split,
        w.scales.stride(0), w.scales.stride(1), w.qzeros.stride(0), w.qzeros.stride(1), y.stride(0), y.stride(1),
    )  # fmt: skip
    lay = tcs_layouts(block_m)
    consts = dict(GROUP=w.group_size, SYM=w.sym, ZERO_OFFSET=w.zero_offset, USE_SPLIT=split > 1,
                  IS_BF16=xp.dtype == torch.bfloat16, STAGES=stages, BLOCK_M=block_m, NWG=nwg,
                  CONS_REGS=(regs or tcsx_regs(block_m, nwg))[1], MMA=lay["MMA"], DOT=lay["DOT"], L5=lay["L5"],
                  L4=lay["L4"], D2=lay["D2"], L5H=tcg_layouts(WG_N, block_m, 4)["L5H"], PIPE=pipe)  # fmt: skip
    return grid, args, consts


# The pre-pass: x2 in the operand's K order, act-order composed in (one launch). quant_tcl's, the same function: for
# the 4-bit weights tcsx takes, tcl's operand order is this kernel's (launch_tcsx looks the name up here, so a spy on
# quant_tcsx.tcsx_permute sees tcsx's pre-passes only).
tcsx_permute = tcl_permute


def launch_tcsx(x2: torch.Tensor, w: GPTQWeight, block_m: int, split_k: int, stages: int, nwg: int, y: torch.Tensor,
                kind: str = "tcsx", xp: torch.Tensor | None = None,
                regs: tuple[int, int] | None = None):  # fmt: skip
    """y[M, N] = x2[M, K] @ W (CUDA sm_90 only; kinds KINDS, tcs_reference(acc_scale=True) numerics); with
    PDL inside kernels.pdl's scope. xp: x2 already in the operand's K order (tcsx_permute), else the pre-pass runs
    here (its own launch). Returns the launch's compiled kernel (the benches record its registers / spills)."""
    if kind not in KINDS:
        raise ValueError(f"unknown tcsx kind {kind!r} (kinds {tuple(KINDS)})")
    if not x2.is_cuda or os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError(f"{kind} is a Gluon kernel for CUDA sm_90 only (quant_matmul runs quant_tc's twin under the "
                           "interpreter)")  # fmt: skip
    if xp is None:
        xp = tcsx_permute(x2, w)
    if kind in ("tcsxk", "tcsxks"):
        return launch_tcsxk(xp, w, block_m, split_k, stages, nwg, y, regs, slots=kind == "tcsxks")
    grid, args, consts = tcsx_args(xp, w, block_m, split_k, stages, nwg, y, KINDS[kind], regs)
    return _tcsx_kernel[grid](*args, **consts, num_warps=4, maxnreg=(regs or tcsx_regs(block_m, nwg))[0],
                              **launch_kw(tensor_core=True))  # fmt: skip


def launch_tcsxk(xp: torch.Tensor, w: GPTQWeight, block_m: int, per_sm: int, stages: int, nwg: int, y: torch.Tensor,
                 regs: tuple[int, int] | None = None, programs: int = 0, slots: bool = False):  # fmt: skip
    """Kinds "tcsxk" / "tcsxks" (slots) on the permuted xp: quant_tcsxk's stream-K grid of per_sm programs an SM
    (programs: an explicit grid instead, e.g. the tile count for quant_tcsx's split-1 grid; the bench-only ablations
    and the other tile order: bench/kernels/tcsxk_diag.py)."""
    from .device_caps import sm_count
    from .quant_tcsxk import _tcsxk_kernel, tcsxk_args

    rg = regs or tcsx_regs(block_m, nwg)
    grid, args, consts = tcsxk_args(xp, w, block_m, programs or per_sm * sm_count(xp.device), stages, nwg, y, rg,
                                    slots=slots)  # fmt: skip
    return _tcsxk_kernel[grid](*args, **consts, num_warps=4, maxnreg=rg[0], **launch_kw(tensor_core=True))


__all__ = ["BLOCK_MS", "KINDS", "SMEM_MAX", "launch_tcsx", "launch_tcsxk", "plan_grid", "programs_per_sm", "tcsx_args",
           "tcsx_permute", "tcsx_regs", "tcsx_smem_bytes"]  # fmt: skip
