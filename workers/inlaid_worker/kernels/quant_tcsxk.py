"""quant_tcsx with a persistent stream-K grid: kinds "tcsxk" (shared tiles summed by read-and-clear atomics) and
"tcsxks" (per-contributor fp32 slots), issue 4, session 19 (helper H2); dispatched through quant_tcsx.launch_tcsx
(split_k = persistent programs an SM), offered by the tuner at M bucket 256 (quant_matmul_config.TCSXK_PLANS).

Why: at M = 128 / 256 tcsx runs block_m 128 x block_n 128 tiles, one program an SM (168 registers x 12 warps, 164 KiB
of ring), ~0.95 us a K tile a program whatever the shape, so whole waves of tiles set its time: 13B o (5120 x 5120) at
M = 256 has 40 x 2 = 80 tiles on 132 SMs (Nsight: SMs busy 56% of the kernel), 7B gate/up 344 tiles = 2.6 waves run
as 3 (84%). Prediction: one wave of programs over the (tile, K tile) units takes 13B o from 37.5 to ~26 us and 7B
gate/up from 91.5 to ~82.
What: the grid is P = split_k x SMs programs; the U = tiles x KT units are ordered by tile (column tiles fastest, as
quant_tcsx's grid) and program p takes units [p U / P, (p + 1) U / P), crossing tile boundaries. The producer warp
streams the units' words and x through one ring with no break at a tile boundary (coordinates advanced a unit at a time,
no division); each consumer warpgroup runs quant_tcsx's PIPE 0 loop (ACC_SCALE: exact (q - z) operand, fp32 product
scaled by the group's scale) over one tile's segment at a time, then stores it: a tile covered by one program writes y
directly; a tile shared by c programs (c = owner(last unit) - owner(first unit) + 1, computed in the kernel) goes
through quant_tcw._tcw_store with SPLIT_K = c: read-and-clear atomics ("tcsxk") or slot (p - first owner) in the fp32
slots ("tcsxks"); counters per warpgroup tile, left zeroed; no program waits for another. Numerics: quant_tcsx's
(tcs_reference(acc_scale=True)); only the fp32 summation order of shared tiles differs.
Measured on the H200 (bench/results/kernels-2026-12-01-s19-bigm.md, -run1.md; pre-pass included, us iso / PDL): the
prediction is refuted where it was aimed: 13B o M = 256 40.7 / 41.0 (tcsxks) against tcsx's 37.6 / 37.6, 7B gate/up
94.3 / 94.4 against 90.6 / 91.0, 7B o M = 128 25.8 / 26.4 against tcl's 21.5 / 21.4. Why (ablations, kernel alone):
the fix-up costs what the idle SMs did (13B o: the ring alone 16.8 us without stores, 27.4 with the shared tiles'
stores, atomics or slots alike: every program ends on a fix-up, nothing hides it), and this kernel's K loop is 12-14%
slower than quant_tcsx's at one program a tile (7B gate/up 100.6 against 88.1 us; the same loop SASS, 247 against
235 instructions a K tile; the tile order changes nothing: 98.7 / 100.6; not explained). It wins where the K range is
long and the grid was far from whole waves: 13B down M = 256 78.1 / 77.4 against tcl's 88.0 / 88.0 (1.13x, run 1
1.12x) and 13B gate/up M = 256 135.1 / 135.3 against tcsx's 145.0 / 145.1 (1.07x): those two picks ship.
The ablations above (no dequantization, the ring's stream alone, no per-tile scaling, no stores; the other unit
order) are bench-only: bench/kernels/tcsxk_diag.py holds that variant of this kernel. With P = tiles
(launch_tcsxk's `programs`) every program takes exactly one tile: quant_tcsx's split-1 grid.
Offline sm_90 build (bench/kernels/s19_bigm_sass.py): 168 / 232 registers, no local memory in the K loop; the fix-up
path after it spills ~200-230 bytes (once a tile segment).
4-bit weights, K and group multiples of 128, N % 4 == 0, block_m 128 with two consumer warpgroups (block_n 128) or
block_m 64; CUDA sm_90 only.
"""

from __future__ import annotations

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia import hopper
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma

from .device_caps import sm_count  # re-exported: bench/kernels/s19_bigm.py reads it here
from .gptq_packing import GPTQWeight
from .pdl import ggdc_late, ggdc_start, ggdc_wait_first, ggdc_wait_prefetched
from .quant_common import bucket_sizes, workspace
from .quant_tcg import BLOCK_K
from .quant_tcs import WG_N, _operand_qz, tcs_layouts, tcs_supported, word_smem_layout, ws_partitions
from .quant_tcsx import _tile_params
from .quant_tcw import _tcw_store, slot_workspace

