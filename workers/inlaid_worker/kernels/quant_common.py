"""Pieces shared by the weight-only GEMM kernels: exact magic-number unpacking and the split-K epilogue.

Magic numbers: OR-ing a small integer placed at bit `s` (s <= 20) into the mantissa of 2^23 gives the fp32
number 2^23 + v*2^s exactly, so one LOP3 (and+or) and one FFMA (times 2^-s, minus 2^(23-s)) turn a packed
field into an exact fp32 value, with no I2F (a quarter-rate instruction) and no shift.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import triton
import triton.language as tl

from .pdl import gdc_start, gdc_wait, launch_kw

if TYPE_CHECKING:
    from .gptq_packing import GPTQWeight


@triton.jit
def field_f32(word, SHIFT: tl.constexpr, MASK: tl.constexpr):
    """float((word >> SHIFT) & MASK) for SHIFT + bit-width <= 23, exact: one LOP3 + one FFMA."""
    f = ((word & (MASK << SHIFT)) | 0x4B000000).to(tl.float32, bitcast=True)
    return f * (1.0 / (1 << SHIFT)) - (8388608.0 / (1 << SHIFT))


@triton.jit
def int_f32(v):
    """float(v) for 0 <= v < 2^23, exact, without I2F."""
    return (v | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0


@triton.jit
def load_zeros(qz_ptr, g, offs_n, mask_n, stride_zg, stride_zn, ZW, BITS: tl.constexpr):
    """Stored zero points of group g for columns offs_n, as int32 [BLOCK_N] (a bit stream along N)."""
    bit = offs_n * BITS
    word = bit // 32
    sh = (bit % 32).to(tl.uint32)
    lo = tl.load(qz_ptr + g * stride_zg + word * stride_zn, mask=mask_n, other=0).to(tl.uint32, bitcast=True)
    if BITS == 3:
        hi_mask = mask_n & ((bit % 32) > 29) & (word + 1 < ZW)
        hi = tl.load(qz_ptr + g * stride_zg + (word + 1) * stride_zn, mask=hi_mask, other=0)
        lo = (lo >> sh) | (hi.to(tl.uint32, bitcast=True) << ((32 - sh) & 31))
        return (lo & 0x7).to(tl.int32)
    return ((lo >> sh) & ((1 << BITS) - 1)).to(tl.int32)


@triton.jit
def group_zero(qz_ptr, g, offs_n, mask_n, stride_zg, stride_zn, ZW,
               BITS: tl.constexpr, SYM: tl.constexpr, ZERO_OFFSET: tl.constexpr, BLOCK_N: tl.constexpr):  # fmt: skip
    """Effective zero point (stored + offset) of group g as fp32 [BLOCK_N]."""
    if SYM:
        z = tl.full((BLOCK_N,), 2 ** (BITS - 1), tl.float32)
    else:
        z = int_f32(load_zeros(qz_ptr, g, offs_n, mask_n, stride_zg, stride_zn, ZW, BITS)) + ZERO_OFFSET
    return z


# Split-K epilogue. The last program to arrive reads each partial sum and clears it with ONE atomic exchange:
# in v3 it loaded the workspace and then stored zeros, and where Triton gave the load and the store different
# register layouts (the tensor-core kernels: the accumulator's MMA layout vs a coalesced load), one thread
# could clear an element before another thread had read it; the lost partials showed as the intermittent
# int4 M=4 error (rel err 4e-2..8e-2, H200 only; bench/kernels/NOTES.md v4).


@triton.jit
def store_tile(acc, y_ptrs, ws_ptrs, mask, cnt_ptr, tile, SPLIT_K, USE_SPLIT: tl.constexpr):
    """Store an fp32 tile; with split-K the partials meet in a workspace and the last program stores.

    The workspace and the arrival counter are left zeroed again (self-cleaning), so no memset launch.
    """
    if USE_SPLIT:
        tl.atomic_add(ws_ptrs, acc, mask=mask, sem="relaxed")
        tl.debug_barrier()
        arrived = tl.atomic_add(cnt_ptr + tile, 1, sem="acq_rel")
        if arrived == SPLIT_K - 1:
            bits = tl.atomic_xchg(ws_ptrs.to(tl.pointer_type(tl.int32)), tl.zeros(acc.shape, tl.int32), mask=mask,
                                  sem="relaxed")  # read + clear in one op (as int32: the interpreter's xchg is int-only)
            total = bits.to(tl.float32, bitcast=True)
            tl.store(y_ptrs, total.to(y_ptrs.dtype.element_ty), mask=mask)
            tl.store(cnt_ptr + tile, 0)
    else:
        tl.store(y_ptrs, acc.to(y_ptrs.dtype.element_ty), mask=mask)


# Finish epilogue (session 8, the GEMV kinds ending in "f"): every split adds its partial sums into the workspace with
# fire-and-forget fp32 atomics (red_tile: no arrival counter, no last program waiting on two L2 round trips), and a
# second small kernel (finish_rows, PDL-aware) converts the workspace to y and clears it once the GEMV has completed.
# The workspace is left zeroed as with store_tile; the counters are not touched.


@triton.jit
def red_tile(acc, ws_ptrs, mask):
    """A split's partial sums added into the workspace (no return value is used: compiled to RED, not ATOM)."""
    tl.atomic_add(ws_ptrs, acc, mask=mask, sem="relaxed")


