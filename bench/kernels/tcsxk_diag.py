"""Bench-only variant of quant_tcsxk (session 19's stream-K tcsx grid) with the ablations of
bench/results/kernels-2026-12-01-s19-bigm{,-run1}.md; moved out of the package, which keeps only the shipped path
(DIAG 0, ORDER 1). Used by s19_bigm.py (ablations) and s19_bigm_sass.py (their offline builds); wrong results for
DIAG > 0, never dispatched.

DIAG: 0 = the full kernel; 1 = no dequantization (the words bitcast to the operand); 2 = the ring's stream alone (no
word reads, no operand, no wgmma; the stores still run); 3 = no ACC_SCALE (the wgmma accumulates, no per-tile scaling);
4 = the ring alone without any store (the fix-up's cost is DIAG 2 against 4).
ORDER: the units' tile order (_k_coords): 1 = column tiles fastest (quant_tcsx's grid order, the package's only
order), 0 = the row blocks of a column tile side by side.
At DIAG 0 / ORDER 1 this kernel compiles to the package kernel's PTX (checked offline when it moved). Only the code that
differs lives here (the unit order, the producer, the consumer, the kernel and DIAG 1's raw operand); the rest is
imported from the package, and the launch's arguments, checks and workspace come from quant_tcsxk.tcsxk_args.
Usage (device): PYTHONPATH=workers:bench/kernels; launch_tcsxk_diag(xp, w, 128, 1, 4, 2, y, programs=..., diag=...,
slots=..., order=...) on x permuted by quant_tcsx.tcsx_permute.
"""

from __future__ import annotations

import torch
from inlaid_worker.kernels.gptq_packing import GPTQWeight
from inlaid_worker.kernels.pdl import ggdc_late, ggdc_start, ggdc_wait_first, ggdc_wait_prefetched, launch_kw
from inlaid_worker.kernels.quant_tcs import _operand_qz, ws_partitions
from inlaid_worker.kernels.quant_tcsx import _tile_params, tcsx_regs
from inlaid_worker.kernels.quant_tcsxk import BK, _owner, tcsxk_args
from inlaid_worker.kernels.quant_tcw import _tcw_store
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia import hopper
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma

DIAGS = (0, 1, 2, 3, 4)
ORDERS = (0, 1)
ORDER = 1  # the package's order


@gluon.jit
def _k_coords(u, KT, n_m, n_n, ORDER: gl.constexpr):
    """Unit u's (K tile, column tile, row block); ORDER 1: column tiles fastest (quant_tcsx's grid order), 0: the
    row blocks of a column tile side by side."""
    tile = u // KT
    if ORDER == 1:
        pn = tile % n_n
        pm = tile // n_n
    else:
        pn = tile // n_m
        pm = tile % n_m
    return u - tile * KT, pn, pm


@gluon.jit
def _k_next(kt, pn, pm, KT, n_m, n_n, ORDER: gl.constexpr):
    """The next unit's coordinates (no division: the producer issues one a unit)."""
    kt = kt + 1
    if kt == KT:
        kt = 0
        if ORDER == 1:
            pn = pn + 1
            if pn == n_n:
                pn = 0
                pm = pm + 1
        else:
            pm = pm + 1
            if pm == n_m:
                pm = 0
                pn = pn + 1
    return kt, pn, pm