BK = gl.constexpr(BLOCK_K)


@gluon.jit
def _owner(u, U, P):
    """The program whose unit range [p U / P, (p + 1) U / P) holds unit u."""
    return ((u + 1) * P - 1) // U


@gluon.jit
def _k_coords(u, KT, n_n):
    """Unit u's (K tile, column tile, row block): column tiles fastest (quant_tcsx's grid order)."""
    tile = u // KT
    pn = tile % n_n
    pm = tile // n_n
    return u - tile * KT, pn, pm


@gluon.jit
def _k_next(kt, pn, pm, KT, n_n):
    """The next unit's coordinates (no division: the producer issues one a unit)."""
    kt = kt + 1
    if kt == KT:
        kt = 0
        pn = pn + 1
        if pn == n_n:
            pn = 0
            pm = pm + 1
    return kt, pn, pm


@gluon.jit
def _k_producer(x_desc, w_desc, x_smem, w_smem, ready, empty, u0, n_it, KT, n_n, STAGES: gl.constexpr,
                BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, USE_GDC: gl.constexpr):  # fmt: skip
    ggdc_wait_first(USE_GDC)
    NB: gl.constexpr = x_desc.block_type.nbytes + w_desc.block_type.nbytes
    n_pre = gl.minimum(n_it, STAGES)
    for it in range(n_pre):  # the first units' words before the PDL wait (weights)
        kt, pn, pm = _k_coords(u0 + it, KT, n_n)
        mbarrier.expect(ready.index(it), NB)
        tma.async_copy_global_to_shared(w_desc, [kt * 16, pn * BLOCK_N], ready.index(it), w_smem.index(it))
    ggdc_wait_prefetched(USE_GDC)
    for it in range(n_pre):
        kt, pn, pm = _k_coords(u0 + it, KT, n_n)
        tma.async_copy_global_to_shared(x_desc, [pm * BLOCK_M, kt * BK], ready.index(it), x_smem.index(it))
    kt, pn, pm = _k_coords(u0 + n_pre, KT, n_n)  # then one unit after another, no division
    for it in range(n_pre, n_it):
        st = it % STAGES
        mbarrier.wait(empty.index(st), ((it // STAGES) & 1) ^ 1)
        bar = ready.index(st)
        mbarrier.expect(bar, NB)
        tma.async_copy_global_to_shared(w_desc, [kt * 16, pn * BLOCK_N], bar, w_smem.index(st))
        tma.async_copy_global_to_shared(x_desc, [pm * BLOCK_M, kt * BK], bar, x_smem.index(st))
        kt, pn, pm = _k_next(kt, pn, pm, KT, n_n)


@gluon.jit
def _k_consumer(x_smem, w_smem, ready, empty, sc_ptr, qz_ptr, y_ptr, ws_ptr, cnt_ptr, M, N, KT, U, P, pid, u0, u1, n_n,
                tiles, stride_sg, stride_sn, stride_zg, stride_zn, stride_ym, stride_yn, WG: gl.constexpr,
                NWG: gl.constexpr, GROUP: gl.constexpr, SYM: gl.constexpr, ZERO_OFFSET: gl.constexpr,
                IS_BF16: gl.constexpr, STAGES: gl.constexpr, BLOCK_M: gl.constexpr, USE_GDC: gl.constexpr,
                MMA: gl.constexpr, DOT: gl.constexpr, L5: gl.constexpr, L4: gl.constexpr, D2: gl.constexpr,
                SLOTS: gl.constexpr):  # fmt: skip
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
        _, pid_n, pid_m = _k_coords(tile * KT, KT, n_n)
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
            p2 = w_smem.index(st).slice(WG * 64, 64, dim=1).load(D2)
            p0 = gl.convert_layout(gl.permute(gl.reshape(p2, [4, 4, 64]), [2, 1, 0]), gl.SliceLayout(2, L4),
                                   assert_trivial=True)  # fmt: skip
            a = _operand_qz(p0, zm2, L5, DOT, dt, IS_BF16)
            tok = hopper.warpgroup_mma(a, x_smem.index(st).permute((1, 0)), acc0, use_acc=False, is_async=True)
            gn = (gl.minimum(kt + 1, k_hi - 1) * BK) // GROUP  # the next unit's scales / zeros, this segment
            svn, zmn = _tile_params(sc_ptr, qz_ptr, gn, cs, cz, stride_sg, stride_sn, stride_zg, stride_zn, SYM,
                                    ZERO_OFFSET, IS_BF16, dt)  # fmt: skip
            part, a = hopper.warpgroup_mma_wait(0, deps=[tok, a])
            mbarrier.arrive(empty.index(st), count=1)  # after the wgmma that read the slot completed
            acc = acc + part * sv[:, None]
            sv = svn
            zm2 = zmn
            it += 1
        if tile == tile_b:
            ggdc_late(USE_GDC)
        first = _owner(tile * KT, U, P)
        n_own = _owner(tile * KT + KT - 1, U, P) - first + 1  # programs sharing this tile
        if n_own == 1:
            _tcw_store(acc, row0, col0, M, N, y_ptr, stride_ym, stride_yn, ws_ptr, cnt_ptr, 0, 0, 1, False, False,
                       BLOCK_M)  # fmt: skip
        elif SLOTS:  # contributor pid - first writes slot pid - first, the last to arrive sums them
            _tcw_store(acc, row0, col0, M, N, y_ptr, stride_ym, stride_yn, ws_ptr, cnt_ptr, WG * tiles + tile,
                       pid - first, n_own, True, True, BLOCK_M)  # fmt: skip
        else:
            _tcw_store(acc, row0, col0, M, N, y_ptr, stride_ym, stride_yn, ws_ptr, cnt_ptr, WG * tiles + tile, 0, n_own,
                       True, False, BLOCK_M)  # fmt: skip


# n_m (row blocks) is unused here: the launch arguments (tcsxk_args) are shared with bench/kernels/tcsxk_diag.py, whose
# other unit order needs it
@gluon.jit(do_not_specialize=["M", "KT", "U", "P", "n_m", "n_n"])  # one build serves every shape's plan
def _tcsxk_kernel(
    x_desc, w_desc, sc_ptr, qz_ptr, y_ptr, ws_ptr, cnt_ptr,
    M, N, KT, U, P, n_m, n_n,
    stride_sg, stride_sn, stride_zg, stride_zn, stride_ym, stride_yn,
    GROUP: gl.constexpr, SYM: gl.constexpr, ZERO_OFFSET: gl.constexpr, IS_BF16: gl.constexpr, STAGES: gl.constexpr,
    BLOCK_M: gl.constexpr, NWG: gl.constexpr, CONS_REGS: gl.constexpr, MMA: gl.constexpr, DOT: gl.constexpr,
    L5: gl.constexpr, L4: gl.constexpr, D2: gl.constexpr, USE_GDC: gl.constexpr = 0, SLOTS: gl.constexpr = 0,
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
        (x_smem, w_smem, ready, empty, sc_ptr, qz_ptr, y_ptr, ws_ptr, cnt_ptr, M, N, KT, U, P, pid, u0, u1, n_n, tiles,
         stride_sg, stride_sn, stride_zg, stride_zn, stride_ym, stride_yn),
        (NWG, GROUP, SYM, ZERO_OFFSET, IS_BF16, STAGES, BLOCK_M, USE_GDC, MMA, DOT, L5, L4, D2, SLOTS),
        (x_desc, w_desc, x_smem, w_smem, ready, empty, u0, u1 - u0, KT, n_n, STAGES, BLOCK_M, BLOCK_N, USE_GDC),
        NWG, CONS_REGS)  # fmt: skip


def unit_range(pid: int, units: int, programs: int) -> tuple[int, int]:
    """Program pid's units [u0, u1) (the kernel's arithmetic, in Python for tests and benches)."""
    return pid * units // programs, (pid + 1) * units // programs


def owner(u: int, units: int, programs: int) -> int:
    """_owner in Python: the program whose unit range holds unit u."""
    return ((u + 1) * programs - 1) // units


def sharers(tile: int, k_tiles: int, units: int, programs: int) -> int:
    """How many programs add into this tile (the kernel's n_own: 1 = a direct store)."""
    return owner(tile * k_tiles + k_tiles - 1, units, programs) - owner(tile * k_tiles, units, programs) + 1


def tcsxk_plan(m: int, n: int, k: int, block_m: int, nwg: int, programs: int) -> tuple[int, int, int, int]:
    """(P, U, KT, row blocks): programs (capped at the units), units = column tiles x row blocks x K tiles."""
    kt = k // BLOCK_K
    n_m = triton.cdiv(m, block_m)
    units = triton.cdiv(n, WG_N * nwg) * n_m * kt
    return max(1, min(programs, units)), units, kt, n_m


def tcsxk_workspace(m: int, n: int, k: int, block_m: int, nwg: int, programs: int, slots: bool) -> tuple[int, int]:
    """(fp32 elements, int32 counters) a launch asks of its workspace; (0, 0): one program a tile, none. Sized for M's
    tuning bucket (quant_common.bucket_sizes), not M: the workspaces grow by replacement and decode graphs keep every
    captured one alive, so sizing by M pinned one buffer per decode bucket (13B gate/up slots at M = 160 / 192 / 224 /
    256: ~175 MB); the counters too (the bucket's row blocks: at block_m 64 or above M = 256 more than M's own).
    Slots: a tile has at most ceil(KT / (U / P)) + 1 contributors, counted on M's own plan; at the tuner's plan
    (block_m 128, bucket 256) every M of the bucket has the same row blocks, so the same plan and slots: one buffer
    for the whole bucket."""
    p, units, kt, n_m = tcsxk_plan(m, n, k, block_m, nwg, programs)
    tiles = units // kt
    if p == tiles:
        return 0, 0
    planes = min(p, -(-kt * p // units) + 1) if slots else 1
    return bucket_sizes(m, n, nwg * (tiles // n_m), block_m, planes)


def tcsxk_args(xp: torch.Tensor, w: GPTQWeight, block_m: int, programs: int, stages: int, nwg: int, y: torch.Tensor,
               regs: tuple[int, int], *, slots: bool = False) -> tuple[tuple, tuple, dict]:  # fmt: skip
    """(grid, positional args, constexpr kwargs) of one launch on the already permuted xp; shared with the offline
    build and bench/kernels/tcsxk_diag.py (which adds its DIAG / ORDER). programs: the persistent grid (P); regs:
    (maxnreg, worker setmaxnreg); slots: shared tiles' partials in per-contributor fp32 slots (plain stores, the last
    to arrive sums them) instead of read-and-clear atomics."""
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    from .quant_tcsx import SMEM_MAX, tcsx_smem_bytes, x_smem_layout

    m, k = xp.shape
    n = w.out_features
    if not tcs_supported(w, k):
        raise ValueError(f"tcsxk needs 4-bit N-contiguous weights, K and group multiples of {BLOCK_K}")
    if stages < 2 or block_m not in (64, 128) or nwg not in (1, 2) or (block_m == 128 and nwg == 1):
        raise ValueError(f"tcsxk: stages >= 2, block_m 64 or 128 (128: two consumer warpgroups) (got {stages}, "
                         f"{block_m}, {nwg})")  # fmt: skip
    if tcsx_smem_bytes(stages, block_m, nwg) > SMEM_MAX:
        raise ValueError(f"tcsxk: {stages} stages at block_m {block_m}: over {SMEM_MAX} bytes of shared memory")
    if xp.stride(1) != 1 or (xp.stride(0) * xp.element_size()) % 16 or xp.data_ptr() % 16:
        raise ValueError("tcsxk: xp must be row-major with 16-byte rows (TMA)")
    p, units, kt, n_m = tcsxk_plan(m, n, k, block_m, nwg, programs)
    tiles = units // kt
    elems, counters = tcsxk_workspace(m, n, k, block_m, nwg, programs, slots)
    if not elems:  # one program a tile: no tile is shared, no workspace
        ws, cnt = y, y
    else:
        ws, cnt = (slot_workspace if slots else workspace)(xp.device, elems, counters)
    x_desc = TensorDescriptor.from_tensor(xp, [block_m, BLOCK_K], x_smem_layout())
    w_desc = TensorDescriptor.from_tensor(w.qweight, [BLOCK_K // 8, WG_N * nwg], word_smem_layout())
    args = (
        x_desc, w_desc, w.scales, w.qzeros, y, ws, cnt,
        m, n, kt, units, p, n_m, tiles // n_m,
        w.scales.stride(0), w.scales.stride(1), w.qzeros.stride(0), w.qzeros.stride(1), y.stride(0), y.stride(1),
    )  # fmt: skip
    lay = tcs_layouts(block_m)
    consts = dict(GROUP=w.group_size, SYM=w.sym, ZERO_OFFSET=w.zero_offset, IS_BF16=xp.dtype == torch.bfloat16,
                  STAGES=stages, BLOCK_M=block_m, NWG=nwg, CONS_REGS=regs[1], MMA=lay["MMA"], DOT=lay["DOT"],
                  L5=lay["L5"], L4=lay["L4"], D2=lay["D2"], SLOTS=int(slots))  # fmt: skip
    return (p,), args, consts


__all__ = ["owner", "sharers", "sm_count", "tcsxk_args", "tcsxk_plan", "tcsxk_workspace", "unit_range"]
