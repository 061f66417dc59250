"""Shared steps of the one-GPU kernel benches (gemv_h200.py, gemv_v7.py, int3_h200.py, tc_h200.py, tcl_h200.py):
per shape the rotating weight copies, per (shape, M) the bf16 / tinygemm baselines and the autotuned pick, the best
config of a kernel family re-timed from the tuner's log, the %copy / x bf16 ratios; and the phases' command line
and the report's reading and writing. The timing needs CUDA (graphs); the report steps also run on a CPU.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
import triton
from bench_kernels import copies, copy_bandwidth, gptq_bytes, time_rotated, tinygemm_fns
from inlaid_worker.kernels import quant_matmul_config
from inlaid_worker.kernels.gptq_packing import GPTQWeight
from inlaid_worker.kernels.quant_matmul import launch_quant_matmul, quant_matmul
from inlaid_worker.kernels.quant_matmul_config import QMMConfig


def rel(y: torch.Tensor, ref: torch.Tensor) -> float:
    e = float((y.float() - ref).norm() / ref.norm())
    return e if e == e else float("inf")


def run_cfg(x: torch.Tensor, w: GPTQWeight, cfg: QMMConfig) -> torch.Tensor:
    y = torch.empty(x.shape[0], w.out_features, dtype=x.dtype, device=x.device)
    launch_quant_matmul(x, w, cfg, y)
    return y


def best_in_log(log: list, pred) -> tuple[str, float] | None:
    """The fastest (config repr, time) of the tuner's log whose repr passes pred."""
    cands = [(c, t) for c, t in log if t > 0 and pred(c)]
    return min(cands, key=lambda ct: ct[1]) if cands else None


def bench_meta() -> dict:
    """Date, device, versions and the measured copy bandwidth (printed)."""
    meta = dict(date=dt.date.today().isoformat(), device=torch.cuda.get_device_name(), torch=torch.__version__,
                triton=triton.__version__, copy_GBps=copy_bandwidth() / 1e9)  # fmt: skip
    print(f"copy bandwidth {meta['copy_GBps']:.0f} GB/s", flush=True)
    return meta


def shape_weights(k: int, n: int, device: str, make_weight: Callable[..., GPTQWeight]) -> tuple:
    """(bf16 weight copies, tinygemm calls, int4 asym weight copies, packed bytes of one), each > 3x L2."""
    w_bf16 = [torch.randn(k, n, device=device, dtype=torch.bfloat16) for _ in range(copies(k * n * 2))]
    tg = tinygemm_fns(k, n, copies(k * n / 2))
    ws = [make_weight(k, n, 4, False) for _ in range(copies(k * n / 2))]
    return w_bf16, tg, ws, gptq_bytes(ws[0])


def tuned_row(name: str, k: int, n: int, x16: torch.Tensor, ref: torch.Tensor, weights: tuple) -> tuple[dict, list]:
    """A (shape, M) row with the bf16 / tinygemm baselines and the autotuned pick; and the tuner's log."""
    w_bf16, tg, ws, nbytes = weights
    xb = x16.to(torch.bfloat16)
    row: dict = dict(shape=name, K=k, N=n, M=x16.shape[0], MB=nbytes / 1e6)
    row["bf16_us"] = time_rotated([lambda w=w: xb @ w for w in w_bf16])
    row["tinygemm_us"] = time_rotated([lambda f=f: f(xb) for f in tg]) if tg else None
    quant_matmul_config._TUNED.clear()
    y = quant_matmul(x16, ws[0])  # tunes: every candidate timed (cold L2, graph) and checked
    pick = quant_matmul_config.LAST_PICK[0]
    log = quant_matmul_config.TUNE_LOG.get(str(quant_matmul_config._key(x16, ws[0])[2:]), [])
    row["tune_log"] = log
    row["pick"] = str(pick)
    row["pick_err"] = rel(y, ref)
    row["pick_us"] = time_rotated([lambda w=w: quant_matmul(x16, w) for w in ws])
    return row, log


def time_best(row: dict, label: str, log: list, pred, x16: torch.Tensor, ws: list, ref: torch.Tensor) -> None:
    """row[label_cfg/_err/_us]: the tuner's fastest config passing pred, re-timed in the graph harness."""
    best = best_in_log(log, pred)
    if best is None:
        return
    cfg = eval(best[0], {"QMMConfig": QMMConfig})  # noqa: S307 - our own repr
    row[f"{label}_cfg"] = best[0]
    row[f"{label}_err"] = rel(run_cfg(x16, ws[0], cfg), ref)
    row[f"{label}_us"] = time_rotated([lambda w=w, c=cfg: quant_matmul(x16, w, c) for w in ws])


