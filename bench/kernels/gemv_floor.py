"""Where the small-M GEMV's time goes (v5 follow-up): floors measured in the same harness as gemv_h200.py.

For each 7B MLP shape, timed as CUDA graphs over rotating weight copies (bench_kernels.time_rotated):
  empty      one-program Triton kernel that stores one float: the graph's per-kernel floor;
  stream     the GEMV's own grid and tiles reading the same packed words (XOR into registers), no dequant and
             no split-K reduction (each split writes its own row): the best a kernel shaped like the GEMV can do;
  stream+ep  the same with the GEMV's split-K epilogue (quant_common.store_tile: atomics, counter, exchange);
  tiled      "stream" over a copy of the words stored tile-major (each program's [K tile, N tile] blocks
             contiguous, in loop order): does a contiguous read pattern move the floor? (not measured yet)
  v4, v5     the half2 GEMV configs the v5 run picked (bench/results/kernels-2026-11-29-v5.json), re-timed.
Usage: PYTHONPATH=workers:bench/kernels python3 bench/kernels/gemv_floor.py --out DIR [--results JSON]

--sweep (v6): pure-read kernels (bench/kernels/read_kernels.py) over the up / down words: standard vs tile-major
layout, N tile and warps, programs (split-K), loads in flight (U), flat 1D reads (persistent, interleaved or
contiguous per program), torch's copy and sum of the same words; `--phase compile --shard i --shards S` only
compiles (run several in parallel first), `--phase time` times everything and writes sweep.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from pathlib import Path

import torch
import triton
import triton.language as tl
from bench_kernels import copies, copy_bandwidth, gptq_bytes, time_rotated
from gemv_h200 import SHAPES, make_weight
from inlaid_worker.kernels.quant_common import split_iters, store_tile, workspace
from inlaid_worker.kernels.quant_matmul import launch_quant_matmul
from inlaid_worker.kernels.quant_matmul_config import QMMConfig

DEVICE = os.environ.get("GEMV_DEVICE", "cuda")


@triton.jit
def _empty_kernel(out_ptr):
    tl.store(out_ptr, 1.0)


@triton.jit
def _stream_kernel(qw_ptr, y_ptr, ws_ptr, cnt_ptr, N, ROWS, ITERS, SPLIT_K, stride_qk,
                   EPILOGUE: tl.constexpr, TILED: tl.constexpr, BLOCK_N: tl.constexpr, R: tl.constexpr):  # fmt: skip
    """Read this program's [ITERS * R, BLOCK_N] slice of the packed words; write one float per column.
    TILED: the words are stored as tile_major() lays them out (ROWS and N multiples of R and BLOCK_N)."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
    offs_r = tl.arange(0, R)[:, None]
    mask_n = offs_n < N
    r0 = pid_k * ITERS * R
    acc = tl.zeros((R, BLOCK_N), dtype=tl.int32)
    for it in range(0, ITERS):
        rows = r0 + it * R + offs_r
        if TILED:  # block (pid_n, row tile) is R * BLOCK_N contiguous words
            ptrs = qw_ptr + (pid_n * ROWS + rows) * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
        else:
            ptrs = qw_ptr + rows * stride_qk + offs_n
        acc ^= tl.load(ptrs, mask=mask_n & (rows < ROWS), other=0)
    out = tl.sum((acc & 0xFF).to(tl.float32), axis=0, keep_dims=True)  # [1, BLOCK_N]
    if EPILOGUE:  # the GEMV's split-K reduction into y (fp16), workspace and counters left clean
        store_tile(out, y_ptr + offs_n, ws_ptr + offs_n, mask_n, cnt_ptr, pid_n, SPLIT_K, True)
    else:  # every split writes its own row of an fp32 [SPLIT_K, N] buffer
        tl.store(ws_ptr + pid_k * N + offs_n, out, mask=mask_n)


