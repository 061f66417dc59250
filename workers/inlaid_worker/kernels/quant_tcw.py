"""Warp-specialized Gluon int4 g128 GEMM for large M (256..512): kind "tcw" (issue 4).

quant_tcl's tile kernel (one warpgroup, cp.async ring, one CTA barrier per K tile, 3 programs an SM) reaches
0.70-0.79x bf16 cuBLAS at M >= 256: inside a program the dequantization never overlaps the MMAs, and every
64-column program streams its own copy of the [BLOCK_M, 128] x tile (32 KB of x per 4 KB of words).
Here one program owns BLOCK_N = 128 weight columns and BLOCK_M (128 or 256) rows of x, split into three partitions
(gl.warp_specialize):
- a producer warp: TMA copies of the permuted x tile [BLOCK_M, 128] and the words [16, 128] into a STAGES-deep ring,
  completion on `ready[s]` (expect-tx), slot reuse gated by `empty[s]`;
- two consumer warpgroups (the default partition and a worker), each with its own 64 weight columns and its own
  accumulator [64, BLOCK_M]: wait `ready[s]`, read its words from the ring, build quant_tcg's register-A operand
  ((q - z) * s, FULL_DEQUANT), one asynchronous wgmma chain over the shared x tile, wait, arrive on `empty[s]`.
The two warpgroups share the SM's tensor cores, so once one is queued behind the other's MMAs they fall into a
ping-pong: one dequantizes while the other's wgmmas run. PP (kind "tcw") enforces it (mbarrier turns: the chains
alternate, never interleave); "tcwn" leaves it to the schedulers. No CTA barrier in the K loop (a warpgroup-local one
before each release). One x tile now feeds 128 weight columns (half quant_tcl's x traffic per MAC; at BLOCK_M = 256
also half its word traffic).
x is permuted once per call into the operand's K order (quant_tcl.permute_x, act-order composed in). Rows past M and
columns past N are zero-filled by TMA and never stored. Split-K: each split's fp32 partial in its own slot, the last
arriver sums them (SLOTS; "tcwx": quant_tcg's read-and-clear atomics), counters per warpgroup tile.
4-bit weights (fp16 / bf16 x), K and group multiples of 128, N-contiguous qweight; CUDA sm_90 only.
The interpretable twin is quant_tc's "tcf" (the same product); tests/kernels/test_quant_tcw.py.
Measured on the H200 (bench/kernels/NOTES.md "tcw"): 0.77-0.89x bf16 cuBLAS at M = 256 / 512 on the 7B shapes, 6-19%
faster than quant_tcl at M = 512 and on down at M = 256; a 256x128 tile runs at ~70-75% of the SM's tensor-core peak,
the rest is lost to one-CTA-per-SM wave quantization and the x permute. Ping-pong changes -2..+2%.
"""

from __future__ import annotations

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia import hopper
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma

from .gptq_packing import GPTQWeight
from .quant_common import bucket_workspace, cached_buffer, split_iters
from .quant_tcg import BLOCK_K, _group_params, _operand
from .quant_tcl import permute_x, tcl_layouts, x_order

BLOCK_N = 128  # two consumer warpgroups of 64 weight columns each
WG_N = 64
CONSUMER_REGS = 240  # setmaxnreg of each consumer warpgroup; the producer gets 24 (12 warps x 168 = 64512 in all)
MAXNREG = 168


def tcw_supported(w: GPTQWeight, k: int) -> bool:
    """4-bit weights, K and group multiples of 128, qweight N-contiguous with 16-byte rows (TMA)."""
    tma_ok = w.qweight.stride(1) == 1 and w.qweight.stride(0) % 4 == 0 and w.qweight.data_ptr() % 16 == 0
    return w.bits == 4 and k % BLOCK_K == 0 and w.group_size % BLOCK_K == 0 and tma_ok


