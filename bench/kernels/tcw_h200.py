"""int4 g128 at M = 128..512 on one H200: the warp-specialized large-M kernel (quant_tcw, kind tcw) vs today's
large-M pick (the best quant_tcl candidate of the same run, TCL_PLANS), dequantize + cuBLAS and bf16 cuBLAS, on the
Llama-2-7B MLP / qkv shapes. Whole quant_matmul calls (the x permutation included); random weights.

Subcommands (bench/kernels/tcw_h200.sh runs them in one device call):
  bench    timing, alone on the GPU (CUDA graphs over rotating weight copies, > 3x L2), each config's error too.
  report   JSON + markdown.
  ship     (CPU) picks for tuned_table.py from saved runs: ship RUN1.json RUN2.json DEST.json
Usage: PYTHONPATH=workers:bench/kernels python3 bench/kernels/tcw_h200.py {bench,report} --out DIR
"""

from __future__ import annotations

import datetime as dt
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
    run_cfg,
    run_phase,
    shape_weights,
    write_report,
)
from gemv_h200 import make_weight, reference
from inlaid_worker.kernels.quant_matmul import quant_matmul
from inlaid_worker.kernels.quant_matmul_config import DEQUANT, QMMConfig, _tcl, m_bucket
from inlaid_worker.kernels.quant_tcl import permute_x
from inlaid_worker.kernels.quant_tcw import KINDS, MAXNREG, _tcw_kernel, tcw_args

SHAPES = {
    "7B up 4096x11008": (4096, 11008),
    "7B down 11008x4096": (11008, 4096),
    "7B qkv 4096x12288": (4096, 12288),
    "7B gate/up 4096x22016": (4096, 22016),
}
MS = tuple(int(v) for v in os.environ.get("TCW_MS", "256,512").split(","))
# (kind, block_m, stages, splits): one CTA per SM (12 warps, 240-register consumers). tcw = ping-pong + slot split-K;
# tcwn = no ping-pong (run 1's kernel with the slot epilogue), tcwx = ping-pong + read-and-clear atomic split-K
TCW_SWEEP = (("tcw", 128, 4, (1, 2, 3)), ("tcw", 256, 3, (1, 2, 3, 4)), ("tcw", 256, 2, (1,)), ("tcwn", 128, 4, (1,)),
             ("tcwn", 256, 3, (1,)), ("tcwx", 128, 4, (2,)), ("tcwx", 256, 3, (3,)))  # fmt: skip


def tcw_cands() -> list[QMMConfig]:
    return [QMMConfig(bm, 128, 128, s, 4, st, True, kind) for kind, bm, st, splits in TCW_SWEEP for s in splits]


def _kernel_only_us(x: torch.Tensor, ws: list, c: QMMConfig) -> float:
    """The tcw kernel alone on an already permuted x (the permutation's cost = whole call - this)."""
    xp = permute_x(x, None)
    y = torch.empty(x.shape[0], ws[0].out_features, dtype=x.dtype, device=x.device)
    pp, slots = KINDS[c.kind]

    def call(w) -> None:  # noqa: ANN001 - GPTQWeight
        grid, args, consts = tcw_args(xp, w, c.block_m, c.split_k, c.num_stages, y, pp, slots)
        _tcw_kernel[grid](*args, **consts, num_warps=4, maxnreg=MAXNREG)

    return time_rotated([lambda w=w: call(w) for w in ws])


def _short(c: QMMConfig) -> str:
    return f"{c.kind} m{c.block_m} n{c.block_n} s{c.split_k} w{c.num_warps} st{c.num_stages}"


def _time_cfgs(cfgs: list[QMMConfig], x: torch.Tensor, ws: list, ref: torch.Tensor) -> dict[str, tuple[float, float]]:
    out = {}
    for c in cfgs:
        try:
            err = rel(run_cfg(x, ws[0], c), ref)
            out[_short(c)] = (time_rotated([lambda w=w, c=c: quant_matmul(x, w, c) for w in ws]), err)
        except Exception as exc:  # noqa: BLE001 - reported as missing
            print(f"  {_short(c)} failed: {exc!r}"[:400], flush=True)
    return out


