"""v7: the row-accumulating half2 GEMV (quant_hgemvr, kind "hgemvr") vs v5's look-ahead GEMV ("hgemvp"), bf16
cuBLAS and the GEMV-shaped read floor, all in one run on the 7B MLP shapes (bench/kernels/NOTES.md v7).

  check --shape i  errors only (also fills Triton's cache; run one process per shape in parallel): every timed
                   config of both kinds at M = 1, 2, 4 against an fp32 product of the dequantized weight, with x
                   ~ randn and with Llama-like outliers (4 entries of magnitude ~1e3 per row)
  bench            timing, alone on the GPU (CUDA graphs over rotating weight copies, as gemv_h200.py)
  report           JSON + markdown
Usage: PYTHONPATH=workers:bench/kernels python3 bench/kernels/gemv_v7.py {check,bench,report} --out DIR
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
from bench_kernels import time_rotated
from device_common import (
    bench_meta,
    device_parser,
    load_bench,
    rel,
    report_head,
    run_phase,
    shape_weights,
    write_report,
)
from gemv_h200 import DEVICE, make_weight, reference
from inlaid_worker.kernels import quant_common
from inlaid_worker.kernels.quant_hgemv import launch_hgemv
from inlaid_worker.kernels.quant_hgemvr import launch_hgemvr

SHAPES = {"7B up 4096x11008": (4096, 11008), "7B down 11008x4096": (11008, 4096)}
if os.environ.get("GEMV_TINY"):  # a CPU dry run of `check` under TRITON_INTERPRET (catches typos, not speed)
    SHAPES = {"tiny up 768x128": (768, 128), "tiny down 1536x64": (1536, 64)}
MS = (1, 2, 4)
# (label, kind, block_n, warps, K tiles per program, burst, const stride, pin); block_k 128, block_m = M
CONFIGS = (
    ("p n64 t6", "hgemvp", 64, 2, 6, False, False, False),  # the v5/v6 pick (M = 1, 2)
    ("r n64 t6", "hgemvr", 64, 2, 6, False, True, False),  # step 1: fewer instructions per word
    ("r n64 t8", "hgemvr", 64, 2, 8, False, True, False),
    ("r n64 t4", "hgemvr", 64, 2, 4, False, True, False),
    ("r n64 t3", "hgemvr", 64, 2, 3, False, True, False),
    ("rQ n64 t6", "hgemvr", 64, 2, 6, False, True, True),  # step 2: + loads pinned before the arithmetic
    ("rQ n64 t4", "hgemvr", 64, 2, 4, False, True, True),
    ("rQ n64 t3", "hgemvr", 64, 2, 3, False, True, True),
    ("rQ n128 t6", "hgemvr", 128, 4, 6, False, True, True),
    ("rb n64 t3", "hgemvr", 64, 2, 3, True, True, False),  # burst, unpinned
    ("rbQ n64 t2", "hgemvr", 64, 2, 2, True, True, True),  # burst, pinned by barriers
    ("rbQ n64 t3", "hgemvr", 64, 2, 3, True, True, True),
)


def run(kind: str, x: torch.Tensor, w, bn: int, warps: int, tiles: int, burst: bool, const: bool, pin: bool,
        y: torch.Tensor) -> torch.Tensor:  # fmt: skip
    split = -(-(w.in_features // 128) // tiles)
    if kind == "hgemvp":
        launch_hgemv(x, w, x.shape[0], bn, 128, split, warps, 1, y, ahead=1)
    else:
        launch_hgemvr(x, w, x.shape[0], bn, 128, split, warps, y, burst=burst, const_stride=const, pin=pin)
    return y


def outliers(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    cols = torch.arange(4) * (x.shape[1] // 4) + 7
    x[:, cols] = torch.tensor([1200.0, -900.0, 1500.0, -1100.0], dtype=x.dtype, device=x.device)
    return x


def check(out: Path, shape: int, ms: tuple[int, ...]) -> None:
    name, (k, n) = list(SHAPES.items())[shape]
    rows = []
    for m in ms:
        torch.manual_seed(1000 * shape + m)
        w = make_weight(k, n, 4, False)
        xr = torch.randn(m, k, device=DEVICE, dtype=torch.float16)
        for xkind, x in (("randn", xr), ("outliers", outliers(xr))):
            ref = reference(x, w)
            for label, *cfg in CONFIGS:
                y = torch.empty(m, n, dtype=torch.float16, device=DEVICE)
                err = rel(run(*cfg[:1], x, w, *cfg[1:], y), ref)
                rows.append(dict(shape=name, M=m, x=xkind, cfg=label, err=err))
        clean = all(bool((a == 0).all()) and bool((c == 0).all()) for a, c in quant_common._WORKSPACES.values())
        rows.append(dict(shape=name, M=m, ws_clean=clean))
        print(f"[check {shape}] M={m} worst {max(r['err'] for r in rows if 'err' in r):.1e} clean={clean}", flush=True)
    (out / f"check-{shape}-{'-'.join(map(str, ms))}.json").write_text(json.dumps(rows))


def floor_read(qweight: torch.Tensor, tiles: int, epilogue: bool, y: torch.Tensor, scratch: torch.Tensor) -> None:
    """The v6 read floor: the GEMV's n64 k128 w2 grid reading the same words, all of a program's tiles in flight."""
    from read_kernels import launch_read2d

    rows, n = qweight.shape
    split = -(-(rows // 16) // tiles)
    launch_read2d(qweight, rows, n, 64, 16, split, min(tiles, 4), 2, False, scratch, y if epilogue else None)


def bench(out: Path) -> None:
    meta = bench_meta()
    rows = []
    scratch = torch.empty(4 * 1024 * 1024, dtype=torch.int32, device="cuda")
    for name, (k, n) in SHAPES.items():
        weights = shape_weights(k, n, "cuda", make_weight)
        w_bf16, ws, nbytes = weights[0], weights[2], weights[3]
        yf = torch.zeros(n, dtype=torch.float16, device="cuda")
        for tiles in (3, 6):
            for ep in (False, True):
                us = time_rotated([lambda w=w: floor_read(w.qweight, tiles, ep, yf, scratch) for w in ws])
                rows.append(dict(shape=name, M=1, cfg=f"read n64 t{tiles} U{min(tiles, 4)}{' +ep' if ep else ''}", us=us,
                                 MB=nbytes / 1e6))  # fmt: skip
        for m in MS:
            t0 = time.time()
            x = torch.randn(m, k, device="cuda", dtype=torch.float16)
            xb = x.to(torch.bfloat16)
            rows.append(dict(shape=name, M=m, cfg="bf16 cuBLAS", us=time_rotated([lambda w=w: xb @ w for w in w_bf16]),
                             MB=nbytes / 1e6))  # fmt: skip
            y = torch.empty(m, n, dtype=torch.float16, device="cuda")
            for label, *cfg in CONFIGS:
                us = time_rotated([lambda w=w, c=cfg: run(*c[:1], x, w, *c[1:], y) for w in ws])
                rows.append(dict(shape=name, M=m, cfg=label, us=us, MB=nbytes / 1e6))
            print(name, m, [(r["cfg"], round(r["us"], 2)) for r in rows if r["shape"] == name and r["M"] == m],
                  f"{time.time() - t0:.1f}s", flush=True)  # fmt: skip
            (out / "bench.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
        del weights, ws, w_bf16
        torch.cuda.empty_cache()
    (out / "bench.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))


def report(out: Path, dest: Path, command: str, stem: str) -> None:
    b = load_bench(out)
    checks = [r for p in sorted(out.glob("check-*.json")) for r in json.loads(p.read_text())]
    meta = dict(b["meta"], command=command)
    gbps = meta.get("copy_GBps", 0.0)
    bf16 = {(r["shape"], r["M"]): r["us"] for r in b["rows"] if r["cfg"] == "bf16 cuBLAS"}
    errs: dict[tuple, dict[str, float]] = {}
    for r in checks:
        if "err" in r:
            errs.setdefault((r["shape"], r["M"], r["cfg"]), {})[r["x"]] = r["err"]
    md = [f"# v7: row-accumulating half2 GEMV (hgemvr) vs look-ahead GEMV (hgemvp), {meta.get('date', '')}", "",
          *report_head(meta, command), "",
          "Times in us (CUDA graph over rotating weight copies, > 3x L2, median of 10 replays). % copy = packed weight + "
          "scale + zero bytes / time / copy bandwidth; x bf16 = bf16 cuBLAS / time. Configs: p = hgemvp (look-ahead 1), "
          "r = hgemvr look-ahead 1, rb = hgemvr burst; n = block_n (w2 at n64, w4 at n128), t = K tiles (of 128) per "
          "program; Q = the next tile's loads pinned before this tile's arithmetic (the zero constants pass through a "
          "value-returning barrier); the v7 run also timed P (x loaded below a plain barrier) and S (a slot split-K "
          "epilogue), both since removed; "
          "read = the v6 pure read at the same grid (+ep: with the split-K epilogue). err = relative error vs "
          "the fp32 dequantized product with x ~ randn / with 4 outliers of ~1e3 per row.", "",
          "| shape | M | config | us | % copy | x bf16 | err randn | err outliers |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in b["rows"]:
        r["pct_copy"] = 100 * r["MB"] * 1e6 / (r["us"] * 1e-6) / (gbps * 1e9) if gbps else None
        r["vs_bf16"] = bf16.get((r["shape"], r["M"]), 0) / r["us"]
        e = errs.get((r["shape"], r["M"], r["cfg"]), {})
        r["err"] = e
        md.append(f"| {r['shape']} | {r['M']} | {r['cfg']} | {r['us']:.2f} | {r['pct_copy'] or 0:.0f}% | "
                  f"{r['vs_bf16']:.2f}x | {e.get('randn', float('nan')):.1e} | {e.get('outliers', float('nan')):.1e} |")  # fmt: skip
    worst = {kind: max((v for (s, m, c), d in errs.items() if c.startswith(kind) for v in d.values()), default=None)
             for kind in ("p ", "r")}  # fmt: skip
    clean = [r["ws_clean"] for r in checks if "ws_clean" in r]
    md += ["", f"Worst relative error: hgemvp {worst['p ']}, hgemvr {worst['r']} over {len(checks) - len(clean)} "
           f"checks; split-K workspace clean after every M: {all(clean) and bool(clean)}."]  # fmt: skip
    write_report(dest, stem, md, dict(meta=meta, bench=b["rows"], checks=checks))


def main() -> None:
    ap = device_parser(("check", "bench"), "bash bench/kernels/gemv_v7.sh", "kernels-2026-11-30-v7")
    ap.add_argument("--shape", type=int, default=0)
    ap.add_argument("--ms", default="1,2,4")
    run_phase(ap, dict(check=lambda a: check(a.out, a.shape, tuple(int(m) for m in a.ms.split(","))),
                       bench=lambda a: bench(a.out)), report)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