@triton.jit
def _finish_kernel(ws_ptr, y_ptr, N, stride_ym, stride_yn, USE_GDC: tl.constexpr, BLOCK: tl.constexpr):
    """y[m, cols] = ws[m * N + cols] (fp32 -> y's dtype), then ws cleared; programs (column block, row m)."""
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = tl.program_id(1)
    mask = cols < N
    gdc_start(USE_GDC)
    gdc_wait(USE_GDC)  # the GEMV's partial sums are complete and visible only after it
    ptrs = (ws_ptr + m * N + cols).to(tl.pointer_type(tl.int32))
    # read + clear in ONE atomic exchange per element. A load followed by a store of zeros is NOT safe even with the
    # same pointer tensor: Triton's coalescing gave the load 8 elements per thread (to match the fp16 store of y) and
    # the zero store 4, so a thread cleared partial sums another thread had not read yet (seen on the H200: relative
    # errors 0.1-0.5 in ~70% of runs, workspace clean afterwards: the v3 race again, see store_tile's note)
    bits = tl.atomic_xchg(ptrs, tl.zeros((BLOCK,), tl.int32), mask=mask, sem="relaxed")
    total = bits.to(tl.float32, bitcast=True)
    tl.store(y_ptr + m * stride_ym + cols * stride_yn, total.to(y_ptr.dtype.element_ty), mask=mask)


FINISH_BLOCK = 1024


def finish_rows(ws: torch.Tensor, y: torch.Tensor) -> None:
    """The finish kernel of the "f" GEMVs: y [M, N] from the workspace's first M * N sums, which it clears."""
    m, n = y.shape
    _finish_kernel[(triton.cdiv(n, FINISH_BLOCK), m)](ws, y, n, y.stride(0), y.stride(1), BLOCK=FINISH_BLOCK,
                                                       num_warps=4, **launch_kw())  # fmt: skip


def m_bucket(m: int) -> int:
    """Rows are tuned per power-of-two bucket (1, 2, 4, ..., 256, then 512 for everything larger)."""
    return min(triton.next_power_of_2(max(m, 1)), 512)


def workspace_rows(m: int) -> int:
    """Rows a split-K launch sizes its workspace (partials and counters) for: M's tuning bucket (m_bucket), M itself
    above 512. The workspaces grow by replacement and decode graphs keep every captured one alive, so sizing by M
    pinned one buffer per decode batch bucket inside a tuning bucket (24 / 32, 48 / 64, 80 / 96 / 128, 160 .. 256);
    sized by the bucket, the first capture of a tuning bucket makes the buffer its later ones reuse. The kernels index
    only their own M rows of it."""
    return max(m, m_bucket(m))


