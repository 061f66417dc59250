"""int4 g128 at M = 64..512 on one H200: the large-M Gluon kernel (quant_tcl, kinds tcl / tclp / tcls) vs the best
small-M tensor-core config (tc / tc2 / tcf2) vs dequantize + cuBLAS vs bf16 cuBLAS vs torch's tinygemm, on the
Llama-2-7B MLP / qkv shapes. Random weights (speed does not depend on values).

Subcommands (bench/kernels/tcl_h200.sh runs them in one device call):
  guard --shard i --shards n   correctness (parallel; also fills Triton's cache): every tcl and tc candidate vs an
                               fp32 product of the dequantized weight; asym fp16, sym + act-order, bf16.
  bench                        timing, alone on the GPU (CUDA graphs over rotating weight copies, > 3x L2).
  report                       JSON + markdown.
Usage: PYTHONPATH=workers:bench/kernels python3 bench/kernels/tcl_h200.py {guard,bench,report} --out DIR
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
import time
import zlib
from pathlib import Path

import torch
from bench_kernels import time_rotated
from device_common import (
    bench_meta,
    device_parser,
    guard_lines,
    guard_shard,
    load_bench,
    rel,
    report_head,
    run_cfg,
    run_phase,
    shape_weights,
    write_report,
)
from gemv_h200 import make_weight, reference
from inlaid_worker.kernels import quant_common
from inlaid_worker.kernels.quant_matmul import quant_matmul
from inlaid_worker.kernels.quant_matmul_config import DEQUANT, QMMConfig, _tc, _tcl, m_bucket
from inlaid_worker.kernels.quant_tcl import _tcl_kernel, permute_x, tcl_args

SHAPES = {
    "7B up 4096x11008": (4096, 11008),
    "7B down 11008x4096": (11008, 4096),
    "7B qkv 4096x12288": (4096, 12288),
    "7B gate/up 4096x22016": (4096, 22016),
}
MS = (64, 128, 256, 512)
TOL = 1e-2


def _cands(m: int, k: int) -> tuple[list[QMMConfig], list[QMMConfig]]:
    """(tc / tc2 / tcf2 candidates, tcl / tclp / tcls candidates) of this M bucket."""
    mb = m_bucket(m)
    return _tc(min(mb, 256), k, 128), _tcl(mb, k, 128)


def _short(c: QMMConfig) -> str:
    return f"{c.kind} m{c.block_m} n{c.block_n} s{c.split_k} w{c.num_warps} st{c.num_stages}"


def guard_case(name: str, k: int, n: int, m: int, sym: bool, act: bool, dtype: torch.dtype) -> dict:
    torch.manual_seed(zlib.crc32(f"{name}/{m}/{sym}/{act}/{dtype}".encode()))
    w = make_weight(k, n, 4, sym)
    if act:  # a random act-order permutation (rows of the packed weight are already "sorted")
        w = dataclasses.replace(w, perm=torch.randperm(k, device="cuda").int())
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    ref = reference(x[:, w.perm.long()] if act else x, w)
    tc, tcl = _cands(m, k)
    errs = {}
    for c in tcl + (tc if not act and dtype == torch.float16 else []):
        try:
            errs[_short(c)] = rel(run_cfg(x, w, c), ref)
        except Exception as exc:  # noqa: BLE001 - reported
            errs[_short(c)] = f"error {exc!r}"[:300]
    clean = all(bool((ws == 0).all()) and bool((cnt == 0).all()) for ws, cnt in quant_common._WORKSPACES.values())
    tcl_errs = [e for c, e in errs.items() if c.startswith("tcl")]
    numeric = [e for e in tcl_errs if isinstance(e, float)]
    return dict(shape=name, K=k, N=n, M=m, sym=sym, act=act, dtype=str(dtype).split(".")[-1], errs=errs,
                max_tcl_err=max(numeric) if numeric else None, ws_clean=clean,
                bad=sorted(c for c, e in errs.items() if not isinstance(e, float) or e > TOL))  # fmt: skip


def guard(out: Path, shard: int, shards: int) -> None:
    cases = [(nm, k, n, m, False, False, torch.float16) for m in MS for nm, (k, n) in SHAPES.items()]
    cases += [(nm, k, n, 256, True, True, torch.float16) for nm, (k, n) in SHAPES.items()]
    cases += [(nm, k, n, 200, False, True, torch.bfloat16) for nm, (k, n) in list(SHAPES.items())[:2]]
    guard_shard(out, shard, cases[shard::shards], guard_case,
                lambda row: f"tcl_max={row.get('max_tcl_err')} bad={row.get('bad')}")  # fmt: skip


def _time_cfgs(cfgs: list[QMMConfig], x: torch.Tensor, ws: list, ref: torch.Tensor) -> dict[str, tuple[float, float]]:
    """{config: (us, rel err)} of each config (quant_matmul with that config: the x permutation included)."""
    out = {}
    for c in cfgs:
        try:
            err = rel(run_cfg(x, ws[0], c), ref)
            out[_short(c)] = (time_rotated([lambda w=w, c=c: quant_matmul(x, w, c) for w in ws]), err)
        except Exception as exc:  # noqa: BLE001 - reported as missing
            print(f"  {_short(c)} failed: {exc!r}"[:300], flush=True)
    return out


def _kernel_only_us(x: torch.Tensor, ws: list, c: QMMConfig) -> float:
    """The tcl kernel alone on an already permuted x (what the permutation costs = full call - this)."""
    xp = permute_x(x, None)
    y = torch.empty(x.shape[0], ws[0].out_features, dtype=x.dtype, device=x.device)
    pipe = ("tcl", "tclp", "tcls").index(c.kind)

    def call(w) -> None:  # noqa: ANN001 - GPTQWeight
        grid, args, consts = tcl_args(xp, w, c.block_m, c.block_n, c.split_k, c.num_warps, c.num_stages, pipe, y)
        _tcl_kernel[grid](*args, **consts, num_warps=c.num_warps)

    return time_rotated([lambda w=w: call(w) for w in ws])


def bench(out: Path, shapes: list[str]) -> None:
    meta = bench_meta()
    path = out / "bench.json"
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    for name in shapes:
        k, n = SHAPES[name]
        w_bf16, tg, ws, _ = shape_weights(k, n, "cuda", make_weight)
        for m in MS:
            t0 = time.time()
            x = torch.randn(m, k, device="cuda", dtype=torch.float16)
            xb = x.to(torch.bfloat16)
            ref = reference(x, ws[0])
            row: dict = dict(shape=name, K=k, N=n, M=m, flop=2.0 * m * n * k)
            row["bf16_us"] = time_rotated([lambda w=w: xb @ w for w in w_bf16])
            row["tinygemm_us"] = time_rotated([lambda f=f: f(xb) for f in tg]) if tg and m <= 256 else None
            tc, tcl = _cands(m, k)
            row["dequant"] = _time_cfgs([DEQUANT], x, ws, ref)
            row["tc"] = _time_cfgs(tc, x, ws, ref)
            row["tcl"] = _time_cfgs(tcl, x, ws, ref)
            for key in ("dequant", "tc", "tcl"):
                if row[key]:
                    cfg, (us, err) = min(row[key].items(), key=lambda kv: kv[1][0])
                    row.update({f"{key}_cfg": cfg, f"{key}_us": us, f"{key}_err": err})
            if row.get("tcl_cfg"):
                best = next(c for c in tcl if _short(c) == row["tcl_cfg"])
                row["tcl_kernel_us"] = _kernel_only_us(x, ws, best)
            rows.append(row)
            print(json.dumps({a: v for a, v in row.items() if a not in ("tc", "tcl")}), f"{time.time() - t0:.1f}s",
                  flush=True)  # fmt: skip
            path.write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
        del w_bf16, tg, ws
        torch.cuda.empty_cache()


def _fmt(v: float | None, fmt: str = "{:.1f}") -> str:
    return fmt.format(v) if v is not None else "-"


def report(out: Path, dest: Path, command: str, stem: str) -> None:
    b = load_bench(out)
    guard_rows = guard_lines(out)
    meta = dict(b["meta"], command=command)
    md = [f"# int4 g128 large-M tensor-core kernel (quant_tcl) at M = 64..512, {meta.get('date', '')}", "",
          *report_head(meta, command), "",
          "Times in us (CUDA graph over rotating weight copies, > 3x L2; events); x = bf16 cuBLAS time / this time; "
          "TF = TFLOP/s. tcl = best of the tcl / tclp / tcls candidates, the whole quant_matmul call (x permuted "
          "into the operand order by quant_tcl.permute_x, then the kernel); tcl kernel = the kernel alone on a "
          "permuted x. tc = best tc / tc2 / tcf2 config. fp16 x, asymmetric, no act-order; tinygemm = "
          "torch._weight_int4pack_mm (bf16; not run at M = 512). err = relative Frobenius error vs the fp32 "
          "product of the dequantized weight.", "",
          "| shape | M | bf16 | bf16 TF | tinygemm | dequant+cuBLAS | tc best | tcl | tcl x bf16 | tcl TF | "
          "tcl kernel | tcl config | tcl err |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in b["rows"]:
        bf = r["bf16_us"]

        def x(key: str, r: dict = r, bf: float = bf) -> str:
            return f"{r[key]:.1f} ({bf / r[key]:.2f}x)" if r.get(key) else "-"

        tf = lambda us: f"{r['flop'] / us / 1e6:.0f}" if us else "-"  # noqa: E731
        md.append(f"| {r['shape']} | {r['M']} | {bf:.1f} | {tf(bf)} | {x('tinygemm_us')} | {x('dequant_us')} | "
                  f"{x('tc_us')} | {_fmt(r.get('tcl_us'))} | {_fmt(bf / r['tcl_us'] if r.get('tcl_us') else None, '{:.2f}x')} | "
                  f"{tf(r.get('tcl_us'))} | {_fmt(r.get('tcl_kernel_us'))} | {r.get('tcl_cfg', '-')} | "
                  f"{_fmt(r.get('tcl_err'), '{:.1e}')} |")  # fmt: skip
    md += ["", "All large-M candidates (us):", ""]
    for r in b["rows"]:
        cands = ", ".join(f"{c} {us:.1f}" for c, (us, _) in sorted(r.get("tcl", {}).items(), key=lambda kv: kv[1][0]))
        md.append(f"- {r['shape']} M={r['M']}: {cands}")
    md += ["", f"## Guard (every tcl candidate, and tc at fp16 without act-order, vs fp32; tolerance {TOL})", "",
           "| shape | M | sym | act | dtype | max tcl err | configs > tol or failing | ws clean |",
           "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for g in sorted(guard_rows, key=lambda g: (g.get("dtype", ""), g["sym"], g["shape"], g["M"])):
        if "error" in g:
            md.append(f"| {g['shape']} | {g['M']} | {g['sym']} | {g['act']} | - | error: {g['error'][:120]} | | |")
            continue
        md.append(f"| {g['shape']} | {g['M']} | {g['sym']} | {g['act']} | {g['dtype']} | "
                  f"{_fmt(g['max_tcl_err'], '{:.1e}')} | {', '.join(g['bad']) or 0} | {g['ws_clean']} |")  # fmt: skip
    ok = [g for g in guard_rows if "error" not in g]
    md += ["", f"Guard: {len(guard_rows)} cases ({len(guard_rows) - len(ok)} errors); configs above tolerance or "
           f"failing: {sum(len(g['bad']) for g in ok)}."]  # fmt: skip
    write_report(dest, stem, md, dict(meta=meta, bench=b["rows"], guard=guard_rows))


def main() -> None:
    stem = f"kernels-{dt.date.today().isoformat()}-tcl"
    ap = device_parser(("guard", "bench"), "bash bench/kernels/tcl_h200.sh", stem)
    ap.add_argument("--shapes", default=",".join(SHAPES), help="bench: comma-separated shape names")
    run_phase(ap, dict(guard=lambda a: guard(a.out, a.shard, a.shards), bench=lambda a: bench(a.out, a.shapes.split(","))),
              report)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
