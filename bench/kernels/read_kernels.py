"""Pure-read kernels for the v6 floor sweep (bench/kernels/gemv_floor.py --sweep): how fast can a kernel read
the int4 GEMV's packed words, by layout, tile, grid and loads in flight? Each kernel XORs what it reads into
registers and writes one int per column (or per program), so nothing is optimized away.

  read2d  the GEMV's shape: program (pid_n, pid_k) reads rows [pid_k*ITERS*R, ...) of an N tile, R rows per
          load, U loads issued before any is used. Standard layout: stride_qk = N, stride_qt = BLOCK_N.
          Tile-major layout (tile_major below): stride_qk = BLOCK_N, stride_qt = ROWS * BLOCK_N, so the
          program's whole K range is one contiguous run of ITERS * R * BLOCK_N words.
  read1d  a flat read of the same bytes, BLOCK words per load, U loads in flight; CONTIG: each program reads
          its own contiguous range; else chunks interleave across programs (grid-stride, persistent grid).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from inlaid_worker.kernels.quant_common import store_tile, workspace


@triton.jit
def read2d_kernel(qw_ptr, out_ptr, N, ROWS, ITERS, OUTER, stride_qk, stride_qt, y_ptr, ws_ptr, cnt_ptr, SPLIT_K,
                  BLOCK_N: tl.constexpr, R: tl.constexpr, U: tl.constexpr, EP: tl.constexpr):  # fmt: skip
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_r = tl.arange(0, R)[:, None]
    base = qw_ptr + pid_n * stride_qt + offs_r * stride_qk + tl.arange(0, BLOCK_N)[None, :]
    r0 = pid_k * ITERS * R
    acc = tl.zeros((R, BLOCK_N), dtype=tl.int32)
    for j in range(0, OUTER):  # OUTER = cdiv(ITERS, U)
        for u in tl.static_range(U):
            it = j * U + u
            row = r0 + it * R
            acc ^= tl.load(base + row * stride_qk, mask=(row + offs_r < ROWS) & (it < ITERS), other=0)
    out = tl.sum(acc & 0xFF, axis=0)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if EP:  # the GEMV's split-K epilogue (atomics into a workspace, arrival counter, last program stores y)
        store_tile(out.to(tl.float32), y_ptr + cols, ws_ptr + cols, cols < N, cnt_ptr, pid_n, SPLIT_K, True)
    else:
        tl.store(out_ptr + pid_k * N + cols, out)


@triton.jit
def read1d_kernel(src_ptr, out_ptr, NWORDS, CHUNKS, OUTER, BLOCK: tl.constexpr, U: tl.constexpr, CONTIG: tl.constexpr):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    offs = tl.arange(0, BLOCK)
    acc = tl.zeros((BLOCK,), dtype=tl.int32)
    for j in range(0, OUTER):  # OUTER = cdiv(CHUNKS, U)
        for u in tl.static_range(U):
            c = j * U + u
            if CONTIG:
                chunk = pid * CHUNKS + c
            else:
                chunk = c * nprog + pid
            idx = chunk.to(tl.int64) * BLOCK + offs
            acc ^= tl.load(src_ptr + idx, mask=(idx < NWORDS) & (c < CHUNKS), other=0)
    tl.store(out_ptr + pid, tl.sum(acc & 0xFF, axis=0))


def tile_major(qweight: torch.Tensor, block_n: int, r: int) -> torch.Tensor:
    """[ROWS, N] words -> flat [N / block_n, ROWS / r, r, block_n]: each (N tile, row tile) block contiguous,
    and an N tile's row tiles one after another (so a split's K range is contiguous too)."""
    rows, n = qweight.shape
    return qweight.view(rows // r, r, n // block_n, block_n).permute(2, 0, 1, 3).contiguous().view(-1)


def launch_read2d(qw: torch.Tensor, rows: int, n: int, block_n: int, r: int, split: int, u: int, warps: int,
                  tiled: bool, out: torch.Tensor, y: torch.Tensor | None = None) -> None:  # fmt: skip
    """qw: the [rows, n] words (tiled=False) or their tile_major(block_n, r) copy (tiled=True). y (fp16 [n]):
    end with the GEMV's split-K epilogue into y instead of one plain row per split."""
    tiles = triton.cdiv(rows, r)
    iters = triton.cdiv(tiles, split)
    split = triton.cdiv(tiles, iters)
    sqk, sqt = (block_n, rows * block_n) if tiled else (n, block_n)
    ws, cnt = workspace(qw.device, n, n // block_n) if y is not None else (out, out)
    read2d_kernel[(n // block_n, split)](qw, out, n, rows, iters, triton.cdiv(iters, u), sqk, sqt,
                                         out if y is None else y, ws, cnt, split, BLOCK_N=block_n, R=r, U=u,
                                         EP=y is not None, num_warps=warps, num_stages=1)  # fmt: skip


def launch_read1d(src: torch.Tensor, block: int, programs: int, u: int, warps: int, contig: bool,
                  out: torch.Tensor) -> None:  # fmt: skip
    nwords = src.numel()
    chunks = triton.cdiv(triton.cdiv(nwords, block), programs)
    read1d_kernel[(programs,)](src, out, nwords, chunks, triton.cdiv(chunks, u), BLOCK=block, U=u, CONTIG=contig, num_warps=warps,
                               num_stages=1)  # fmt: skip