def bench(out: Path, shapes: list[str]) -> None:
    meta = bench_meta()
    path = out / "bench.json"
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    for name in shapes:
        k, n = SHAPES[name]
        w_bf16, _, ws, _ = shape_weights(k, n, "cuda", make_weight)
        for m in MS:
            t0 = time.time()
            x = torch.randn(m, k, device="cuda", dtype=torch.float16)
            xb = x.to(torch.bfloat16)
            ref = reference(x, ws[0])
            row: dict = dict(shape=name, K=k, N=n, M=m, flop=2.0 * m * n * k)
            row["bf16_us"] = time_rotated([lambda w=w: xb @ w for w in w_bf16])
            row["dequant"] = _time_cfgs([DEQUANT], x, ws, ref)
            row["tcl"] = _time_cfgs(_tcl(m_bucket(m), k, 128), x, ws, ref)
            row["tcw"] = _time_cfgs(tcw_cands(), x, ws, ref)
            for key in ("dequant", "tcl", "tcw"):
                ok = {c: v for c, v in row[key].items() if v[1] <= 1e-2}
                if ok:
                    cfg, (us, err) = min(ok.items(), key=lambda kv: kv[1][0])
                    row.update({f"{key}_cfg": cfg, f"{key}_us": us, f"{key}_err": err})
                row[f"{key}_max_err"] = max((v[1] for v in row[key].values()), default=None)
            if row.get("tcw_cfg"):
                best = next(c for c in tcw_cands() if _short(c) == row["tcw_cfg"])
                row["tcw_kernel_us"] = _kernel_only_us(x, ws, best)
            rows.append(row)
            print(json.dumps({a: v for a, v in row.items() if a not in ("tcl", "tcw", "dequant")}),
                  f"{time.time() - t0:.1f}s", flush=True)  # fmt: skip
            path.write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
        del w_bf16, ws
        torch.cuda.empty_cache()


def _f(v: float | None, fmt: str = "{:.1f}") -> str:
    return fmt.format(v) if v is not None else "-"


