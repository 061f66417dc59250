"""Session 22 (helper B): quant_tct (one-wave, full-K, 8-column-balanced mma.sync GEMV with a deep TMA ring issued
before the PDL wait) against the shipped pick and bf16 cuBLAS, one device run (s22_tct.sh):

  check   (sharded) every quant_tct config and the shipped pick of each (shape, M), PDL off and on: relative error
          vs the fp32 dequantized product (this also compiles every kernel for the timing phase)
  bench   (alone) copy bandwidth; per shape and M: bf16 cuBLAS, the shipped pick (tuned/nvidia-h200.json, launched
          through launch_quant_matmul), each tct config, iso and pdl (s8_gemv's harness: one CUDA graph over rotating
          weight copies > 3x L2, median of 10 replays; pdl = the same graph captured in pdl.scope(1)); tct's diag
          (consumers only wait and release: the ring's stream alone, wrong results) at the default config
  report  markdown + JSON: us, % of copy bandwidth (packed words + fp16 scales + packed zeros over time over the copy
          bandwidth of the same run), x bf16, relative error, for every timed config
Env: S22_SHAPES (default "7B up 4096x11008,7B down 11008x4096"), S22_MS (default 2,4,8,16), S22_CFGS (tct configs
"stages:nc", stages 0 = the deepest ring within quant_tct.SMEM_BUDGET; default "0:4,4:4,0:2").
Usage: PYTHONPATH=workers:bench/kernels python3 bench/kernels/s22_tct.py {check,bench,report} --out DIR
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
from device_common import device_parser, report_head, run_phase, short_cfg, write_report

ALL_SHAPES = {
    "7B up 4096x11008": (4096, 11008),
    "7B down 11008x4096": (11008, 4096),
    "7B gate/up 4096x22016": (4096, 22016),
    "7B qkv 4096x12288": (4096, 12288),
}
SHAPES = {s: ALL_SHAPES[s] for s in os.environ.get("S22_SHAPES", "7B up 4096x11008,7B down 11008x4096").split(",")}
MS = tuple(int(v) for v in os.environ.get("S22_MS", "2,4,8,16").split(","))
CFGS = tuple(tuple(int(v) for v in c.split(":")) for c in os.environ.get("S22_CFGS", "0:4,4:4,0:2").split(","))
TOL = 1e-2


def _tct_name(stages: int, nc: int, diag: int = 0) -> str:
    return f"tct st{stages} nc{nc}" + (" diag" if diag else "")


def _resolved(k: int, n: int, m: int, stages: int, nc: int) -> int:
    from inlaid_worker.kernels.quant_tct import default_stages, plan_tct

    return stages or default_stages(plan_tct(n), nc)


def _runs(k: int, n: int, m: int) -> list[tuple[str, object]]:
    """(name, launch(x, w, y)) of every config of (shape, M): the tct configs, the shipped pick."""
    import s8_gemv as s8
    from inlaid_worker.kernels.quant_matmul import launch_quant_matmul
    from inlaid_worker.kernels.quant_tct import launch_tct

    out: list[tuple[str, object]] = []
    for st, nc in CFGS:
        s = _resolved(k, n, m, st, nc)
        if s >= 2:
            out.append((_tct_name(s, nc), lambda x, w, y, s=s, nc=nc: launch_tct(x, w, y, s, nc)))
    old = s8.shipped(k, n, m)
    if old is not None:
        out.append((f"shipped {old}", lambda x, w, y, c=old: launch_quant_matmul(x, w, c, y)))
    return out


def check(out: Path, shard: int, shards: int) -> None:
    from bench_kernels import random_gptq, rel_err
    from inlaid_worker.kernels import pdl

    # every config's job, and one diag job a (shape, M) (index -1: compiled here for the timing phase, not checked)
    jobs = [(s, m, i) for s in SHAPES for m in MS for i in [*range(len(_runs(*SHAPES[s], m))), -1]][shard::shards]
    with (out / f"check-{shard}.jsonl").open("w") as f:
        for shape, m, i in jobs:
            k, n = SHAPES[shape]
            torch.manual_seed(0)
            w = random_gptq(k, n, 4, False)
            torch.manual_seed(m)
            x = torch.randn(m, k, device="cuda").half()
            if i < 0:
                from inlaid_worker.kernels.quant_tct import launch_tct

                st, nc = CFGS[0]
                s = _resolved(k, n, m, st, nc)
                name, run = _tct_name(s, nc, 1), lambda x, w, y, s=s, nc=nc: launch_tct(x, w, y, s, nc, diag=1)
            else:
                name, run = _runs(k, n, m)[i]
            row: dict = dict(shape=shape, M=m, cfg=name)
            t0 = time.time()
            try:
                y = torch.full((m, n), float("nan"), device="cuda", dtype=torch.float16)
                run(x, w, y)
                row["err"] = rel_err(x, w, y)
                y = torch.full((m, n), float("nan"), device="cuda", dtype=torch.float16)
                with pdl.scope(1):
                    run(x, w, y)
                row["err_pdl"] = rel_err(x, w, y)
            except Exception as exc:  # noqa: BLE001 - reported; not timed
                row["error"] = repr(exc)[:400]
            f.write(json.dumps(row) + "\n")
            f.flush()
            print(f"[check {shard}] {shape} M={m} {name} {row.get('err', row.get('error'))} {time.time() - t0:.1f}s",
                  flush=True)  # fmt: skip


def _checks(out: Path) -> dict[tuple[str, int, str], dict]:
    got = {}
    for p in sorted(out.glob("check-*.jsonl")):
        for line in p.read_text().splitlines():
            r = json.loads(line)
            if not r["cfg"].endswith("diag"):
                got[(r["shape"], r["M"], r["cfg"])] = r
    return got


def _timed(calls: list, use_pdl: bool) -> float:
    from bench_kernels import time_pdl

    return time_pdl(calls, use_pdl)


def bench(out: Path) -> None:
    from bench_kernels import copies, gptq_bytes, random_gptq
    from device_common import bench_meta
    from inlaid_worker.kernels import pdl
    from inlaid_worker.kernels.quant_tct import launch_tct

    meta = bench_meta()
    meta["pdl_supported"] = pdl.supported()
    checks = _checks(out)
    rows: list[dict] = []
    doc = dict(meta=meta, bench=rows)
    t0 = time.time()
    for shape, (k, n) in SHAPES.items():
        ws = [random_gptq(k, n, 4, False) for _ in range(copies(k * n / 2))]
        wb = [torch.randn(k, n, device="cuda", dtype=torch.bfloat16) for _ in range(copies(k * n * 2))]
        nbytes = gptq_bytes(ws[0])
        for m in MS:
            x = torch.randn(m, k, device="cuda").half()
            xb = x.bfloat16()
            y = torch.full((m, n), float("nan"), device="cuda", dtype=torch.float16)
            row: dict = dict(shape=shape, K=k, N=n, M=m, MB=nbytes / 1e6)
            row["bf16_us"] = _timed([lambda w=w: xb @ w for w in wb], False)
            cands = []
            for name, run in _runs(k, n, m):
                c = checks.get((shape, m, name), {})
                if "error" in c or not c or c["err"] > TOL or c["err_pdl"] > TOL:
                    cands.append(dict(cfg=name, skipped=c.get("error", "check failed or missing")[:200]))
                    continue
                calls = [lambda w=w, run=run: run(x, w, y) for w in ws]
                try:
                    iso, on = _timed(calls, False), _timed(calls, True)
                except Exception as exc:  # noqa: BLE001
                    cands.append(dict(cfg=name, skipped=repr(exc)[:200]))
                    continue
                cands.append(dict(cfg=name, iso_us=iso, pdl_us=on, err=c["err"], err_pdl=c["err_pdl"]))
            # the ring's stream alone at the first tct config (diag: consumers only wait and release)
            st, nc = CFGS[0]
            s = _resolved(k, n, m, st, nc)
            calls = [lambda w=w: launch_tct(x, w, y, s, nc, diag=1) for w in ws]
            try:
                cands.append(dict(cfg=_tct_name(s, nc, 1), iso_us=_timed(calls, False), pdl_us=_timed(calls, True),
                                  err=None, err_pdl=None))  # fmt: skip
            except Exception as exc:  # noqa: BLE001
                cands.append(dict(cfg=_tct_name(s, nc, 1), skipped=repr(exc)[:200]))
            row["cands"] = cands
            rows.append(row)
            print(json.dumps(row), f"{time.time() - t0:.0f}s", flush=True)
            (out / "bench.json").write_text(json.dumps(doc, indent=1))
        del ws, wb
        torch.cuda.empty_cache()


def _show(cfg: str) -> str:
    return "shipped " + short_cfg(cfg[len("shipped ") :], False) if cfg.startswith("shipped ") else cfg


def report(out: Path, dest: Path, command: str, stem: str) -> None:
    doc = json.loads((out / "bench.json").read_text())
    meta, rows = doc["meta"], doc["bench"]
    copy = meta["copy_GBps"] * 1e9

    def pct(mb: float, us: float | None) -> str:
        return "-" if not us else f"{100 * mb * 1e6 / (us * 1e-6) / copy:.1f}%"

    md = [f"# Session 22 (helper B): quant_tct, one-wave full-K column-balanced int4 GEMV, {meta.get('date', '')}", "",
          *report_head(meta, command),
          "- times: us per call, CUDA graph over rotating weight copies (> 3x L2), median of 10 replays; iso = plain "
          "launches, pdl = the same graph captured in pdl.scope(1); % copy = (packed words + fp16 scales + packed "
          "zeros) / time / the copy bandwidth above; x bf16 = bf16 cuBLAS (iso, same run) / time; err = relative "
          "error vs the fp32 dequantized product (PDL off / on); `diag` = tct's consumers only wait and release "
          "(the ring's stream alone: wrong results, no error)", "",
          "| shape | M | bf16 us | config | iso us | pdl us | % copy iso / pdl | x bf16 iso / pdl | err off / on |",
          "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        for c in r["cands"]:
            if "skipped" in c:
                md.append(f"| {r['shape']} | {r['M']} | {r['bf16_us']:.2f} | {_show(c['cfg'])} | skipped: "
                          f"{c['skipped'][:80]} | | | | |")  # fmt: skip
                continue
            err = "-" if c["err"] is None else f"{c['err']:.1e} / {c['err_pdl']:.1e}"
            md.append(f"| {r['shape']} | {r['M']} | {r['bf16_us']:.2f} | {_show(c['cfg'])} | "
                      f"{c['iso_us']:.2f} | {c['pdl_us']:.2f} | {pct(r['MB'], c['iso_us'])} / {pct(r['MB'], c['pdl_us'])} | "
                      f"{r['bf16_us'] / c['iso_us']:.2f} / {r['bf16_us'] / c['pdl_us']:.2f} | {err} |")  # fmt: skip
    md += ["", "## Best tct (least iso + pdl, diag excluded) against the shipped pick", "",
           "| shape | M | best tct | iso / pdl us | shipped iso / pdl us | tct speed-up iso / pdl | tct % copy iso / pdl | "
           "tct x bf16 iso / pdl | goal (70% and 3x) met iso / pdl |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        ok = [c for c in r["cands"] if "skipped" not in c]
        tct = [c for c in ok if c["cfg"].startswith("tct") and not c["cfg"].endswith("diag")]
        old = [c for c in ok if c["cfg"].startswith("shipped")]
        if not tct:
            continue
        b = min(tct, key=lambda c: c["iso_us"] + c["pdl_us"])
        o = old[0] if old else None

        def met(us: float) -> str:
            return "yes" if r["MB"] * 1e6 / (us * 1e-6) / copy >= 0.70 and r["bf16_us"] / us >= 3 else "no"

        md.append(f"| {r['shape']} | {r['M']} | {_show(b['cfg'])} | {b['iso_us']:.2f} / {b['pdl_us']:.2f} | "
                  + (f"{o['iso_us']:.2f} / {o['pdl_us']:.2f} | {o['iso_us'] / b['iso_us']:.3f} / "
                     f"{o['pdl_us'] / b['pdl_us']:.3f} | " if o else "- | - | ")
                  + f"{pct(r['MB'], b['iso_us'])} / {pct(r['MB'], b['pdl_us'])} | {r['bf16_us'] / b['iso_us']:.2f} / "
                  f"{r['bf16_us'] / b['pdl_us']:.2f} | {met(b['iso_us'])} / {met(b['pdl_us'])} |")  # fmt: skip
    checks = list(_checks(out).values())
    bad = [c for c in checks if "error" in c or c["err"] > TOL or c["err_pdl"] > TOL]
    worst = max((max(c["err"], c["err_pdl"]) for c in checks if "error" not in c), default=float("nan"))
    md += ["", f"Checks: {len(checks)} configs x (shape, M), {len(bad)} failed or over {TOL}; worst error {worst:.2e}."]
    md += [f"- {c['shape']} M = {c['M']} {c['cfg']}: {c.get('error', c.get('err'))}" for c in bad][:10]
    write_report(dest, stem, md, dict(meta=dict(meta, command=command), bench=rows, checks=checks))


def main() -> None:
    ap = device_parser(("check", "bench"), "bash bench/kernels/s22_tct.sh", "kernels-2026-12-02-s22-tct")
    ap.add_argument("--shard", type=int, default=0)
    ap.add_argument("--shards", type=int, default=1)
    run_phase(ap, dict(check=lambda a: check(a.out, a.shard, a.shards), bench=lambda a: bench(a.out)), report)


if __name__ == "__main__":
    sys.exit(main())
