"""Small-M (1..16) int4 GEMV on one CUDA GPU: the v3 kernels vs the v4 half2 GEMV (quant_hgemv, kind "hgemv") vs
its v5 look-ahead variant (kind "hgemvp") vs its v6 burst variant (kind "hgemvb") vs bf16 cuBLAS and torch's
tinygemm, plus a correctness guard sweep. v5g / v6g: every hgemvp / hgemvb config timed in the graph harness
(the tuner picks by cold-L2 do_bench timing, which can rank them differently; hgemvb left the tuner's
candidates after the v6 run, so from v6 on its column comes from v6g only). GEMV_EVICT=1: the v5 evict_first
ablation too.
Random weights (speed does not depend on values).

Subcommands (bench/kernels/gemv_h200.sh runs them in one device call):
  guard --shard i --shards n   correctness only (parallel processes; also warms Triton's cache): for each case
                               (7B shape, M in GEMV_GUARD_MS (default 1,2,4,8,16), bits, sym) the autotuned quant_matmul's pick and every candidate's
                               relative error against an fp32 product of the dequantized weight; plus the
                               int4 M=4 4096x11008 diagnosis of v4 (MMA kernel's split-K epilogue) with GEMV_M4_DIAG=1.
  bench                        timing, alone on the GPU: CUDA graphs over rotating weight copies (> 3x L2);
                               batch sizes GEMV_BENCH_MS (default 1,2,4), shapes GEMV_BENCH_SHAPES (default all).
  report                       JSON + markdown from the two.
Usage: PYTHONPATH=workers:bench/kernels python3 bench/kernels/gemv_h200.py {guard,bench,report} --out DIR
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
import zlib
from pathlib import Path

import torch
from bench_kernels import time_rotated
from device_common import (
    add_ratios,
    bench_meta,
    cells,
    device_parser,
    guard_lines,
    load_bench,
    print_row,
    rel,
    report_head,
    run_cfg,
    run_phase,
    shape_weights,
    short_cfg,
    time_best,
    tuned_row,
    write_report,
)
from inlaid_worker.kernels import quant_common, quant_matmul_config
from inlaid_worker.kernels.gptq_packing import GPTQWeight, pack_bitstream
from inlaid_worker.kernels.quant_hgemv import launch_hgemv
from inlaid_worker.kernels.quant_matmul import dequantize_gptq, quant_matmul
from inlaid_worker.kernels.quant_matmul_config import QMMConfig, candidate_configs

# the goal shapes first: a timing phase cut short by its timeout still reports them
SHAPES = {"7B up 4096x11008": (4096, 11008), "7B down 11008x4096": (11008, 4096), "7B qkvo 4096x4096": (4096, 4096)}
if os.environ.get("GEMV_TINY"):  # a CPU dry run of the guard under TRITON_INTERPRET (catches typos, not speed)
    SHAPES = {"tiny 256x72": (256, 72)}
DEVICE = os.environ.get("GEMV_DEVICE", "cuda")
MS = (1, 2, 4, 8, 16) if not os.environ.get("GEMV_TINY") else (1, 4, 16)
BENCH_MS = tuple(int(m) for m in os.environ.get("GEMV_BENCH_MS", "1,2,4").split(","))
GUARD_MS = tuple(int(m) for m in os.environ["GEMV_GUARD_MS"].split(",")) if os.environ.get("GEMV_GUARD_MS") else MS
# columns of the timing table: the best candidate of each kernel generation by the tuner's own timing
GENERATIONS = (("v3", lambda c: "kind='hgemv" not in c), ("v4", lambda c: "kind='hgemv'" in c),
               ("v5", lambda c: "kind='hgemvp'" in c), ("v6", lambda c: "kind='hgemvb'" in c),
               ("v7", lambda c: "kind='hgemvr" in c))  # fmt: skip
GRAPH_KINDS = (("v5g", "hgemvp"), ("v6g", "hgemvb"))  # every candidate of the kind re-timed in the graph
TOL = 1e-2  # the tuner's guard (quant_matmul_config.agrees)


def make_weight(k: int, n: int, bits: int, sym: bool) -> GPTQWeight:
    """Random GPTQ weight (v1 checkpoint: stored zero = zero - 1), g128, no act-order."""
    g = 128
    qw = torch.randint(-(2**31), 2**31 - 1, (k * bits // 32, n), dtype=torch.int32, device=DEVICE)
    zeros = torch.full((k // g, n), 2 ** (bits - 1)) if sym else torch.randint(1, 2**bits, (k // g, n))
    qz = pack_bitstream(zeros - 1, bits, dim=1).to(DEVICE)
    sc = (torch.rand(k // g, n, device=DEVICE) * 0.01 + 0.001).half()
    return GPTQWeight(qw, qz, sc, None, bits, g, sym, 1, k, n)


def reference(x: torch.Tensor, w: GPTQWeight) -> torch.Tensor:
    groups = (torch.arange(w.in_features, device=x.device) // w.group_size).int()
    return x.float() @ dequantize_gptq(w.qweight, w.qzeros, w.scales, groups, w.bits, w.zero_offset)


def run_evict_first(x: torch.Tensor, w: GPTQWeight, cfg: QMMConfig) -> torch.Tensor:
    """A look-ahead (hgemvp) config run with the words' evict_first hint (launch_hgemv's ablation knob)."""
    y = torch.empty(x.shape[0], w.out_features, dtype=x.dtype, device=x.device)
    launch_hgemv(x, w, cfg.block_m, cfg.block_n, cfg.block_k, cfg.split_k, cfg.num_warps, 1, y, ahead=cfg.num_stages,
                 word_policy="evict_first")  # fmt: skip
    return y


def guard_case(name: str, k: int, n: int, m: int, bits: int, sym: bool) -> dict:
    torch.manual_seed(zlib.crc32(f"{name}/{m}/{bits}/{sym}".encode()))
    w = make_weight(k, n, bits, sym)
    x = torch.randn(m, k, device=DEVICE, dtype=torch.float16)
    ref = reference(x, w)
    quant_matmul_config._TUNED.clear()
    y = quant_matmul(x, w)
    pick = quant_matmul_config.LAST_PICK[0]
    errs = {}
    for c in candidate_configs(m, n, k, w.group_size, bits, x.dtype):
        try:
            errs[str(c)] = rel(run_cfg(x, w, c), ref)
        except Exception as exc:  # noqa: BLE001 - reported
            errs[str(c)] = f"error {exc!r}"[:200]
    numeric = {c: e for c, e in errs.items() if isinstance(e, float)}
    bad = sorted(c for c, e in numeric.items() if e > TOL)
    clean = all(bool((ws == 0).all()) and bool((cnt == 0).all()) for ws, cnt in quant_common._WORKSPACES.values())
    return dict(shape=name, K=k, N=n, M=m, bits=bits, sym=sym, pick=str(pick), pick_err=rel(y, ref),
                pick_is_bad=str(pick) in bad, max_candidate_err=max(numeric.values()), bad_candidates=bad,
                ws_clean=clean, candidate_errs=errs)  # fmt: skip


def m4_diagnosis() -> list[dict]:
    """The int4 M=4 4096x11008 MMA error: each MMA candidate's split-K epilogue (v4 run 2 also tried a
    fence.acq_rel.gpu after the partial atomics: no difference; the fix is the read-and-clear exchange)."""
    rows = []
    k, n = SHAPES.get("7B up 4096x11008", next(iter(SHAPES.values())))
    for seed in range(3):
        torch.manual_seed(seed)
        w = make_weight(k, n, 4, False)
        x = torch.randn(4, k, device=DEVICE, dtype=torch.float16)
        ref = reference(x, w)
        for c in [c for c in candidate_configs(4, n, k, 128, 4) if c.kind == "mma"] + [
            QMMConfig(16, 128, 128, 1, 4, 3, True, "mma")
        ]:
            errs = [rel(run_cfg(x, w, c), ref) for _ in range(3)]
            rows.append(dict(seed=seed, cfg=str(c), fence=False, errs=errs))
    return rows


def guard(out: Path, shard: int, shards: int) -> None:
    # a shard takes whole (bits, sym, M) groups: the three shapes of a group share compiled kernels
    groups = [(bits, sym, m) for bits in (4, 3) for sym in (False, True) for m in GUARD_MS]
    mine = [(name, k, n, m, bits, sym) for bits, sym, m in groups[shard::shards] for name, (k, n) in SHAPES.items()]
    path = out / f"guard-{shard}.jsonl"
    with path.open("w") as f:
        if shard == 0 and os.environ.get("GEMV_M4_DIAG"):
            t0 = time.time()
            f.write(json.dumps(dict(m4_diagnosis=m4_diagnosis())) + "\n")
            f.flush()
            print(f"[guard 0] m4 diagnosis {time.time() - t0:.0f} s", flush=True)
        for case in mine:
            t0 = time.time()
            row = guard_case(*case)
            f.write(json.dumps(row) + "\n")
            f.flush()
            print(f"[guard {shard}] {case} pick={row['pick'].split('kind=')[-1]} err={row['pick_err']:.1e} "
                  f"bad={len(row['bad_candidates'])} {time.time() - t0:.1f}s", flush=True)  # fmt: skip


def bench(out: Path) -> None:
    meta = bench_meta()
    rows = []
    only = os.environ.get("GEMV_BENCH_SHAPES", "")  # e.g. "up,down": substrings of the shape names
    for name, (k, n) in SHAPES.items():
        if only and not any(part in name for part in only.split(",")):
            continue
        weights = shape_weights(k, n, DEVICE, make_weight)
        ws, nbytes = weights[2], weights[3]
        for m in BENCH_MS:
            t0 = time.time()
            x16 = torch.randn(m, k, device=DEVICE, dtype=torch.float16)
            ref = reference(x16, ws[0])
            row, log = tuned_row(name, k, n, x16, ref, weights)
            for label, pred in GENERATIONS:
                time_best(row, label, log, pred, x16, ws, ref)
            for label, kind in GRAPH_KINDS:
                cands = [c for c in candidate_configs(m, n, k, 128, 4, x16.dtype) if c.kind == kind]
                if kind == "hgemvb":  # not a tuner candidate since v6: timed here from its own list
                    cands = quant_matmul_config._hgemvb(quant_matmul_config.m_bucket(m), k, 128)
                times = {str(c): time_rotated([lambda w=w, c=c: quant_matmul(x16, w, c) for w in ws]) for c in cands}
                if times:
                    best = min(times, key=times.__getitem__)
                    cfg = eval(best, {"QMMConfig": QMMConfig})  # noqa: S307 - our own repr
                    row.update({f"{label}_cfg": best, f"{label}_us": times[best], f"{label}_all": times,
                                f"{label}_err": rel(run_cfg(x16, ws[0], cfg), ref)})  # fmt: skip
            if "v5_cfg" in row and os.environ.get("GEMV_EVICT"):  # ablation: the v5 pick with an evict_first hint on the streamed words
                c5 = eval(row["v5_cfg"], {"QMMConfig": QMMConfig})  # noqa: S307 - our own repr
                row["v5ef_err"] = rel(run_evict_first(x16, ws[0], c5), ref)
                row["v5ef_us"] = time_rotated([lambda w=w, c=c5: run_evict_first(x16, w, c) for w in ws])
            keys = ("pick", *(label for label, _ in GENERATIONS), *(label for label, _ in GRAPH_KINDS), "v5ef")
            add_ratios(row, keys, nbytes, meta["copy_GBps"])
            rows.append(row)
            print_row(row, t0)
            (out / "bench.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
        del weights, ws
        torch.cuda.empty_cache()


def _kind(cfg: str | None) -> str:
    return cfg.split("kind='")[1].split("'")[0] if cfg and "kind='" in cfg else "-"


_short = short_cfg


def report(out: Path, dest: Path, command: str, stem: str) -> None:
    b = load_bench(out)
    guard_rows, diag = [], []
    for d in guard_lines(out):
        if "m4_diagnosis" in d:
            diag = d["m4_diagnosis"]
        else:
            guard_rows.append(d)
    meta = dict(b["meta"], command=command)
    md = [f"# Small-M int4 GEMV: v3 kernels vs v4 half2 GEMV vs v5 look-ahead vs v6 burst half2 GEMV, {meta.get('date', '')}", "",
          *report_head(meta, command), "",
          "Kernel times in us (CUDA graph over rotating weight copies, > 3x L2; events). % copy = packed weight + scale + "
          "zero bytes / time / copy bandwidth; x bf16 = bf16 cuBLAS time / kernel time. v3 = best of gemv/mma/tile/dequant, "
          "v4 = best half2 GEMV (kind hgemv), v5 = best look-ahead half2 GEMV (kind hgemvp), each chosen by the tuner's "
          "own (cold-L2) timing and re-timed here; v6 = best burst half2 GEMV (kind hgemvb), same rule; v7 = best row-accumulating half2 GEMV (kinds hgemvr / hgemvrq / hgemvrb), same rule; v5g / v6g = the "
          "fastest hgemvp / hgemvb candidate in this table's own timing (every candidate timed); v5 evict_first = the v5 config with an evict_first hint on the weight "
          "words (ablation); pick = what the autotuned quant_matmul chose (guard on). fp16 x, g128, "
          "asymmetric.", "",
          "| shape | M | bf16 cuBLAS | tinygemm | v3 | v4 | v5 | v5 %copy | v5 x bf16 | v6 | v6 %copy | v6 x bf16 | "
          "v7 | v7 %copy | v7 x bf16 | "
          "v5g | v5g %copy | v6g | v6g %copy | v6g x bf16 | v6g err | v5 evict_first (err) | pick (kind) | pick %copy | "
          "pick x bf16 | pick rel err | v5g config | v6g config |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in b["rows"]:
        f = cells(r)
        md.append(f"| {r['shape']} | {r['M']} | {f('bf16_us')} | {f('tinygemm_us')} | {f('v3_us')} | {f('v4_us')} | "
                  f"{f('v5_us')} | {f('v5_pct_copy', '{:.0f}%')} | {f('v5_vs_bf16', '{:.2f}x')} | {f('v6_us')} | "
                  f"{f('v6_pct_copy', '{:.0f}%')} | {f('v6_vs_bf16', '{:.2f}x')} | {f('v7_us')} | "
                  f"{f('v7_pct_copy', '{:.0f}%')} | {f('v7_vs_bf16', '{:.2f}x')} | {f('v5g_us')} | {f('v5g_pct_copy', '{:.0f}%')} | "
                  f"{f('v6g_us')} | {f('v6g_pct_copy', '{:.0f}%')} | {f('v6g_vs_bf16', '{:.2f}x')} | {f('v6g_err', '{:.1e}')} | "
                  f"{f('v5ef_us')} ({f('v5ef_err', '{:.0e}')}) | {f('pick_us')} ({_kind(r.get('pick'))}) | {f('pick_pct_copy', '{:.0f}%')} | "
                  f"{f('pick_vs_bf16', '{:.2f}x')} | {f('pick_err', '{:.1e}')} | {_short(r.get('v5g_cfg'))} | {_short(r.get('v6g_cfg'))} |")  # fmt: skip
    md += ["", f"## Guard sweep (autotuned quant_matmul vs fp32 dequantized reference; tolerance {TOL})", "",
           "| shape | M | bits | sym | pick | pick rel err | max candidate err | candidates > tol | pick among them | ws clean |",
           "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for g in sorted(guard_rows, key=lambda g: (g["bits"], g["sym"], g["shape"], g["M"])):
        md.append(f"| {g['shape']} | {g['M']} | {g['bits']} | {g['sym']} | {_short(g['pick'])} | {g['pick_err']:.1e} | "
                  f"{g['max_candidate_err']:.1e} | {len(g['bad_candidates'])} | {g['pick_is_bad']} | {g['ws_clean']} |")  # fmt: skip
    if guard_rows:
        worst = max(g["pick_err"] for g in guard_rows)
        md += ["", f"Worst picked error over {len(guard_rows)} cases: {worst:.1e}; picks above tolerance: "
               f"{sum(g['pick_err'] > TOL for g in guard_rows)}. Candidates above tolerance anywhere: "
               + (", ".join(sorted({f'{_short(c)} ({g["shape"]}, M={g["M"]}, int{g["bits"]})' for g in guard_rows
                                    for c in g["bad_candidates"]})) or "none")]  # fmt: skip
    if diag:
        md += ["", "## int4 M=4 4096x11008 diagnosis (MMA kernel; 3 seeds x 3 repeats; max rel err)", "",
               "| config | epilogue fence | max rel err |", "|---|---|---|"]
        agg: dict[tuple[str, bool], float] = {}
        for d in diag:
            key = (d["cfg"], d["fence"])
            agg[key] = max(agg.get(key, 0.0), *d["errs"])
        for (cfg, fence), e in sorted(agg.items()):
            md.append(f"| {_short(cfg)} | {fence} | {e:.1e} |")
    write_report(dest, stem, md, dict(meta=meta, bench=b["rows"], guard=guard_rows, m4_diagnosis=diag))


def main() -> None:
    stem = f"kernels-{dt.date.today().isoformat()}-v6"
    ap = device_parser(("guard", "bench"), "bash bench/kernels/gemv_h200.sh", stem)
    run_phase(ap, dict(guard=lambda a: guard(a.out, a.shard, a.shards), bench=lambda a: bench(a.out)), report)


if __name__ == "__main__":
    sys.exit(main())