def report(out: Path, dest: Path, command: str, stem: str) -> None:
    b = load_bench(out)
    meta = dict(b["meta"], command=command)
    tests = (out / "tests.log").read_text().strip().splitlines()[-1:] if (out / "tests.log").exists() else []
    md = [f"# int4 g128 warp-specialized large-M kernel (quant_tcw) vs today's tcl pick, {meta.get('date', '')}", "",
          *report_head(meta, command), f"- GPU tests (`workers/tests/kernels/test_quant_tcw.py`): {' '.join(tests) or '-'}", "",
          "Times in us (CUDA graph over rotating weight copies, > 3x L2; events), whole quant_matmul calls (x permuted "
          "into the operand order, then the kernel); x = bf16 cuBLAS time / this time; TF = TFLOP/s. tcl = best of "
          "today's quant_tcl candidates (TCL_PLANS) in this run; tcw = best quant_tcw config (kind, block_m, split, stages; "
          "tcw = ping-pong + slot split-K, tcwn = no ping-pong, tcwx = atomic split-K); tcw kernel = that config's "
          "kernel alone on a permuted x. "
          "fp16 x, asymmetric, no act-order. err = relative Frobenius error vs the fp32 product of the dequantized "
          "weight (configs above 1e-2 are never picked).", "",
          "| shape | M | bf16 | bf16 TF | dequant | tcl (today) | tcl x bf16 | tcw | tcw x bf16 | tcw TF | tcw / tcl | "
          "tcw kernel | tcw config | tcl config | tcw max err |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in b["rows"]:
        bf = r["bf16_us"]
        tf = lambda us: f"{r['flop'] / us / 1e6:.0f}" if us else "-"  # noqa: E731
        xr = lambda us, bf=bf: f"{bf / us:.2f}x" if us else "-"  # noqa: E731
        tcl, tcw = r.get("tcl_us"), r.get("tcw_us")
        md.append(f"| {r['shape']} | {r['M']} | {bf:.1f} | {tf(bf)} | {_f(r.get('dequant_us'))} | {_f(tcl)} | {xr(tcl)} "
                  f"| {_f(tcw)} | {xr(tcw)} | {tf(tcw)} | {_f(tcw / tcl if tcw and tcl else None, '{:.2f}')} | "
                  f"{_f(r.get('tcw_kernel_us'))} | {r.get('tcw_cfg', '-')} | {r.get('tcl_cfg', '-')} | {_f(r.get('tcw_max_err'), '{:.1e}')} |")  # fmt: skip
    md += ["", "All candidates (us, rel err):", ""]
    for r in b["rows"]:
        for key in ("tcw", "tcl"):
            cands = ", ".join(f"{c} {us:.1f} ({e:.0e})" for c, (us, e) in sorted(r.get(key, {}).items(),
                                                                               key=lambda kv: kv[1][0]))  # fmt: skip
            md.append(f"- {r['shape']} M={r['M']} {key}: {cands}")
    write_report(dest, stem, md, dict(meta=meta, bench=b["rows"], tests=tests))


SHIP_GAIN = 0.03  # ship a tcw pick only where it is at least 3% faster than the same run's tcl pick in every run


def _cfg(short: str) -> QMMConfig:
    """'tcwn m128 n128 s1 w4 st4' -> its QMMConfig."""
    kind, m, n, s, w, st = short.split()
    return QMMConfig(int(m[1:]), int(n[1:]), 128, int(s[1:]), int(w[1:]), int(st[2:]), True, kind)


def ship(runs: list[Path], dest: Path) -> None:
    """Picks for bench/kernels/tuned_table.py (--merge): the last run's best tcw-family config per (shape, M), where
    every run's best tcw beat that run's tcl pick by SHIP_GAIN; printed with the ratios either way."""
    docs = [json.loads(p.read_text()) for p in runs]
    rows = []
    for r in docs[-1]["bench"]:
        same = [next(x for x in d["bench"] if x["shape"] == r["shape"] and x["M"] == r["M"]) for d in docs]
        ratios = [x["tcw_us"] / x["tcl_us"] for x in same]
        ok = all(q <= 1 - SHIP_GAIN for q in ratios)
        print(f"{r['shape']} M={r['M']}: tcw/tcl {', '.join(f'{q:.3f}' for q in ratios)} -> "
              f"{'ship ' + r['tcw_cfg'] if ok else 'keep'}")  # fmt: skip
        if ok:
            rows.append(dict(shape=r["shape"], N=r["N"], K=r["K"], M=r["M"], pick=repr(_cfg(r["tcw_cfg"])),
                             pick_us=r["tcw_us"], tcl_us=r["tcl_us"], ratios=ratios))  # fmt: skip
    meta = dict(docs[-1]["meta"], ship_rule=f"tcw <= {1 - SHIP_GAIN:.2f} x tcl in each of {[p.name for p in runs]}")
    dest.write_text(json.dumps(dict(meta=meta, bench=rows), indent=1) + "\n")
    print(f"{dest}: {len(rows)} picks")


def main() -> None:
    if sys.argv[1:2] == ["ship"]:  # ship RUN.json... DEST.json (on the CPU, from saved results)
        ship([Path(p) for p in sys.argv[2:-1]], Path(sys.argv[-1]))
        return
    stem = f"kernels-{dt.date.today().isoformat()}-s10-tcw"
    ap = device_parser(("bench",), "bash bench/kernels/tcw_h200.sh", stem)
    ap.add_argument("--shapes", default=",".join(SHAPES), help="bench: comma-separated shape names")
    run_phase(ap, dict(bench=lambda a: bench(a.out, a.shapes.split(","))), report)


if __name__ == "__main__":
    sys.exit(main())
