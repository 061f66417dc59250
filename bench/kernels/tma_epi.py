"""What does the split-K epilogue cost, and what would a cheaper one cost? (helper H2, 2026-11-30, after the TMA
read floor: bench/kernels/tma_read.py). The v6 GEMV-grid read (n64, 16-row K tiles, 2 warps, every tile of a program
in flight) takes 7.6-7.8 us on the 7B up / down words and 9.1-9.2 us with the GEMV's split-K epilogue
(quant_common.store_tile: float atomics into a workspace, an acq_rel arrival counter, the last program reads and
clears with atomic exchanges and stores y). The same read here with other endings:
  rows   each split stores its own fp32 row (no reduction: the floor)
  tile   quant_common.store_tile (today's epilogue)
  red32  fire-and-forget fp32 atomic adds into the workspace only (no counter, no last program; the reduction's
         traffic without its dependent chain)
  red16  fp16 atomic adds straight into y (needs y zeroed first: "+memset" adds y.zero_() to the timed graph)
  red32+fin  red32, then a second small kernel (one program per 1024 columns) that converts the workspace to y and
         clears it (both kernels timed)
Usage: PYTHONPATH=workers:bench/kernels python3 bench/kernels/tma_epi.py {bench,report} --out DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl
from inlaid_worker.kernels.quant_common import store_tile, workspace

SHAPES = {"7B up 4096x11008": (4096, 11008), "7B down 11008x4096": (11008, 4096)}
MODES = ("rows", "tile", "red32", "red16", "red16+memset", "red32+fin")


@triton.jit
def _read_epi_kernel(qw_ptr, y_ptr, ws_ptr, cnt_ptr, N, ROWS, ITERS, OUTER, SPLIT_K, stride_qk,
                     MODE: tl.constexpr, BLOCK_N: tl.constexpr, R: tl.constexpr, U: tl.constexpr):  # fmt: skip
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_r = tl.arange(0, R)[:, None]
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    base = qw_ptr + offs_r * stride_qk + cols[None, :]
    r0 = pid_k * ITERS * R
    acc = tl.zeros((R, BLOCK_N), dtype=tl.int32)
    for j in range(0, OUTER):  # OUTER = cdiv(ITERS, U)
        for u in tl.static_range(U):
            it = j * U + u
            row = r0 + it * R
            acc ^= tl.load(base + row * stride_qk, mask=(row + offs_r < ROWS) & (it < ITERS), other=0)
    out = tl.sum(acc & 0xFF, axis=0).to(tl.float32)  # [BLOCK_N]
    mask = cols < N
    if MODE == 0:
        tl.store(ws_ptr + pid_k * N + cols, out, mask=mask)
    elif MODE == 1:
        store_tile(out, y_ptr + cols, ws_ptr + cols, mask, cnt_ptr, pid_n, SPLIT_K, True)
    elif MODE == 2:
        tl.atomic_add(ws_ptr + cols, out, mask=mask, sem="relaxed")
    else:
        tl.atomic_add(y_ptr + cols, out.to(tl.float16), mask=mask, sem="relaxed")


@triton.jit
def _finish_kernel(ws_ptr, y_ptr, N, BLOCK: tl.constexpr):
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < N
    tl.store(y_ptr + cols, tl.load(ws_ptr + cols, mask=mask).to(tl.float16), mask=mask)
    tl.store(ws_ptr + cols, tl.zeros((BLOCK,), tl.float32), mask=mask)


def launch(mode: str, qw: torch.Tensor, tiles: int, y: torch.Tensor, rows_buf: torch.Tensor) -> None:
    """The GEMV-grid read (n64, 16-row tiles, w2, `tiles` K tiles per program, all in flight) ending in `mode`."""
    rows, n = qw.shape
    ktiles = rows // 16
    split = -(-ktiles // tiles)
    iters = -(-ktiles // split)
    grid = (n // 64, -(-ktiles // iters))
    ws, cnt = workspace(qw.device, n, grid[0])
    if mode == "red16+memset":
        y.zero_()
    code = {"rows": 0, "tile": 1, "red32": 2, "red32+fin": 2, "red16": 3, "red16+memset": 3}[mode]
    _read_epi_kernel[grid](qw, y, rows_buf if code == 0 else ws, cnt, n, rows, iters, -(-iters // min(iters, 4)), grid[1], qw.stride(0),
                           MODE=code, BLOCK_N=64, R=16, U=min(iters, 4), num_warps=2, num_stages=1)  # fmt: skip
    if mode == "red32+fin":
        _finish_kernel[(triton.cdiv(n, 1024),)](ws, y, n, BLOCK=1024, num_warps=4)


def bench(out: Path) -> None:
    from bench_kernels import copies, time_rotated
    from device_common import bench_meta

    meta = bench_meta()
    rows = []
    for shape, (k, n) in SHAPES.items():
        qws = [torch.randint(-(2**31), 2**31 - 1, (k // 8, n), dtype=torch.int32, device="cuda")
               for _ in range(copies(k * n / 2))]  # fmt: skip
        y = torch.zeros(n, dtype=torch.float16, device="cuda")
        rows_buf = torch.empty(k // 128 * n, dtype=torch.float32, device="cuda")
        for tiles in (3, 4, 6):
            for mode in MODES:
                us = time_rotated([lambda q=q, m=mode: launch(m, q, tiles, y, rows_buf) for q in qws])
                rows.append(dict(shape=shape, tiles=tiles, splits=-(-(k // 128) // tiles), mode=mode, us=us,
                                 MB=k * n / 2 / 1e6))  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
        ws, cnt = workspace(qws[0].device, n, n // 64)
        rows.append(dict(shape=shape, clean=bool((cnt == 0).all())))  # store_tile leaves its counters at zero
        del qws
        torch.cuda.empty_cache()
    (out / "epi.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))


def report(out: Path, dest: Path, command: str, stem: str) -> None:
    from device_common import report_head, write_report

    b = json.loads((out / "epi.json").read_text())
    meta, rows = b["meta"], [r for r in b["rows"] if "us" in r]
    md = [f"# Split-K epilogue variants on the GEMV-grid read (helper H2), {meta.get('date', '')}", "",
          *report_head(meta, command), "",
          "us per call (CUDA graph over rotating copies of the words, > 3x L2, median of 10 replays); modes in "
          "bench/kernels/tma_epi.py's docstring; the GEMV grid is n64 x (K tiles / t) programs, 2 warps.", "",
          "| shape | t (splits) | " + " | ".join(MODES) + " |", "|---|---|" + "---|" * len(MODES)]  # fmt: skip
    for shape in SHAPES:
        for tiles in sorted({r["tiles"] for r in rows if r["shape"] == shape}):
            by = {r["mode"]: r for r in rows if r["shape"] == shape and r["tiles"] == tiles}
            splits = next(iter(by.values()))["splits"]
            md.append(f"| {shape} | {tiles} ({splits}) | " + " | ".join(f"{by[m]['us']:.2f}" if m in by else "-"
                                                                      for m in MODES) + " |")  # fmt: skip
    write_report(dest, stem, md, dict(meta=dict(meta, command=command), rows=b["rows"]))


def main() -> None:
    from device_common import device_parser, run_phase

    ap = device_parser(("bench",), "bash bench/kernels/tma_epi.sh", "kernels-2026-11-30-tma-epi")
    run_phase(ap, dict(bench=lambda a: bench(a.out)), report)


if __name__ == "__main__":
    sys.exit(main())