def tile_major(qweight: torch.Tensor, block_n: int, r: int) -> torch.Tensor:
    """[ROWS, N] words -> flat [N / block_n, ROWS / r, r, block_n]: each (N tile, row tile) block contiguous."""
    rows, n = qweight.shape
    return qweight.view(rows // r, r, n // block_n, block_n).permute(2, 0, 1, 3).contiguous().view(-1)


def stream(qweight: torch.Tensor, cfg: QMMConfig, epilogue: bool, y: torch.Tensor, rows_out: torch.Tensor,
           tiled: torch.Tensor | None = None) -> None:  # fmt: skip
    """The GEMV's grid for cfg (N tiles x K splits), reading the same words (or their tile_major copy)."""
    rows, n = qweight.shape
    r = cfg.block_k // 8
    iters, split = split_iters(rows // r, cfg.split_k)
    grid = (triton.cdiv(n, cfg.block_n), split)
    ws, cnt = workspace(qweight.device, n, grid[0]) if epilogue else (rows_out, rows_out)
    src = qweight if tiled is None else tiled
    _stream_kernel[grid](src, y, ws, cnt, n, rows, iters, split, qweight.stride(0), EPILOGUE=epilogue,
                         TILED=tiled is not None, BLOCK_N=cfg.block_n, R=r, num_warps=cfg.num_warps, num_stages=1)  # fmt: skip


def picks(results: Path) -> dict[tuple[str, int], dict[str, str]]:
    """(shape, M) -> {"v4": cfg repr, "v5": cfg repr} from a gemv_h200.py report."""
    rows = json.loads(results.read_text())["bench"]
    return {(r["shape"], r["M"]): {g: r[f"{g}_cfg"] for g in ("v4", "v5") if f"{g}_cfg" in r} for r in rows}


SWEEP_SHAPES = {"7B up 4096x11008": (4096, 11008), "7B down 11008x4096": (11008, 4096)}
TILES = ((64, 16, 2), (128, 16, 4), (256, 16, 8), (64, 8, 2), (512, 16, 8))  # (BLOCK_N, R, warps)


def sweep_configs(rows: int, n: int) -> list[dict]:
    """Every read kernel config of the sweep for one [rows, n] word array."""
    out: list[dict] = []
    for bn, r, warps in TILES:
        if n % bn or rows % r:
            continue
        ktiles, ntiles = rows // r, n // bn
        splits = sorted({max(1, min(ktiles, round(p / ntiles))) for p in (264, 528, 1056, 2112)})
        if r == 8 or bn == 512:  # side rows: fewer points
            splits = splits[1:3]
        for split in splits:
            for u in (1, 2, 4):
                for tiled in (False, True):
                    out.append(dict(kind="2d", bn=bn, r=r, warps=warps, split=split, u=u, tiled=tiled))
    for block, warps in ((1024, 4), (4096, 8)):
        for u in (2, 4):
            for programs in (132, 264, 528, 1056):
                for contig in (False, True):
                    out.append(dict(kind="1d", block=block, warps=warps, u=u, programs=programs, contig=contig))
    return out


def sweep_name(c: dict, rows: int, n: int) -> str:
    if c["kind"] == "1d":
        return f"flat {'contig' if c['contig'] else 'interleaved'} B{c['block']} w{c['warps']} U{c['u']} P{c['programs']}"
    iters = -(-(rows // c["r"]) // c["split"])
    progs = (n // c["bn"]) * -(-(rows // c["r"]) // iters)
    return (f"{'tile-major' if c['tiled'] else 'standard'} n{c['bn']} k{8 * c['r']} w{c['warps']} s{c['split']} "
            f"U{c['u']} ({progs} programs)")  # fmt: skip


GAP = {"7B up 4096x11008": (16, 11, 6), "7B down 11008x4096": (43, 29, 15)}  # n64 splits: 2, 3, 6-ish tiles each


def gap(args: argparse.Namespace) -> None:
    """v6 follow-up: the read floor of the burst / look-ahead GEMV configs (n64 k128 w2) with and without the
    GEMV's split-K epilogue, so the GEMV's own times (kernels-2026-11-29-v6.json) split into read, epilogue, rest."""
    from read_kernels import launch_read2d

    meta = dict(date=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), device=torch.cuda.get_device_name(),
                copy_GBps=copy_bandwidth() / 1e9)  # fmt: skip
    rows_out = []
    out = torch.empty(4 * 1024 * 1024, dtype=torch.int32, device=DEVICE)
    for name, splits in GAP.items():
        k, n = SWEEP_SHAPES[name]
        rows = k // 8
        ws = [torch.randint(-(2**31), 2**31 - 1, (rows, n), dtype=torch.int32, device=DEVICE) for _ in range(copies(rows * n * 4))]
        y = torch.zeros(n, dtype=torch.float16, device=DEVICE)
        for split in splits:
            iters = -(-(rows // 16) // split)
            for u in sorted({min(iters, 4), 2}):
                for ep in (False, True):
                    us = time_rotated([lambda w=w: launch_read2d(w, rows, n, 64, 16, split, u, 2, False, out,
                                                                 y if ep else None) for w in ws])  # fmt: skip
                    rows_out.append(dict(shape=name, split=split, tiles=iters, u=u, epilogue=ep, us=us))
                    print(rows_out[-1], flush=True)
        del ws
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gap.json").write_text(json.dumps(dict(meta=meta, rows=rows_out), indent=1))


def sweep(args: argparse.Namespace) -> None:
    from read_kernels import launch_read1d, launch_read2d, tile_major

    compile_only = args.phase == "compile"
    meta = dict(date=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), device=torch.cuda.get_device_name(),
                torch=torch.__version__, triton=triton.__version__)  # fmt: skip
    if not compile_only:
        meta["copy_GBps"] = copy_bandwidth() / 1e9
    rows_out: list[dict] = []
    index = 0
    args.out.mkdir(parents=True, exist_ok=True)
    partial = None if compile_only else (args.out / "sweep.jsonl").open("w")  # survives a timeout

    def keep(row: dict) -> None:
        rows_out.append(row)
        print(row, flush=True)
        if partial is not None:
            partial.write(json.dumps(row) + "\n")
            partial.flush()
    for name, (k, n) in SWEEP_SHAPES.items():
        rows = k // 8
        nbytes = rows * n * 4
        count = 1 if compile_only else copies(nbytes)
        ws = [torch.randint(-(2**31), 2**31 - 1, (rows, n), dtype=torch.int32, device=DEVICE) for _ in range(count)]
        out = torch.empty(4 * 1024 * 1024, dtype=torch.int32, device=DEVICE)
        layouts: dict[tuple[int, int], list[torch.Tensor]] = {}
        gemv_bytes = nbytes + (k // 128) * n * 2 + (k // 128) * (n // 8) * 4  # + fp16 scales + packed zeros
        if not compile_only:
            dst = [torch.empty_like(w) for w in ws]
            for what, fn in (("torch copy_ of the words (read + write)", lambda i: dst[i].copy_(ws[i])),
                             ("torch sum of the words", lambda i: ws[i].sum())):  # fmt: skip
                us = time_rotated([lambda i=i: fn(i) for i in range(count)])
                keep(dict(shape=name, what=what, us=us, MB=nbytes / 1e6, gemv_MB=gemv_bytes / 1e6))
            del dst
        for c in sweep_configs(rows, n):
            index += 1
            if compile_only and index % args.shards != args.shard:
                continue
            if c["kind"] == "2d":
                src = ws
                if c["tiled"]:
                    key = (c["bn"], c["r"])
                    if key not in layouts:
                        layouts[key] = [tile_major(w, c["bn"], c["r"]) for w in ws]
                    src = layouts[key]
                calls = [lambda s=s: launch_read2d(s, rows, n, c["bn"], c["r"], c["split"], c["u"], c["warps"],
                                                   c["tiled"], out) for s in src]  # fmt: skip
            else:
                calls = [lambda s=w: launch_read1d(s, c["block"], c["programs"], c["u"], c["warps"], c["contig"], out)
                         for w in ws]  # fmt: skip
            if compile_only:
                calls[0]()
                continue
            keep(dict(shape=name, what=sweep_name(c, rows, n), cfg=c, us=time_rotated(calls), MB=nbytes / 1e6,
                      gemv_MB=gemv_bytes / 1e6))  # fmt: skip
        del ws, layouts
        torch.cuda.empty_cache()
    if compile_only:
        torch.cuda.synchronize()
        return
    for r in rows_out:
        r["GBps"] = r["MB"] * 1e6 / (r["us"] * 1e-6) / 1e9
        r["pct_copy"] = 100 * r["GBps"] / meta["copy_GBps"]
        r["gemv_pct_copy_at_this_time"] = 100 * r["gemv_MB"] * 1e3 / r["us"] / meta["copy_GBps"]
    (args.out / "sweep.json").write_text(json.dumps(dict(meta=meta, rows=rows_out), indent=1))
    md = [f"copy bandwidth {meta['copy_GBps']:.0f} GB/s; {meta['device']}; torch {meta['torch']}, triton {meta['triton']}",
          "", "| shape | read | us | GB/s | % copy (words) | a GEMV at this time: % copy (GEMV bytes) |",
          "|---|---|---|---|---|---|"]  # fmt: skip
    for name in SWEEP_SHAPES:
        mine = sorted((r for r in rows_out if r["shape"] == name), key=lambda r: r["us"])
        md += [f"| {name} | {r['what']} | {r['us']:.2f} | {r['GBps']:.0f} | {r['pct_copy']:.0f}% | "
               f"{r['gemv_pct_copy_at_this_time']:.0f}% |" for r in mine]  # fmt: skip
    (args.out / "sweep.md").write_text("\n".join(md) + "\n")
    print("\n".join(md[:4]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--results", type=Path, default=Path("bench/results/kernels-2026-11-29-v5.json"))
    ap.add_argument("--ms", default="1,2")
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--gap", action="store_true")
    ap.add_argument("--phase", choices=("compile", "time"), default="time")
    ap.add_argument("--shard", type=int, default=0)
    ap.add_argument("--shards", type=int, default=1)
    args = ap.parse_args()
    if args.sweep:
        sweep(args)
        return
    if args.gap:
        gap(args)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    chosen = picks(args.results)
    meta = dict(date=dt.date.today().isoformat(), device=torch.cuda.get_device_name(), torch=torch.__version__,
                triton=triton.__version__, copy_GBps=copy_bandwidth() / 1e9)  # fmt: skip
    one = torch.zeros(1, device=DEVICE)
    rows = [dict(what="empty kernel", us=time_rotated([lambda: _empty_kernel[(1,)](one)] * 32))]
    print(rows[-1], flush=True)
    for name, (k, n) in SHAPES.items():
        if "qkvo" in name:
            continue
        ws = [make_weight(k, n, 4, False) for _ in range(copies(k * n / 2))]
        nbytes = gptq_bytes(ws[0])
        y = torch.empty(1, n, dtype=torch.float16, device=DEVICE)
        for m in (int(v) for v in args.ms.split(",")):
            x = torch.randn(m, k, device=DEVICE, dtype=torch.float16)
            ym = torch.empty(m, n, dtype=torch.float16, device=DEVICE)
            for gen, text in chosen.get((name, m), {}).items():
                cfg = eval(text, {"QMMConfig": QMMConfig})  # noqa: S307 - our own repr
                row = dict(what=f"{gen} {cfg.kind} n{cfg.block_n} k{cfg.block_k} s{cfg.split_k} w{cfg.num_warps} "
                           f"st{cfg.num_stages}", shape=name, M=m, MB=nbytes / 1e6)  # fmt: skip
                row["us"] = time_rotated([lambda w=w, c=cfg: launch_quant_matmul(x, w, c, ym) for w in ws])
                rows.append(row)
                print(row, flush=True)
                if m != 1:
                    continue
                split_rows = torch.empty(cfg.split_k, n, dtype=torch.float32, device=DEVICE)
                for ep in (False, True):
                    row = dict(what=f"stream{'+ep' if ep else ''} as {gen} (n{cfg.block_n} k{cfg.block_k} "
                               f"s{cfg.split_k} w{cfg.num_warps})", shape=name, M=1, MB=nbytes / 1e6)  # fmt: skip
                    row["us"] = time_rotated([lambda w=w, c=cfg, e=ep: stream(w.qweight, c, e, y, split_rows) for w in ws])
                    rows.append(row)
                    print(row, flush=True)
                tiles = [tile_major(w.qweight, cfg.block_n, cfg.block_k // 8) for w in ws]
                row = dict(what=f"tiled stream as {gen} (n{cfg.block_n} k{cfg.block_k} s{cfg.split_k} "
                           f"w{cfg.num_warps})", shape=name, M=1, MB=nbytes / 1e6)  # fmt: skip
                row["us"] = time_rotated([lambda w=w, t=t, c=cfg: stream(w.qweight, c, False, y, split_rows, t)
                                          for w, t in zip(ws, tiles)])  # fmt: skip
                rows.append(row)
                print(row, flush=True)
                del tiles
        del ws
        torch.cuda.empty_cache()
    for r in rows:
        if "MB" in r:
            r["pct_copy"] = 100 * r["MB"] * 1e6 / (r["us"] * 1e-6) / (meta["copy_GBps"] * 1e9)
    (args.out / "floor.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    md = ["| what | shape | M | us | % copy (GEMV bytes) |", "|---|---|---|---|---|"]
    md += [f"| {r['what']} | {r.get('shape', '-')} | {r.get('M', '-')} | {r['us']:.1f} | "
           f"{r['pct_copy']:.0f}% |" if "MB" in r else f"| {r['what']} | - | - | {r['us']:.2f} | - |" for r in rows]  # fmt: skip
    (args.out / "floor.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
