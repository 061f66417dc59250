"""Gluon int4 g128 tensor-core GEMM for large M (64..512): kinds "tcl", "tclp", "tcls" (issue 4).

quant_tcg's kernels (small M) load x through registers and permute it into the operand's K order every tile,
one warpgroup per program, one synchronous wgmma per tile: at M >= 128 that dataflow is latency-bound (0.34-0.64x
bf16). Here the tile is a real GEMM tile: acc [BLOCK_N weight columns, BLOCK_M rows of x] (y^T = W^T x^T, wgmma
N = BLOCK_M up to 256), BLOCK_N / 16 warps (one warpgroup per 64 weight columns), so every weight word is loaded
and dequantized once per program and reused across all BLOCK_M rows. The weight stays quant_tcg's register A
operand ((q - z) * s in the operand: quant_tcg._operand with FULL_DEQUANT), x^T is the shared-memory B operand.

x is permuted ONCE per call into the operand's K order (permute_x; x_order: column j of xp is x[:, base(j)],
base = 128-tile start + quant_tcg.operand_rows, act-order composed in), so x and the words both stream through
one STAGES-deep cp.async ring (16-byte copies straight into the 128B-swizzled NVMMA layout, no per-tile permute).
launch_tcl takes `xp` (an already permuted x) to skip that pre-pass: model.llama_fast's TCSX_XP extended to tcl picks
(session 18; 4-bit without act-order, where the order is quant_tcsx's: the norm / silu_mul before the GEMM write it).
"tcl" builds each tile's operand right before its wgmma (PIPE 0); "tclp" builds the next one while the current
wgmma runs (PIPE 1: ptxas then serializes the 8 wgmmas of a tile, C7513); "tcls" (PIPE 2) builds the next one
under the current wgmma too, but stores it to shared memory (two buffers) so that the wgmma reads no registers.
Measured on the H200: "tcl" with 128x64 tiles and a 2-stage ring (168 registers, 72 KB: 3 programs per SM, which
overlap one another's dequantization and MMAs) wins at M >= 128; tclp / tcls lose (bench/kernels/NOTES.md "tcl").
3-bit weights (BITS = 3, fp16): quant_tcg._operand3 and x_order(..., bits=3) (always a gather).
Split-K partials: quant_tcg's self-cleaning read-and-clear epilogue. CUDA sm_90 only; under the interpreter the
plain-Triton twin quant_tc (kind "tcf") computes the same product.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia import hopper
from triton.experimental.gluon.language.nvidia.ampere import async_copy

from .gptq_packing import GPTQWeight
from .quant_common import bucket_workspace, split_iters
from .quant_tc3 import operand_rows3
from .quant_tcg import (
    BLOCK_K,
    _group_params,
    _operand,
    _operand3,
    layout_cache,
    operand_rows,
    store_acc,
    tcg_layouts,
    tcg_supported,
)

_BASE: dict[tuple[int, str, int], torch.Tensor] = {}


def x_order(k: int, perm: torch.Tensor | None, device: torch.device, bits: int = 4) -> torch.Tensor:
    """int64 [K]: the x column read by column j of the permuted x (operand order per 128-row tile, then perm);
    bits = 3: the 3-bit operand's order (quant_tc3.operand_rows3)."""
    key = (k, str(device), bits)
    base = _BASE.get(key)
    if base is None:
        if k % BLOCK_K:
            raise ValueError(f"K={k} is not a multiple of {BLOCK_K}")
        tiles = torch.arange(k // BLOCK_K).repeat_interleave(BLOCK_K) * BLOCK_K
        rows = operand_rows3() if bits == 3 else operand_rows()
        base = (tiles + rows.repeat(k // BLOCK_K)).to(device)
        _BASE[key] = base
    return base if perm is None else perm.long()[base]


@triton.jit
def _permute_x_kernel(x_ptr, idx_ptr, xp_ptr, M, stride_xm, stride_xk, stride_pm,
                      BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):  # fmt: skip
    """xp[m, j] = x[m, idx[j]] for one [BLOCK_M, BLOCK_K] block (plain Triton: one launch, 16-byte stores)."""
    offs_k = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    src = tl.load(idx_ptr + offs_k)
    mask = offs_m[:, None] < M
    v = tl.load(x_ptr + offs_m[:, None] * stride_xm + src[None, :] * stride_xk, mask=mask)
    tl.store(xp_ptr + offs_m[:, None] * stride_pm + offs_k[None, :], v, mask=mask)


@triton.jit
def _permute_tiles_kernel(x_ptr, xp_ptr, M, stride_xm, stride_xk, stride_pm, BLOCK_M: tl.constexpr):
    """xp = x in operand order without act-order: each [BLOCK_M, 128] tile loaded whole (16-byte loads) and its
    columns kk = 32t + 8wi + 4e + s moved to idx = 32wi + 8s + 2t + e in registers (quant_tcg's x reshape)."""
    offs_k = tl.program_id(0) * 128 + tl.arange(0, 128)
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask = offs_m[:, None] < M
    v = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk, mask=mask)
    v = tl.reshape(tl.permute(tl.reshape(v, [BLOCK_M, 4, 4, 2, 4]), [0, 2, 4, 1, 3]), [BLOCK_M, 128])
    tl.store(xp_ptr + offs_m[:, None] * stride_pm + offs_k[None, :], v, mask=mask)


def permute_x(x2: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
    """x2[:, idx] (idx = x_order(K, perm)) as a new contiguous tensor, K a multiple of 128: one small kernel, the
    register permute when idx is None (no act-order), a gather otherwise."""
    m, k = x2.shape
    xp = torch.empty(m, k, dtype=x2.dtype, device=x2.device)
    grid = (k // BLOCK_K, triton.cdiv(m, 32))
    if idx is None:
        _permute_tiles_kernel[grid](x2, xp, m, x2.stride(0), x2.stride(1), xp.stride(0), BLOCK_M=32, num_warps=4)
    else:
        _permute_x_kernel[grid](x2, idx, xp, m, x2.stride(0), x2.stride(1), xp.stride(0), BLOCK_M=32,
                                BLOCK_K=BLOCK_K, num_warps=4)  # fmt: skip
    return xp


@layout_cache
def tcl_layouts(block_n: int, block_m: int, warps: int) -> dict:
    """quant_tcg's layouts plus XCP: x's cp.async copies, 8 contiguous K values (16 bytes) per thread."""
    lay = tcg_layouts(block_n, block_m, warps)
    xcp = gl.BlockedLayout(size_per_thread=[1, 8], threads_per_warp=[2, 16], warps_per_cta=[warps, 1], order=[1, 0])
    return dict(MMA=lay["MMA"], DOT=lay["DOT"], L5=lay["L5"], L4=lay["L4"], XS=lay["XS"], CPL=lay["CPL"],
                WS=lay["WS"], D2=lay["D2"], XCP=xcp)  # fmt: skip


@gluon.jit
def _issue(x_smem, w_smem, slot, tile, x_ptr, qw_ptr, x_off, cp_off, cp_mask, stride_qk, BLOCK_K: gl.constexpr,
           BITS: gl.constexpr):  # fmt: skip
    """cp.async of K tile `tile` (x columns and weight words) into ring slot `slot`, one commit group."""
    async_copy.async_copy_global_to_shared(w_smem.index(slot), qw_ptr + tile * (BLOCK_K * BITS // 32) * stride_qk + cp_off,
                                           mask=cp_mask)  # fmt: skip
    async_copy.async_copy_global_to_shared(x_smem.index(slot), x_ptr + tile * BLOCK_K + x_off)
    async_copy.commit_group()


@gluon.jit
def _words(w_smem, slot, BLOCK_N: gl.constexpr, L4: gl.constexpr, D2: gl.constexpr):
    """One tile's words [BLOCK_N, wi, t] from the ring, in the A operand's layout."""
    p2 = w_smem.index(slot).load(D2)  # [16 rows, BLOCK_N], row = 4t + wi
    p0 = gl.permute(gl.reshape(p2, [4, 4, BLOCK_N]), [2, 1, 0])
    return gl.convert_layout(p0, gl.SliceLayout(2, L4), assert_trivial=True)


@gluon.jit
def _build(w_smem, slot, zm2, s, BLOCK_N: gl.constexpr, L4: gl.constexpr, D2: gl.constexpr, L5: gl.constexpr,
           DOT: gl.constexpr, dt: gl.constexpr, IS_BF16: gl.constexpr, BITS: gl.constexpr):  # fmt: skip
    """The (q - z) * s operand of the tile in ring slot `slot` (4-bit: quant_tcg._operand; 3-bit: _operand3)."""
    if BITS == 3:
        a = _operand3(_words(w_smem, slot, BLOCK_N, L4, D2), zm2, s, L5, DOT, dt, True)
    else:
        a = _operand(_words(w_smem, slot, BLOCK_N, L4, D2), zm2, s, L5, DOT, dt, True, IS_BF16)
    return a


@gluon.jit
def _tcl_kernel(
    x_ptr, qw_ptr, sc_ptr, qz_ptr, y_ptr, ws_ptr, cnt_ptr,
    M, N, K, ITERS, SPLIT_K,
    stride_xm, stride_qk, stride_qn, stride_sg, stride_sn, stride_zg, stride_zn, stride_ym, stride_yn,
    GROUP: gl.constexpr, SYM: gl.constexpr, ZERO_OFFSET: gl.constexpr, USE_SPLIT: gl.constexpr,
    IS_BF16: gl.constexpr, PIPE: gl.constexpr, STAGES: gl.constexpr, BLOCK_M: gl.constexpr,
    BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, BITS: gl.constexpr,
    MMA: gl.constexpr, DOT: gl.constexpr, L5: gl.constexpr, L4: gl.constexpr, XS: gl.constexpr, CPL: gl.constexpr,
    WS: gl.constexpr, D2: gl.constexpr, XCP: gl.constexpr,
):  # fmt: skip
    pid_n = gl.program_id(0)
    pid_k = gl.program_id(1)
    pid_m = gl.program_id(2)
    dt: gl.constexpr = x_ptr.dtype.element_ty
    ZL: gl.constexpr = gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(3, L4)))  # for [:, None, None, None]
    offs_nz = gl.minimum(pid_n * BLOCK_N + gl.arange(0, BLOCK_N, layout=ZL), N - 1)
    # x rows past M read row M-1 (never stored); columns past N: zero-filled words, never stored
    xm = gl.minimum(pid_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, XCP)), M - 1)
    xk = gl.arange(0, BLOCK_K, layout=gl.SliceLayout(0, XCP))
    x_off = xm[:, None] * stride_xm + xk[None, :]
    rr = gl.arange(0, BLOCK_K // 8, layout=gl.SliceLayout(1, CPL))
    cc = pid_n * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, CPL))
    if BITS == 3:  # ring row 4t + wi <- word 3t + wi of the tile; row 4t + 3 unused (zero-filled)
        cp_off = (3 * (rr // 4) + rr % 4)[:, None] * stride_qk + cc[None, :] * stride_qn
        cp_mask = (rr % 4 < 3)[:, None] & (cc < N)[None, :]
    else:
        cp_off = rr[:, None] * stride_qk + cc[None, :] * stride_qn
        cp_mask = (rr[:, None] >= 0) & (cc < N)[None, :]
    x_smem = gl.allocate_shared_memory(dt, [STAGES, BLOCK_M, BLOCK_K], XS)
    w_smem = gl.allocate_shared_memory(gl.int32, [STAGES, BLOCK_K // 8, BLOCK_N], WS)
    k_tiles = K // BLOCK_K
    t0 = pid_k * ITERS
    n_it = gl.minimum(ITERS, k_tiles - t0)  # the last split may hold fewer tiles
    for i in gl.static_range(STAGES - 1):
        _issue(x_smem, w_smem, i, gl.minimum(t0 + i, k_tiles - 1), x_ptr, qw_ptr, x_off, cp_off, cp_mask, stride_qk,
               BLOCK_K, BITS)  # fmt: skip
    acc = gl.zeros((BLOCK_N, BLOCK_M), gl.float32, layout=MMA)
    zm2, s = _group_params(sc_ptr, qz_ptr, (t0 * BLOCK_K) // GROUP, offs_nz, offs_nz < N, stride_sg, stride_sn,
                           stride_zg, stride_zn, SYM, ZERO_OFFSET, IS_BF16, BITS)  # fmt: skip
    if PIPE == 2:  # the operand goes through shared memory (two buffers): wgmma reads no register operand
        a_smem = gl.allocate_shared_memory(dt, [2, BLOCK_N, BLOCK_K], XS)
    if PIPE > 0:  # operand of tile 0 before the loop; each iteration builds the next one under its wgmma
        async_copy.wait_group(STAGES - 2)
        gl.thread_barrier()
        a = _build(w_smem, 0, zm2, s, BLOCK_N, L4, D2, L5, DOT, dt, IS_BF16, BITS)
        if PIPE == 2:
            a_smem.index(0).store(a)
    for it in range(0, n_it):
        if PIPE > 0:
            async_copy.wait_group(STAGES - 3)  # tiles it and it + 1 have landed (this thread's copies)
        else:
            async_copy.wait_group(STAGES - 2)  # tile it has landed
        hopper.fence_async_shared()
        gl.thread_barrier()  # everyone's copies are visible; everyone's wgmma of tile it - 1 is done
        _issue(x_smem, w_smem, (it + STAGES - 1) % STAGES, gl.minimum(t0 + it + STAGES - 1, k_tiles - 1), x_ptr,
               qw_ptr, x_off, cp_off, cp_mask, stride_qk, BLOCK_K, BITS)  # fmt: skip
        tn = gl.minimum(t0 + it + 1, k_tiles - 1)
        if PIPE == 2:
            tok = hopper.warpgroup_mma(a_smem.index(it % 2), x_smem.index(it % STAGES).permute((1, 0)), acc,
                                       is_async=True)  # fmt: skip
            zm2, s = _group_params(sc_ptr, qz_ptr, (tn * BLOCK_K) // GROUP, offs_nz, offs_nz < N, stride_sg,
                                   stride_sn, stride_zg, stride_zn, SYM, ZERO_OFFSET, IS_BF16, BITS)  # fmt: skip
            a = _build(w_smem, (it + 1) % STAGES, zm2, s, BLOCK_N, L4, D2, L5, DOT, dt, IS_BF16, BITS)
            a_smem.index((it + 1) % 2).store(a)  # its last reader, the wgmma of tile it - 1, is done
            acc = hopper.warpgroup_mma_wait(0, deps=[tok])
        elif PIPE == 1:
            tok = hopper.warpgroup_mma(a, x_smem.index(it % STAGES).permute((1, 0)), acc, is_async=True)
            zm2, s = _group_params(sc_ptr, qz_ptr, (tn * BLOCK_K) // GROUP, offs_nz, offs_nz < N, stride_sg,
                                   stride_sn, stride_zg, stride_zn, SYM, ZERO_OFFSET, IS_BF16, BITS)  # fmt: skip
            a_n = _build(w_smem, (it + 1) % STAGES, zm2, s, BLOCK_N, L4, D2, L5, DOT, dt, IS_BF16, BITS)
            acc, a = hopper.warpgroup_mma_wait(0, deps=[tok, a])  # a stays live until the wgmma is done
            a = a_n
        else:
            a = _build(w_smem, it % STAGES, zm2, s, BLOCK_N, L4, D2, L5, DOT, dt, IS_BF16, BITS)
            tok = hopper.warpgroup_mma(a, x_smem.index(it % STAGES).permute((1, 0)), acc, is_async=True)
            zm2, s = _group_params(sc_ptr, qz_ptr, (tn * BLOCK_K) // GROUP, offs_nz, offs_nz < N, stride_sg,
                                   stride_sn, stride_zg, stride_zn, SYM, ZERO_OFFSET, IS_BF16, BITS)  # fmt: skip
            acc = hopper.warpgroup_mma_wait(0, deps=[tok])
    async_copy.wait_group(0)

    store_acc(acc, pid_m, pid_n, M, N, y_ptr, stride_ym, stride_yn, ws_ptr, cnt_ptr, SPLIT_K, USE_SPLIT, BLOCK_M,
              BLOCK_N, MMA)  # fmt: skip


def tcl_args(xp: torch.Tensor, w: GPTQWeight, block_m: int, block_n: int, split_k: int, warps: int, stages: int,
             pipe: int, y: torch.Tensor) -> tuple[tuple, tuple, dict]:  # fmt: skip
    """(grid, positional args, constexpr kwargs) of one launch on the already permuted xp; shared with the
    offline sm_90 build (bench/kernels/sass_tcl.py)."""
    m, k = xp.shape
    if not tcg_supported(w, k, xp.dtype):
        raise ValueError(f"the large-M tensor-core kernel needs 4-bit (or fp16 3-bit) weights, K and group multiples "
                         f"of {BLOCK_K}")  # fmt: skip
    if stages < (3 if pipe else 2):
        raise ValueError(f"stages={stages} is too shallow (tcl needs 2, tclp and tcls 3)")
    n = w.out_features
    iters, split = split_iters(k // BLOCK_K, split_k)
    grid = (triton.cdiv(n, block_n), split, triton.cdiv(m, block_m))
    ws, cnt = bucket_workspace(xp.device, m, n, grid[0], block_m) if split > 1 else (y, y)
    args = (
        xp, w.qweight, w.scales, w.qzeros, y, ws, cnt,
        m, n, k, iters, split,
        xp.stride(0), w.qweight.stride(0), w.qweight.stride(1),
        w.scales.stride(0), w.scales.stride(1), w.qzeros.stride(0), w.qzeros.stride(1),
        y.stride(0), y.stride(1),
    )  # fmt: skip
    consts = dict(GROUP=w.group_size, SYM=w.sym, ZERO_OFFSET=w.zero_offset, USE_SPLIT=split > 1,
                  IS_BF16=xp.dtype == torch.bfloat16, PIPE=pipe, STAGES=stages, BLOCK_M=block_m, BLOCK_N=block_n,
                  BLOCK_K=BLOCK_K, BITS=w.bits, **tcl_layouts(block_n, block_m, warps))  # fmt: skip
    return grid, args, consts


def tcl_permute(x2: torch.Tensor, w: GPTQWeight) -> torch.Tensor:
    """The pre-pass: x2 in w's operand K order, act-order composed in (permute_x; one launch). quant_tcsx's pre-pass
    too (quant_tcsx.tcsx_permute is this function: the 4-bit order is the same). For 4-bit weights without act-order
    fused_norm.add_rms_norm(operand=True) and silu_mul(operand=True) write this order directly (model.llama_fast's
    TCSX_XP); quant_matmul.natural_x inverts it."""
    if w.bits == 3:  # the 3-bit operand order is a gather (act-order composed in)
        return permute_x(x2, x_order(x2.shape[1], w.perm, x2.device, 3))
    return permute_x(x2, x_order(x2.shape[1], w.perm, x2.device) if w.perm is not None else None)


def launch_tcl(x2: torch.Tensor | None, w: GPTQWeight, block_m: int, block_n: int, split_k: int, num_warps: int,
               stages: int, pipe: int, y: torch.Tensor, xp: torch.Tensor | None = None) -> None:  # fmt: skip
    """y[M, N] = x2[M, K] @ W (CUDA, sm_90): x permuted once into the operand order (tcl_permute), then the tile
    kernel. xp (x2 may then be None): x already in that order (= tcl_permute(x2, w), row-major with 16-byte rows: the
    cp.async copies), so no pre-pass."""
    if xp is None:
        if x2 is None:
            raise ValueError("launch_tcl: x2 or xp is needed")
        xp = tcl_permute(x2, w)
    elif xp.stride(1) != 1 or (xp.stride(0) * xp.element_size()) % 16 or xp.data_ptr() % 16:
        raise ValueError("launch_tcl: xp must be row-major with 16-byte aligned rows (cp.async)")
    grid, args, consts = tcl_args(xp, w, block_m, block_n, split_k, num_warps, stages, pipe, y)
    _tcl_kernel[grid](*args, **consts, num_warps=num_warps)


__all__ = ["launch_tcl", "permute_x", "tcl_args", "tcl_layouts", "tcl_permute", "x_order"]