def cached_buffer(numel: int, dtype: torch.dtype, device: torch.device, zero: bool = True) -> torch.Tensor:
    """A buffer for a process-wide cache (the workspaces and sums regions below): a normal tensor even when first asked
    for under torch.inference_mode, so that code outside inference mode (an eager forward, a test, the zeroing on an
    error path) may still update it in place; an inference tensor would refuse that ("Inplace update to inference
    tensor outside InferenceMode")."""
    with torch.inference_mode(False):
        return (torch.zeros if zero else torch.empty)(numel, dtype=dtype, device=device)


_WORKSPACES: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def workspace(device: torch.device, elems: int, tiles: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zeroed fp32 partial sums and int32 arrival counters, shared by every split-K GEMV on the device.

    Contract: each GEMV finds them zero, and they are zero again once that GEMV and its consumer have run. A GEMV with
    its own finish (the counter epilogue, store_tile; or finish_rows, the "f" kinds) zeroes them itself. A deferred
    GEMV (quant_hgemvr's or quant_tcs's `defer`: the "cfin" decode fusion) leaves y's fp32 sums in the first M * N
    values until its consumer, fused_norm.add_rms_norm_sums, reads and zeroes them: no other split-K GEMV may run in
    between, and consumer_finish.gemv_add_norm checks the norm's arguments before launching the GEMV and zeroes the
    sums if anything raises after it. The qkv GEMV's deferred sums (the "+q" fusion) go to qkv_sums's region instead, not here, and
    the gate/up GEMV's (the "+g" fusion) to gate_up_sums's."""
    ws, cnt = _WORKSPACES.get(device, (None, None))
    if ws is None or ws.numel() < elems or cnt is None or cnt.numel() < tiles:
        size = max(elems, 0 if ws is None else ws.numel())
        ntiles = max(tiles, 0 if cnt is None else cnt.numel())
        ws = cached_buffer(size, torch.float32, device)
        cnt = cached_buffer(ntiles, torch.int32, device)
        _WORKSPACES[device] = (ws, cnt)
    return ws, cnt


def bucket_sizes(m: int, n: int, col_tiles: int, block_m: int, planes: int = 1) -> tuple[int, int]:
    """(fp32 elements, int32 counters) a split-K launch at M rows asks of its workspace: planes x workspace_rows(m) x N
    partials and, for each of the bucket's row blocks of block_m, col_tiles counters (the launch's column tiles, times
    its consumer warpgroups where each counts its own). Every launch sizes its workspace here, so all M of a tuning
    bucket ask for the same buffers (sized by M, each decode graph of the bucket would pin its own)."""
    rows = workspace_rows(m)
    return planes * rows * n, col_tiles * triton.cdiv(rows, block_m)


Workspace = Callable[[torch.device, int, int], tuple[torch.Tensor, torch.Tensor]]


def bucket_workspace(device: torch.device, m: int, n: int, col_tiles: int, block_m: int, *, planes: int = 1,
                     alloc: Workspace = workspace) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(partials, counters) of a split-K launch, sized by bucket_sizes. alloc: workspace (zeroed, read-and-clear) or
    quant_tcw.slot_workspace (per-split fp32 slots: planes = the splits)."""
    return alloc(device, *bucket_sizes(m, n, col_tiles, block_m, planes))


# The qkv GEMV's deferred sums (the "+q" decode fusion, kernels.consumer_finish.gemv_sums): a region of their own, apart
# from the workspace above that the o / down / gate-up GEMVs share, since it is read by every program of the row
# attention and can only be cleared a kernel later (the add + RMSNorm after o: fused_norm's `clear`).
_QKV_SUMS: dict[torch.device, torch.Tensor] = {}


def qkv_sums(device: torch.device, elems: int) -> torch.Tensor:
    """Zeroed fp32 sums of at least elems values for the qkv GEMV; its readers' clearing kernel leaves them zeroed.
    Replaced by a bigger one when a larger call needs it (model.decode_graphs keeps the captured one alive).

    Contract: zero whenever a qkv GEMV starts. The deferred qkv GEMV (consumer_finish.gemv_sums) leaves its sums here
    through the row attention (which reads them) until the add + RMSNorm after the o GEMV zeroes them (fused_norm's
    `clear`, via consumer_finish.gemv_add_norm or add_rms_norm), so every layer's qkv GEMV needs that norm before the
    next layer's; gemv_add_norm zeroes the region if it raises."""
    return _region(_QKV_SUMS, device, elems)