@gluon.jit
def _k_producer(x_desc, w_desc, x_smem, w_smem, ready, empty, u0, n_it, KT, n_m, n_n, ORDER: gl.constexpr,
                STAGES: gl.constexpr,
                BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, USE_GDC: gl.constexpr):  # fmt: skip
    ggdc_wait_first(USE_GDC)
    NB: gl.constexpr = x_desc.block_type.nbytes + w_desc.block_type.nbytes
    n_pre = gl.minimum(n_it, STAGES)
    for it in range(n_pre):  # the first units' words before the PDL wait (weights)
        kt, pn, pm = _k_coords(u0 + it, KT, n_m, n_n, ORDER)
        mbarrier.expect(ready.index(it), NB)
        tma.async_copy_global_to_shared(w_desc, [kt * 16, pn * BLOCK_N], ready.index(it), w_smem.index(it))
    ggdc_wait_prefetched(USE_GDC)
    for it in range(n_pre):
        kt, pn, pm = _k_coords(u0 + it, KT, n_m, n_n, ORDER)
        tma.async_copy_global_to_shared(x_desc, [pm * BLOCK_M, kt * BK], ready.index(it), x_smem.index(it))
    kt, pn, pm = _k_coords(u0 + n_pre, KT, n_m, n_n, ORDER)  # then one unit after another, no division
    for it in range(n_pre, n_it):
        st = it % STAGES
        mbarrier.wait(empty.index(st), ((it // STAGES) & 1) ^ 1)
        bar = ready.index(st)
        mbarrier.expect(bar, NB)
        tma.async_copy_global_to_shared(w_desc, [kt * 16, pn * BLOCK_N], bar, w_smem.index(st))
        tma.async_copy_global_to_shared(x_desc, [pm * BLOCK_M, kt * BK], bar, x_smem.index(st))
        kt, pn, pm = _k_next(kt, pn, pm, KT, n_m, n_n, ORDER)


@gluon.jit
def _operand_raw(pw, L5X: gl.constexpr, DOT: gl.constexpr, dt: gl.constexpr):
    """DIAG 1: _operand_qz's layout chain on the raw words (no dequantization arithmetic)."""
    L4X: gl.constexpr = gl.SliceLayout(4, L5X)
    PL: gl.constexpr = gl.SliceLayout(2, L4X)
    BN: gl.constexpr = pw.shape[0]
    NW: gl.constexpr = pw.shape[1]
    w = gl.convert_layout(pw, PL, assert_trivial=True)
    p = gl.join(gl.join(w, w), gl.join(w, w))
    pairs = gl.permute(gl.reshape(p, [BN, NW, 4, 4]), [0, 1, 3, 2])
    w5 = gl.join(pairs.to(gl.int16), (pairs >> 16).to(gl.int16))
    w5 = gl.convert_layout(w5, L5X)
    a = gl.reshape(w5, [BN, 32 * NW]).to(dt, bitcast=True)
    return gl.convert_layout(a, DOT, assert_trivial=True)


@gluon.jit
def _k_consumer(x_smem, w_smem, ready, empty, sc_ptr, qz_ptr, y_ptr, ws_ptr, cnt_ptr, M, N, KT, U, P, pid, u0, u1, n_m,
                n_n, tiles, stride_sg, stride_sn, stride_zg, stride_zn, stride_ym, stride_yn, WG: gl.constexpr,
                NWG: gl.constexpr, GROUP: gl.constexpr, SYM: gl.constexpr, ZERO_OFFSET: gl.constexpr,
                IS_BF16: gl.constexpr, STAGES: gl.constexpr, BLOCK_M: gl.constexpr, USE_GDC: gl.constexpr,
                MMA: gl.constexpr, DOT: gl.constexpr, L5: gl.constexpr, L4: gl.constexpr, D2: gl.constexpr,
                DIAG: gl.constexpr, SLOTS: gl.constexpr, ORDER: gl.constexpr):  # fmt: skip
    dt: gl.constexpr = x_smem.dtype
    SA: gl.constexpr = gl.SliceLayout(1, MMA)
    ZL: gl.constexpr = gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(3, L4)))
    ggdc_wait_first(USE_GDC)
    ggdc_wait_prefetched(USE_GDC)  # the workspace and y may be in use by the previous kernel
    acc0 = gl.zeros((64, BLOCK_M), gl.float32, layout=MMA)
    it = 0
    tile_b = (u1 - 1) // KT
    for tile in range(u0 // KT, tile_b + 1):
        k_lo = gl.maximum(u0, tile * KT) - tile * KT
        k_hi = gl.minimum(u1, (tile + 1) * KT) - tile * KT
        _, pid_n, pid_m = _k_coords(tile * KT, KT, n_m, n_n, ORDER)
        row0 = pid_m * BLOCK_M
        col0 = pid_n * (NWG * 64) + WG * 64
        cs = gl.minimum(col0 + gl.arange(0, 64, layout=SA), N - 1)
        cz = gl.minimum(col0 + gl.arange(0, 64, layout=ZL), N - 1)
        sv, zm2 = _tile_params(sc_ptr, qz_ptr, (k_lo * BK) // GROUP, cs, cz, stride_sg, stride_sn, stride_zg,
                               stride_zn, SYM, ZERO_OFFSET, IS_BF16, dt)  # fmt: skip
        acc = gl.zeros((64, BLOCK_M), gl.float32, layout=MMA)
        for kt in range(k_lo, k_hi):
            st = it % STAGES
            mbarrier.wait(ready.index(st), (it // STAGES) & 1)
            if DIAG == 2 or DIAG == 4:  # the ring's stream alone
                mbarrier.arrive(empty.index(st), count=1)
            else:
                p2 = w_smem.index(st).slice(WG * 64, 64, dim=1).load(D2)
                p0 = gl.convert_layout(gl.permute(gl.reshape(p2, [4, 4, 64]), [2, 1, 0]), gl.SliceLayout(2, L4),
                                       assert_trivial=True)  # fmt: skip
                if DIAG == 1:
                    a = _operand_raw(p0, L5, DOT, dt)
                else:
                    a = _operand_qz(p0, zm2, L5, DOT, dt, IS_BF16)
                if DIAG == 3:
                    tok = hopper.warpgroup_mma(a, x_smem.index(st).permute((1, 0)), acc, is_async=True)
                else:
                    tok = hopper.warpgroup_mma(a, x_smem.index(st).permute((1, 0)), acc0, use_acc=False,
                                               is_async=True)  # fmt: skip
                gn = (gl.minimum(kt + 1, k_hi - 1) * BK) // GROUP  # the next unit's scales / zeros, this segment
                svn, zmn = _tile_params(sc_ptr, qz_ptr, gn, cs, cz, stride_sg, stride_sn, stride_zg, stride_zn, SYM,
                                        ZERO_OFFSET, IS_BF16, dt)  # fmt: skip
                part, a = hopper.warpgroup_mma_wait(0, deps=[tok, a])
                mbarrier.arrive(empty.index(st), count=1)  # after the wgmma that read the slot completed
                if DIAG == 3:
                    acc = part
                else:
                    acc = acc + part * sv[:, None]
                sv = svn
                zm2 = zmn
            it += 1
        if tile == tile_b:
            ggdc_late(USE_GDC)
        first = _owner(tile * KT, U, P)
        n_own = _owner(tile * KT + KT - 1, U, P) - first + 1  # programs sharing this tile
        if DIAG != 4:  # (DIAG 4: no store; the fix-up's cost is DIAG 2 against 4)
            if n_own == 1:
                _tcw_store(acc, row0, col0, M, N, y_ptr, stride_ym, stride_yn, ws_ptr, cnt_ptr, 0, 0, 1, False, False,
                           BLOCK_M)  # fmt: skip
            elif SLOTS:  # contributor pid - first writes slot pid - first, the last to arrive sums them
                _tcw_store(acc, row0, col0, M, N, y_ptr, stride_ym, stride_yn, ws_ptr, cnt_ptr, WG * tiles + tile,
                           pid - first, n_own, True, True, BLOCK_M)  # fmt: skip
            else:
                _tcw_store(acc, row0, col0, M, N, y_ptr, stride_ym, stride_yn, ws_ptr, cnt_ptr, WG * tiles + tile, 0,
                           n_own, True, False, BLOCK_M)  # fmt: skip


@gluon.jit(do_not_specialize=["M", "KT", "U", "P", "n_m", "n_n"])  # one build serves every shape's plan
def _tcsxk_diag_kernel(
    x_desc, w_desc, sc_ptr, qz_ptr, y_ptr, ws_ptr, cnt_ptr,
    M, N, KT, U, P, n_m, n_n,
    stride_sg, stride_sn, stride_zg, stride_zn, stride_ym, stride_yn,
    GROUP: gl.constexpr, SYM: gl.constexpr, ZERO_OFFSET: gl.constexpr, IS_BF16: gl.constexpr, STAGES: gl.constexpr,
    BLOCK_M: gl.constexpr, NWG: gl.constexpr, CONS_REGS: gl.constexpr, MMA: gl.constexpr, DOT: gl.constexpr,
    L5: gl.constexpr, L4: gl.constexpr, D2: gl.constexpr, USE_GDC: gl.constexpr = 0, DIAG: gl.constexpr = 0,
    SLOTS: gl.constexpr = 0, ORDER: gl.constexpr = 1,
):  # fmt: skip
    ggdc_start(USE_GDC)
    pid = gl.program_id(0)
    tiles = U // KT
    BLOCK_N: gl.constexpr = NWG * 64
    x_smem = gl.allocate_shared_memory(x_desc.dtype, [STAGES, BLOCK_M, BK], x_desc.layout)
    w_smem = gl.allocate_shared_memory(gl.int32, [STAGES, 16, BLOCK_N], w_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=NWG)
    hopper.fence_async_shared()
    u0 = (pid * U) // P
    u1 = ((pid + 1) * U) // P
    ws_partitions(
        _k_consumer, _k_producer,
        (x_smem, w_smem, ready, empty, sc_ptr, qz_ptr, y_ptr, ws_ptr, cnt_ptr, M, N, KT, U, P, pid, u0, u1, n_m, n_n,
         tiles, stride_sg, stride_sn, stride_zg, stride_zn, stride_ym, stride_yn),
        (NWG, GROUP, SYM, ZERO_OFFSET, IS_BF16, STAGES, BLOCK_M, USE_GDC, MMA, DOT, L5, L4, D2, DIAG, SLOTS, ORDER),
        (x_desc, w_desc, x_smem, w_smem, ready, empty, u0, u1 - u0, KT, n_m, n_n, ORDER, STAGES, BLOCK_M, BLOCK_N,
         USE_GDC),
        NWG, CONS_REGS)  # fmt: skip


def tcsxk_diag_args(xp: torch.Tensor, w: GPTQWeight, block_m: int, programs: int, stages: int, nwg: int,
                    y: torch.Tensor, regs: tuple[int, int], diag: int = 0, slots: bool = False,
                    order: int = ORDER) -> tuple[tuple, tuple, dict]:  # fmt: skip
    """quant_tcsxk.tcsxk_args (grid, positional args, checks, workspace) plus this variant's DIAG / ORDER."""
    if diag not in DIAGS:
        raise ValueError(f"tcsxk: diag in {DIAGS}")
    if order not in ORDERS:
        raise ValueError(f"tcsxk: order in {ORDERS}")
    grid, args, consts = tcsxk_args(xp, w, block_m, programs, stages, nwg, y, regs, slots=slots)
    return grid, args, dict(consts, DIAG=diag, ORDER=order)


def launch_tcsxk_diag(xp: torch.Tensor, w: GPTQWeight, block_m: int, per_sm: int, stages: int, nwg: int,
                      y: torch.Tensor, regs: tuple[int, int] | None = None, programs: int = 0, diag: int = 0,
                      slots: bool = False, order: int = ORDER):  # fmt: skip
    """quant_tcsx.launch_tcsxk with the ablations: per_sm programs an SM, or `programs` (e.g. the tile count: one
    program a tile, quant_tcsx's split-1 grid); diag / order as above."""
    from inlaid_worker.kernels.device_caps import sm_count

    rg = regs or tcsx_regs(block_m, nwg)
    grid, args, consts = tcsxk_diag_args(xp, w, block_m, programs or per_sm * sm_count(xp.device), stages, nwg, y, rg,
                                         diag, slots, order)  # fmt: skip
    return _tcsxk_diag_kernel[grid](*args, **consts, num_warps=4, maxnreg=rg[0], **launch_kw(tensor_core=True))


__all__ = ["DIAGS", "ORDER", "ORDERS", "launch_tcsxk_diag", "tcsxk_diag_args"]