@gluon.jit
def _tcw_producer(x_desc, w_desc, x_smem, w_smem, ready, empty, t0, n_it, pid_n, pid_m, STAGES: gl.constexpr,
                  BLOCK_M: gl.constexpr):  # fmt: skip
    for it in range(n_it):
        st = it % STAGES
        mbarrier.wait(empty.index(st), ((it // STAGES) & 1) ^ 1)  # fresh barriers count as released
        bar = ready.index(st)
        mbarrier.expect(bar, x_desc.block_type.nbytes + w_desc.block_type.nbytes)
        kt = t0 + it
        tma.async_copy_global_to_shared(x_desc, [pid_m * BLOCK_M, kt * 128], bar, x_smem.index(st))
        tma.async_copy_global_to_shared(w_desc, [kt * 16, pid_n * 128], bar, w_smem.index(st))


@gluon.jit
def _tcw_store(acc, row0, col0, M, N, y_ptr, stride_ym, stride_yn, ws_ptr, cnt_ptr, tile, pid_k, SPLIT_K,
               USE_SPLIT: gl.constexpr, SLOTS: gl.constexpr, BLOCK_M: gl.constexpr):  # fmt: skip
    """acc [64, BLOCK_M] is y[row0:, col0:]^T. Split-K, SLOTS: each split stores its partial into its own fp32 slot
    [SPLIT_K, M, N] (plain stores), the last to arrive adds the others' slots (L2 loads) to its own and stores y;
    else quant_tcg.store_acc's read-and-clear atomics. Counters per warpgroup tile, left zeroed."""
    LA: gl.constexpr = acc.type.layout
    offs_n2 = col0 + gl.arange(0, 64, layout=gl.SliceLayout(1, LA))
    offs_m2 = row0 + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(0, LA))
    if USE_SPLIT:
        offs = offs_m2[None, :] * N + offs_n2[:, None]  # int32 offsets; pointers only at each access (registers)
        if SLOTS:
            plane = M * N
            gl.store(ws_ptr + pid_k * plane + offs, acc, mask=(offs_n2 < N)[:, None] & (offs_m2 < M)[None, :])
            gl.thread_barrier()
            arrived = gl.atomic_add(cnt_ptr + tile, 1, sem="acq_rel")
            if arrived == SPLIT_K - 1:
                for j in range(SPLIT_K):
                    if j != pid_k:
                        acc += gl.load(ws_ptr + j * plane + offs, mask=(offs_n2 < N)[:, None] & (offs_m2 < M)[None, :],
                                       other=0.0, cache_modifier=".cg")  # fmt: skip
                gl.store(y_ptr + offs_m2[None, :] * stride_ym + offs_n2[:, None] * stride_yn,
                         acc.to(y_ptr.dtype.element_ty), mask=(offs_n2 < N)[:, None] & (offs_m2 < M)[None, :])  # fmt: skip
                gl.store(cnt_ptr + tile, 0)
        else:
            mask = (offs_n2 < N)[:, None] & (offs_m2 < M)[None, :]
            gl.atomic_add(ws_ptr + offs, acc, mask=mask, sem="relaxed")
            gl.thread_barrier()
            arrived = gl.atomic_add(cnt_ptr + tile, 1, sem="acq_rel")
            if arrived == SPLIT_K - 1:
                bits = gl.atomic_xchg((ws_ptr + offs).to(gl.pointer_type(gl.int32)),
                                      gl.zeros(acc.shape, gl.int32, layout=LA), mask=mask, sem="relaxed")  # fmt: skip
                gl.store(y_ptr + offs_m2[None, :] * stride_ym + offs_n2[:, None] * stride_yn,
                         bits.to(gl.float32, bitcast=True).to(y_ptr.dtype.element_ty), mask=mask)  # fmt: skip
                gl.store(cnt_ptr + tile, 0)
    else:
        gl.store(y_ptr + offs_m2[None, :] * stride_ym + offs_n2[:, None] * stride_yn, acc.to(y_ptr.dtype.element_ty),
                 mask=(offs_n2 < N)[:, None] & (offs_m2 < M)[None, :])  # fmt: skip


@gluon.jit
def _tcw_consumer(x_smem, w_smem, ready, empty, turn, sc_ptr, qz_ptr, y_ptr, ws_ptr, cnt_ptr, M, N, K, t0, n_it, pid_n,
                  pid_m, pid_k, tiles, SPLIT_K, stride_sg, stride_sn, stride_zg, stride_zn, stride_ym, stride_yn,
                  WG: gl.constexpr, PP: gl.constexpr, SLOTS: gl.constexpr, GROUP: gl.constexpr, SYM: gl.constexpr,
                  ZERO_OFFSET: gl.constexpr,
                  USE_SPLIT: gl.constexpr, IS_BF16: gl.constexpr, STAGES: gl.constexpr, BLOCK_M: gl.constexpr,
                  MMA: gl.constexpr, DOT: gl.constexpr, L5: gl.constexpr, L4: gl.constexpr, D2: gl.constexpr):  # fmt: skip
    dt: gl.constexpr = x_smem.dtype
    ZL: gl.constexpr = gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(3, L4)))
    col0 = pid_n * 128 + WG * 64
    offs_nz = gl.minimum(col0 + gl.arange(0, 64, layout=ZL), N - 1)
    k_tiles = K // 128
    zm2, s = _group_params(sc_ptr, qz_ptr, (t0 * 128) // GROUP, offs_nz, offs_nz < N, stride_sg, stride_sn,
                           stride_zg, stride_zn, SYM, ZERO_OFFSET, IS_BF16)  # fmt: skip
    acc = gl.zeros((64, BLOCK_M), gl.float32, layout=MMA)
    for it in range(n_it):
        st = it % STAGES
        mbarrier.wait(ready.index(st), (it // STAGES) & 1)
        p2 = w_smem.index(st).slice(WG * 64, 64, dim=1).load(D2)  # [16 rows, 64], row = 4t + wi
        p0 = gl.convert_layout(gl.permute(gl.reshape(p2, [4, 4, 64]), [2, 1, 0]), gl.SliceLayout(2, L4),
                               assert_trivial=True)  # fmt: skip
        a = _operand(p0, zm2, s, L5, DOT, dt, True, IS_BF16)
        if PP:  # ping-pong: the warpgroups' wgmma chains alternate, never interleave
            mbarrier.wait(turn.index(WG), it & 1)
        tok = hopper.warpgroup_mma(a, x_smem.index(st).permute((1, 0)), acc, is_async=True)
        if PP:
            gl.thread_barrier()  # all four warps have issued their part of the chain
            mbarrier.arrive(turn.index(1 - WG), count=1)
        tn = gl.minimum(t0 + it + 1, k_tiles - 1)  # the next tile's group parameters, under the wgmma
        zm2, s = _group_params(sc_ptr, qz_ptr, (tn * 128) // GROUP, offs_nz, offs_nz < N, stride_sg, stride_sn,
                               stride_zg, stride_zn, SYM, ZERO_OFFSET, IS_BF16)  # fmt: skip
        acc = hopper.warpgroup_mma_wait(0, deps=[tok])
        gl.thread_barrier()  # this warpgroup's reads of the slot (words, wgmma) are all done
        mbarrier.arrive(empty.index(st), count=1)
    tile = WG * tiles + pid_m * gl.num_programs(0) + pid_n
    if USE_SPLIT and BLOCK_M > 128:  # two halves of 128 rows, one after the other: fewer live address registers
        lo, hi = gl.split(gl.permute(gl.reshape(acc, [64, 2, BLOCK_M // 2]), [0, 2, 1]))
        _tcw_store(lo, pid_m * BLOCK_M, col0, M, N, y_ptr, stride_ym, stride_yn, ws_ptr, cnt_ptr, tile, pid_k, SPLIT_K,
                   USE_SPLIT, SLOTS, BLOCK_M // 2)  # fmt: skip
        _tcw_store(hi, pid_m * BLOCK_M + BLOCK_M // 2, col0, M, N, y_ptr, stride_ym, stride_yn, ws_ptr,
                   cnt_ptr + 2 * tiles, tile, pid_k, SPLIT_K, USE_SPLIT, SLOTS, BLOCK_M // 2)  # fmt: skip
    else:
        _tcw_store(acc, pid_m * BLOCK_M, col0, M, N, y_ptr, stride_ym, stride_yn, ws_ptr, cnt_ptr, tile, pid_k,
                   SPLIT_K, USE_SPLIT, SLOTS, BLOCK_M)  # fmt: skip


@gluon.jit
def _tcw_kernel(
    x_desc, w_desc, sc_ptr, qz_ptr, y_ptr, ws_ptr, cnt_ptr,
    M, N, K, ITERS, SPLIT_K,
    stride_sg, stride_sn, stride_zg, stride_zn, stride_ym, stride_yn,
    GROUP: gl.constexpr, SYM: gl.constexpr, ZERO_OFFSET: gl.constexpr, USE_SPLIT: gl.constexpr,
    IS_BF16: gl.constexpr, STAGES: gl.constexpr, BLOCK_M: gl.constexpr, CONS_REGS: gl.constexpr,
    PP: gl.constexpr, SLOTS: gl.constexpr,
    MMA: gl.constexpr, DOT: gl.constexpr, L5: gl.constexpr, L4: gl.constexpr, D2: gl.constexpr,
):  # fmt: skip
    pid_n = gl.program_id(0)
    pid_k = gl.program_id(1)
    pid_m = gl.program_id(2)
    tiles = gl.num_programs(0) * gl.num_programs(2)
    x_smem = gl.allocate_shared_memory(x_desc.dtype, [STAGES, BLOCK_M, 128], x_desc.layout)
    w_smem = gl.allocate_shared_memory(gl.int32, [STAGES, 16, 128], w_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=2)  # one arrival per consumer warpgroup
    turn = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    mbarrier.init(turn.index(0), count=1)
    mbarrier.init(turn.index(1), count=1)
    hopper.fence_async_shared()
    if PP:
        mbarrier.arrive(turn.index(0), count=1)  # warpgroup 0 issues first
    k_tiles = K // 128
    t0 = pid_k * ITERS
    n_it = gl.minimum(ITERS, k_tiles - t0)  # the last split may hold fewer tiles
    gl.warp_specialize([
        (_tcw_consumer, (x_smem, w_smem, ready, empty, turn, sc_ptr, qz_ptr, y_ptr, ws_ptr, cnt_ptr, M, N, K, t0, n_it,
                         pid_n, pid_m, pid_k, tiles, SPLIT_K, stride_sg, stride_sn, stride_zg, stride_zn, stride_ym,
                         stride_yn, 0, PP, SLOTS, GROUP, SYM, ZERO_OFFSET, USE_SPLIT, IS_BF16, STAGES, BLOCK_M,
                         MMA, DOT, L5, L4, D2)),
        (_tcw_consumer, (x_smem, w_smem, ready, empty, turn, sc_ptr, qz_ptr, y_ptr, ws_ptr, cnt_ptr, M, N, K, t0, n_it,
                         pid_n, pid_m, pid_k, tiles, SPLIT_K, stride_sg, stride_sn, stride_zg, stride_zn, stride_ym,
                         stride_yn, 1, PP, SLOTS, GROUP, SYM, ZERO_OFFSET, USE_SPLIT, IS_BF16, STAGES, BLOCK_M,
                         MMA, DOT, L5, L4, D2)),
        (_tcw_producer, (x_desc, w_desc, x_smem, w_smem, ready, empty, t0, n_it, pid_n, pid_m, STAGES, BLOCK_M)),
    ], [4, 1], [CONS_REGS, 24])  # fmt: skip


def tcw_layouts(block_m: int) -> dict:
    """One consumer warpgroup's layouts (quant_tcl's for a 64-column, 4-warp tile)."""
    lay = tcl_layouts(WG_N, block_m, 4)
    return dict(MMA=lay["MMA"], DOT=lay["DOT"], L5=lay["L5"], L4=lay["L4"], D2=lay["D2"])


def smem_layouts() -> tuple[gl.NVMMASharedLayout, gl.NVMMASharedLayout]:
    """(x tile: quant_tcl's 128B-swizzled B operand layout, words: 128B-swizzled int32)."""
    return (gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2),
            gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=32, rank=2))  # fmt: skip


_SLOT_WS: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def slot_workspace(device: torch.device, elems: int, tiles: int) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 partial slots (any contents: every split overwrites its own before it is read) and int32 arrival counters
    (zeroed; the kernel leaves them zeroed), grown on demand; separate from quant_common.workspace, which must stay
    zeroed for the read-and-clear kernels."""
    ws, cnt = _SLOT_WS.get(device, (None, None))
    if ws is None or cnt is None or ws.numel() < elems or cnt.numel() < tiles:
        ws = cached_buffer(max(elems, 0 if ws is None else ws.numel()), torch.float32, device, zero=False)
        cnt = cached_buffer(max(tiles, 0 if cnt is None else cnt.numel()), torch.int32, device)
        _SLOT_WS[device] = (ws, cnt)
    return ws, cnt


def tcw_args(xp: torch.Tensor, w: GPTQWeight, block_m: int, split_k: int, stages: int, y: torch.Tensor,
             pp: bool = True, slots: bool = True) -> tuple[tuple, tuple, dict]:  # fmt: skip
    """(grid, positional args, constexpr kwargs) of one launch on the already permuted xp. pp: the consumers' wgmma
    chains alternate (ping-pong); slots: split-K partials in per-split fp32 slots (else read-and-clear atomics)."""
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    m, k = xp.shape
    if not tcw_supported(w, k):
        raise ValueError(f"tcw needs 4-bit N-contiguous weights, K and group multiples of {BLOCK_K}")
    if stages < 2 or block_m not in (64, 128, 256):
        raise ValueError(f"tcw needs a ring of at least 2 stages and block_m 64 / 128 / 256 (got {stages}, {block_m})")
    n = w.out_features
    iters, split = split_iters(k // BLOCK_K, split_k)
    grid = (triton.cdiv(n, BLOCK_N), split, triton.cdiv(m, block_m))
    if split == 1:
        ws, cnt = y, y
    elif slots:  # counters: per warpgroup tile, and per half of a 256-row tile
        ws, cnt = bucket_workspace(xp.device, m, n, 4 * grid[0], block_m, planes=split, alloc=slot_workspace)
    else:
        ws, cnt = bucket_workspace(xp.device, m, n, 4 * grid[0], block_m)
    xl, wl = smem_layouts()
    x_desc = TensorDescriptor.from_tensor(xp, [block_m, BLOCK_K], xl)
    w_desc = TensorDescriptor.from_tensor(w.qweight, [BLOCK_K // 8, BLOCK_N], wl)
    args = (
        x_desc, w_desc, w.scales, w.qzeros, y, ws, cnt,
        m, n, k, iters, split,
        w.scales.stride(0), w.scales.stride(1), w.qzeros.stride(0), w.qzeros.stride(1), y.stride(0), y.stride(1),
    )  # fmt: skip
    consts = dict(GROUP=w.group_size, SYM=w.sym, ZERO_OFFSET=w.zero_offset, USE_SPLIT=split > 1,
                  IS_BF16=xp.dtype == torch.bfloat16, STAGES=stages, BLOCK_M=block_m, CONS_REGS=CONSUMER_REGS,
                  PP=pp, SLOTS=slots, **tcw_layouts(block_m))  # fmt: skip
    return grid, args, consts


KINDS = {"tcw": (True, True), "tcwn": (False, True), "tcwx": (True, False)}  # kind -> (ping-pong, slot split-K)


def launch_tcw(x2: torch.Tensor, w: GPTQWeight, block_m: int, split_k: int, stages: int, y: torch.Tensor,
               kind: str = "tcw") -> None:  # fmt: skip
    """y[M, N] = x2[M, K] @ W (CUDA, sm_90): x permuted once into the operand order, then the warp-specialized kernel.
    kind: "tcw" (ping-pong, slot split-K), "tcwn" (no ping-pong), "tcwx" (read-and-clear atomic split-K)."""
    xp = permute_x(x2, x_order(x2.shape[1], w.perm, x2.device) if w.perm is not None else None)
    pp, slots = KINDS[kind]
    grid, args, consts = tcw_args(xp, w, block_m, split_k, stages, y, pp, slots)
    _tcw_kernel[grid](*args, **consts, num_warps=4, maxnreg=MAXNREG)


__all__ = ["BLOCK_N", "KINDS", "launch_tcw", "slot_workspace", "tcw_args", "tcw_layouts", "tcw_supported"]