def _region(regions: dict[torch.device, torch.Tensor], device: torch.device, elems: int) -> torch.Tensor:
    """regions[device]: zeroed fp32 of at least elems values, replaced by a bigger zeroed one when elems outgrows it."""
    ws = regions.get(device)
    if ws is None or ws.numel() < elems:
        ws = cached_buffer(max(elems, 0 if ws is None else ws.numel()), torch.float32, device)
        regions[device] = ws
    return ws


# The gate/up GEMV's deferred sums (the "+g" decode fusion, kernels.consumer_finish.gemv_gu_sums): a region of their
# own as well, since the down GEMV (which adds its own sums into the workspace above) reads them as its x, and every
# down program reads its K slice of them, so they can only be cleared a kernel later (the add + RMSNorm after down).
_GU_SUMS: dict[torch.device, torch.Tensor] = {}


def gate_up_sums(device: torch.device, elems: int) -> torch.Tensor:
    """Zeroed fp32 sums of at least elems values for the gate/up GEMV; the clearing norm leaves them zeroed. Replaced by
    a bigger one when a larger call needs it (model.decode_graphs keeps the captured one alive).

    Contract: zero whenever a gate/up GEMV starts. The deferred gate/up GEMV (consumer_finish.gemv_gu_sums) leaves
    its sums here; the down GEMV reads them (quant_hgemvr's x_sums) and the add + RMSNorm after it zeroes them
    (fused_norm's `clear`, via consumer_finish.gu_down_add_norm), which zeroes the region if it raises; nothing runs
    between the two GEMVs (model.llama_fast._mlp calls gu_down_add_norm right after gemv_gu_sums)."""
    return _region(_GU_SUMS, device, elems)


def split_iters(k_tiles: int, split_k: int) -> tuple[int, int]:
    """(iterations per program, programs along K) for k_tiles tiles asked to split split_k ways."""
    split = max(1, min(split_k, k_tiles))
    iters = triton.cdiv(k_tiles, split)
    return iters, triton.cdiv(k_tiles, iters)


def split_launch(x2: torch.Tensor, w: GPTQWeight, y: torch.Tensor, block_m: int, block_n: int, block_k: int,
                 split_k: int) -> tuple[tuple[int, int, int], tuple, dict]:  # fmt: skip
    """Grid, positional arguments and common constexprs of a split-K weight-only kernel (gemv, hgemv, mma, tc).

    The kernels share one argument list: x, qweight, scales, qzeros, perm, y, workspace, counters, M, N, K, ZW,
    ITERS, SPLIT_K, then the strides of x (m, k), qweight, scales, qzeros and y; the grid is (N tiles, K splits,
    M tiles). Each launch shell adds its own constexprs (tile sizes, kernel-specific switches)."""
    m, k = x2.shape
    n = w.out_features
    iters, split = split_iters(k // block_k, split_k)
    grid = (triton.cdiv(n, block_n), split, triton.cdiv(m, block_m))
    ws, cnt = bucket_workspace(x2.device, m, n, grid[0], block_m) if split > 1 else (y, y)
    perm = w.perm if w.perm is not None else w.qweight
    args = (x2, w.qweight, w.scales, w.qzeros, perm, y, ws, cnt, m, n, k, w.qzeros.shape[1], iters, split,
            x2.stride(0), x2.stride(1), w.qweight.stride(0), w.qweight.stride(1), w.scales.stride(0),
            w.scales.stride(1), w.qzeros.stride(0), w.qzeros.stride(1), y.stride(0), y.stride(1))  # fmt: skip
    consts = dict(GROUP=w.group_size, SYM=w.sym, ZERO_OFFSET=w.zero_offset, HAS_PERM=w.perm is not None,
                  USE_SPLIT=split > 1)  # fmt: skip
    return grid, args, consts
