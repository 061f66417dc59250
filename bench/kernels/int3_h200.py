"""int3 small-M GEMV on one CUDA GPU: the v3 kernels (gemv / tile) vs the 3-bit half2 GEMV (quant_hgemv3, kind
"hgemv3") vs bf16 cuBLAS, plus a correctness guard. Random weights (speed does not depend on values), fp16 x,
g128, asymmetric (the guard also symmetric).

Subcommands (bench/kernels/int3_h200.sh runs them in one device call):
  guard --shard i --shards n   per case (7B shape, M in 1,2,4, sym/asym): the autotuned pick's and every candidate's
                               relative error against the fp32 product of the dequantized weight, workspace clean
  bench                        timing alone on the GPU: CUDA graphs over rotating weight copies (> 3x L2)
  report                       JSON + markdown
Usage: PYTHONPATH=workers:bench/kernels python3 bench/kernels/int3_h200.py {guard,bench,report} --out DIR
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
from bench_kernels import copies, gptq_bytes
from device_common import (
    add_ratios,
    bench_meta,
    cells,
    device_parser,
    guard_lines,
    guard_shard,
    load_bench,
    print_row,
    report_head,
    run_phase,
    short_cfg,
    time_best,
    tuned_row,
    write_report,
)
from gemv_h200 import guard_case, make_weight, reference

SHAPES = {"7B up 4096x11008": (4096, 11008), "7B down 11008x4096": (11008, 4096)}
MS = tuple(int(m) for m in os.environ.get("INT3_MS", "1,2,4").split(","))
GENERATIONS = (("v3", lambda c: "kind='hgemv3'" not in c), ("h3", lambda c: "kind='hgemv3'" in c))
TOL = 1e-2


def guard(out: Path, shard: int, shards: int) -> None:
    cases = [(name, k, n, m, sym, False) for sym in (False, True) for m in MS for name, (k, n) in SHAPES.items()]
    guard_shard(out, shard, cases[shard::shards], lambda name, k, n, m, sym, act: guard_case(name, k, n, m, 3, sym),
                lambda row: f"pick={row['pick'].split('kind=')[-1]} err={row['pick_err']:.1e} "
                            f"bad={len(row['bad_candidates'])}")  # fmt: skip


def bench(out: Path) -> None:
    meta = bench_meta()
    rows = []
    for name, (k, n) in SHAPES.items():
        w_bf16 = [torch.randn(k, n, device="cuda", dtype=torch.bfloat16) for _ in range(copies(k * n * 2))]
        ws = [make_weight(k, n, 3, False) for _ in range(copies(k * n * 3 / 8))]
        weights = (w_bf16, [], ws, gptq_bytes(ws[0]))
        for m in MS:
            t0 = time.time()
            x16 = torch.randn(m, k, device="cuda", dtype=torch.float16)
            ref = reference(x16, ws[0])
            row, log = tuned_row(name, k, n, x16, ref, weights)
            for label, pred in GENERATIONS:
                time_best(row, label, log, pred, x16, ws, ref)
            add_ratios(row, ("pick", "v3", "h3"), weights[3], meta["copy_GBps"])
            if row.get("v3_us") and row.get("h3_us"):
                row["h3_vs_v3"] = row["v3_us"] / row["h3_us"]
            rows.append(row)
            print_row(row, t0)
            (out / "bench.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
        del w_bf16, ws, weights
        torch.cuda.empty_cache()


def report(out: Path, dest: Path, command: str, stem: str) -> None:
    b = load_bench(out)
    guard_rows = guard_lines(out)
    meta = dict(b["meta"], command=command)
    md = [f"# int3 small-M GEMV: v3 kernels vs the 3-bit half2 GEMV (hgemv3), {meta.get('date', '')}", "",
          *report_head(meta, command), "",
          "Times in us (CUDA graph over rotating weight copies, > 3x L2). % copy = int3 bytes (packed words + fp16 scales "
          "+ packed zeros) / time / copy bandwidth; x bf16 = bf16 cuBLAS time / kernel time. v3 = the best of the old "
          "kernels (gemv / tile) and h3 = the best hgemv3 config, each by the tuner's cold-L2 timing, re-timed here; "
          "pick = the autotuned quant_matmul (guard on). fp16 x, g128, asymmetric, random weights.", "",
          "| shape | M | MB | bf16 cuBLAS | v3 | v3 %copy | v3 x bf16 | h3 | h3 %copy | h3 x bf16 | h3 / v3 speed-up | "
          "h3 rel err | pick | pick %copy | pick x bf16 | pick rel err | h3 config |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in b["rows"]:
        f = cells(r)
        md.append(f"| {r['shape']} | {r['M']} | {f('MB', '{:.2f}')} | {f('bf16_us')} | {f('v3_us')} | "
                  f"{f('v3_pct_copy', '{:.0f}%')} | {f('v3_vs_bf16', '{:.2f}x')} | {f('h3_us')} | {f('h3_pct_copy', '{:.0f}%')} | "
                  f"{f('h3_vs_bf16', '{:.2f}x')} | {f('h3_vs_v3', '{:.2f}x')} | {f('h3_err', '{:.1e}')} | {f('pick_us')} "
                  f"({short_cfg(r.get('pick')).split(' ')[0]}) | {f('pick_pct_copy', '{:.0f}%')} | {f('pick_vs_bf16', '{:.2f}x')} | "
                  f"{f('pick_err', '{:.1e}')} | {short_cfg(r.get('h3_cfg'))} |")  # fmt: skip
    md += ["", f"## Guard (autotuned quant_matmul and every candidate vs the fp32 dequantized reference; tolerance {TOL})",
           "", "| shape | M | sym | pick | pick rel err | max hgemv3 err | max candidate err | candidates > tol | ws clean |",
           "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for g in sorted(guard_rows, key=lambda g: (g["sym"], g["shape"], g["M"])):
        h3 = [e for c, e in g["candidate_errs"].items() if "hgemv3" in c and isinstance(e, float)]
        md.append(f"| {g['shape']} | {g['M']} | {g['sym']} | {short_cfg(g['pick'])} | {g['pick_err']:.1e} | "
                  f"{max(h3) if h3 else float('nan'):.1e} | {g['max_candidate_err']:.1e} | {len(g['bad_candidates'])} | "
                  f"{g['ws_clean']} |")  # fmt: skip
    if guard_rows:
        md += ["", f"Worst picked error over {len(guard_rows)} cases: {max(g['pick_err'] for g in guard_rows):.1e}; "
               f"candidates above tolerance: {sum(len(g['bad_candidates']) for g in guard_rows)}."]  # fmt: skip
    write_report(dest, stem, md, dict(meta=meta, bench=b["rows"], guard=guard_rows))


def main() -> None:
    ap = device_parser(("guard", "bench"), "bash bench/kernels/int3_h200.sh", "kernels-2026-11-30-int3")
    run_phase(ap, dict(guard=lambda a: guard(a.out, a.shard, a.shards), bench=lambda a: bench(a.out)), report)


if __name__ == "__main__":
    sys.exit(main())