def add_ratios(row: dict, keys: tuple, nbytes: float, copy_gbps: float) -> None:
    """row[key_pct_copy] and row[key_vs_bf16] for each key with a time."""
    for key in keys:
        if row.get(f"{key}_us"):
            row[f"{key}_pct_copy"] = 100 * nbytes / (row[f"{key}_us"] * 1e-6) / (copy_gbps * 1e9)
            row[f"{key}_vs_bf16"] = row["bf16_us"] / row[f"{key}_us"]


def print_row(row: dict, t0: float) -> None:
    print(json.dumps({a: (round(v, 3) if isinstance(v, float) else v) for a, v in row.items() if a != "tune_log"}),
          f"{time.time() - t0:.1f}s", flush=True)  # fmt: skip


def load_bench(out: Path) -> dict:
    """The bench phase's bench.json in the work folder (meta + rows); empty when the phase did not run."""
    return json.loads((out / "bench.json").read_text()) if (out / "bench.json").exists() else dict(meta={}, rows=[])


def short_cfg(cfg: str | None, with_block_k: bool = True) -> str:
    """A QMMConfig repr as "kind m.. n.. [k..] s.. w.. st.." for the report tables."""
    if not cfg:
        return "-"
    c = eval(cfg, {"QMMConfig": QMMConfig})  # noqa: S307 - our own repr
    if c is None:
        return "untuned default"
    k = f" k{c.block_k}" if with_block_k else ""
    return f"{c.kind} m{c.block_m} n{c.block_n}{k} s{c.split_k} w{c.num_warps} st{c.num_stages}"


def report_head(meta: dict, command: str) -> list[str]:
    """The report's command, device / versions and copy bandwidth lines."""
    return [f"- command: `{command}`", f"- device: {meta.get('device')}; torch {meta.get('torch')}, triton {meta.get('triton')}",
            f"- measured copy bandwidth {meta.get('copy_GBps', 0):.0f} GB/s"]  # fmt: skip


def guard_shard(out: Path, shard: int, cases: list[tuple], case_fn: Callable[..., dict],
                line: Callable[[dict], str]) -> None:  # fmt: skip
    """Run the guard cases of one shard into out/guard-<shard>.jsonl, a JSON row each as it finishes, and a progress
    line "[guard shard] case[:6] line(row) seconds". A case (shape, K, N, M, sym, act, ...) that raises becomes
    its error row, so the other cases still run."""
    with (out / f"guard-{shard}.jsonl").open("w") as f:
        for case in cases:
            t0 = time.time()
            try:
                row = case_fn(*case)
            except Exception as exc:  # noqa: BLE001 - reported
                row = dict(shape=case[0], M=case[3], sym=case[4], act=case[5], error=repr(exc)[:500])
            f.write(json.dumps(row) + "\n")
            f.flush()
            print(f"[guard {shard}] {case[:6]} {line(row)} {time.time() - t0:.1f}s", flush=True)


def guard_lines(out: Path) -> list[dict]:
    """Every JSON line of the guard phase's shards (guard-*.jsonl) in the work folder, shard by shard."""
    return [json.loads(line) for p in sorted(out.glob("guard-*.jsonl")) for line in p.read_text().splitlines()]


def cells(r: dict) -> Callable[..., str]:
    """f(key, fmt="{:.1f}"): row r's value at key formatted for a table cell, "-" where it is absent or None."""

    def f(key: str, fmt: str = "{:.1f}") -> str:
        return fmt.format(r[key]) if r.get(key) is not None else "-"

    return f


def write_report(dest: Path, stem: str, md: list[str], payload: dict) -> None:
    """dest/stem.md (the markdown lines) and dest/stem.json (payload), then the markdown on stdout."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / f"{stem}.md").write_text("\n".join(md) + "\n")
    (dest / f"{stem}.json").write_text(json.dumps(payload, indent=1))
    print("\n".join(md))


def device_parser(phases: tuple[str, ...], command: str, stem: str) -> argparse.ArgumentParser:
    """A bench's command line: the phase (phases, then "report"), the work folder, the report's destination,
    command line and file stem; with a "guard" phase its --shard / --shards. A script adds its own options."""
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=[*phases, "report"])
    ap.add_argument("--out", type=Path, required=True, help="work folder (phase shards, bench.json)")
    ap.add_argument("--dest", type=Path, default=None, help="report: where the JSON and markdown go (default --out)")
    if "guard" in phases:
        ap.add_argument("--shard", type=int, default=0)
        ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--command", default=command)
    ap.add_argument("--stem", default=stem)
    return ap


def run_phase(ap: argparse.ArgumentParser, phases: dict[str, Callable[[argparse.Namespace], None]],
              report: Callable[[Path, Path, str, str], None]) -> None:  # fmt: skip
    """Parse the command line and run the chosen phase (report: report(out, dest or out, command, stem))."""
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.what == "report":
        report(args.out, args.dest or args.out, args.command, args.stem)
    else:
        phases[args.what](args)
