"""Fits the simulator's cost model (libs/sim/src/cost-model.ts) to timed steps of the real engine on a GPU.

Reads `cost_points` ({"prefill_tokens", "decode_seqs", "distinct_adapters", "rank", "kv_tokens", "step_s"})
from an engine benchmark result (bench/engine/bench_decode.py, e.g. bench/results/decode-2026-11-29-int4.json),
fits them with bench/sim/cost_fit.py (relative least squares, non-negative, held-out error), and writes the
calibration JSON the simulator reads, with the fit, its error and the points next to it. The KV capacity is
not measured: it is the arithmetic of bench/sim/kv_budget.py for the device memory given (Llama-2-7B, 4-bit).

  .venv/bin/python bench/sim/calibrate_h200.py --points bench/results/decode-2026-11-29-int4.json \
      --out libs/sim/calibration/h200-measured.json

--source-kind served: the points are served steps of the worker's engine (bench/engine/served_steps.py) rather than
the runner's timed grid (the calibration's text says which). --compare OLD.json adds the error of another
calibration file's constants on these points (all, and per step kind), e.g. the stale fit on today's steps:
  .venv/bin/python bench/sim/calibrate_h200.py --points bench/results/h200-served-2026-11-30.json \
      --source-kind served --label h200-served --compare libs/sim/calibration/h200-measured.json \
      --out libs/sim/calibration/h200-served.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cost_fit import SIM_TERMS, by_kind, choose_and_fit, parse_points, predict, rel_errors, summary  # noqa: E402
from kv_budget import kv_budget  # noqa: E402

SOURCE_KINDS = {
    "runner": "Runner steps only (no engine loop / gRPC / sampling on the host).",
    "served": (
        "Served steps: engine.step() of the worker's LLMEngine serving a trace (scheduler, adapter residency and "
        "loads, step building, runner, greedy sampling and detokenizing on the host; no gRPC / gateway), steps "
        "that compiled a kernel or captured a CUDA graph left out."
    ),
}


def compare(path: Path, points: list) -> dict:
    """Error of another calibration file's constants on these points (all, and per step kind), and its predicted
    over the measured step time."""
    old = json.loads(path.read_text())
    coef = {k: float(old.get(k) or 0.0) for k in SIM_TERMS}

    def judge(pts: list) -> dict:
        ratio = float(predict(coef, pts, "sim", 16).sum()) / sum(p.step_s for p in pts)
        return summary(rel_errors(coef, pts, "sim", 16)) | {"predicted_over_measured_time": ratio}

    out = {"file": str(path), "label": old.get("label"), "constants": coef, "all": judge(points)}
    for kind in ("decode", "prefill", "mixed"):
        pts = [p for p in points if p.kind == kind]
        if pts:
            out[kind] = judge(pts)
    return out


def load(path: Path) -> tuple[list, dict]:
    raw = json.loads(path.read_text())
    if isinstance(raw, list):
        return raw, {}
    if not isinstance(raw, dict) or "cost_points" not in raw:
        raise ValueError(f"{path}: expected a list of cost points or an object with 'cost_points'")
    return raw["cost_points"], raw.get("meta", {}) if isinstance(raw.get("meta"), dict) else {}


def pct(s: dict) -> str:
    return f"median {s['median_rel']:.1%}, p90 {s['p90_rel']:.1%} over {s['n']} points" if s.get("n") else "no points"


def build(points_raw: list, meta: dict, args: argparse.Namespace, src: str) -> dict:
    points = parse_points(points_raw)
    res = choose_and_fit(points, args.ref_rank, args.holdout_every)
    kv = kv_budget(args.device_bytes, utilization=args.utilization, adapter_slots=args.adapter_slots,
                   adapter_rank=args.ref_rank, activation_bytes=args.activation_bytes)  # fmt: skip
    device = meta.get("device", "unknown device")
    now = dt.datetime.now(dt.UTC)
    cmd = ".venv/bin/python bench/sim/calibrate_h200.py " + " ".join(sys.argv[1:])
    kinds = {k: sum(1 for p in points if p.kind == k) for k in ("decode", "prefill", "mixed")}
    return {
        "_comment": f"MEASURED steps of the engine on {device} ({src}, measured {meta.get('date', '?')}), fitted {now:%Y-%m-%d %H:%M} UTC by: {cmd}",
        "label": args.label,
        "placeholder": False,
        "source": (
            f"Relative least-squares fit (non-negative; model {res['model']}, projected to the simulator's terms at "
            f"rank {args.ref_rank}) of {len(points)} timed engine steps from {src} on {device} (Llama-2-7B shape, "
            f"4-bit g128, random weights; {kinds['decode']} decode, {kinds['prefill']} prefill, {kinds['mixed']} mixed). "
            f"Held-out error (every {args.holdout_every}th point, fit on the rest): {pct(res['heldout'])}. "
            f"{SOURCE_KINDS[args.source_kind]} KV capacity is ARITHMETIC, not measured: "
            f"{kv.kv_tokens} tokens = {args.utilization} x {args.device_bytes / 1e9:.0f} GB - weights "
            f"{kv.weight_bytes / 1e9:.2f} GB - {args.adapter_slots} rank-{args.ref_rank} adapter slots "
            f"{kv.adapter_pool_bytes / 1e9:.2f} GB - activations {kv.activation_bytes / 1e9:.2f} GB, at "
            f"{kv.kv_bytes_per_token} B/token (fp16 K+V, 32 layers x 4096). Raw points: "
            f"{args.out.name.replace('.json', '.points.json')}."
        ),
        **{k: res["constants"][k] for k in SIM_TERMS},
        "kv_blocks": kv.kv_blocks,
        "block_size": kv.block_size,
        "max_batch_rows": args.max_batch_rows,
        "max_prefill_tokens": args.max_prefill_tokens,
        "suggested_slo": {"ttft_s": args.slo_ttft, "tpot_s": args.slo_tpot},
        "fit_error": {
            **{k: res["heldout"].get(k) for k in ("median_rel", "p90_rel", "max_rel")},
            "what": "held-out serving points (adapters of the reference rank), simulator projection fitted without them",
            "n_heldout": res["heldout"].get("n"),
            "in_sample_serving": res["in_sample_sim_projection_serving"],
            "in_sample_all_points_raw_model": res["in_sample_all"],
            "by_kind_in_sample_serving": by_kind(res["constants"], points, args.ref_rank),
            "n_points": res["n_points"],
        },
        "fit": {
            "model": res["model"],
            "ref_rank": args.ref_rank,
            "raw_constants": res["raw_constants"],
            "candidates": res["candidates"],
        },  # fmt: skip
        "kv_budget": kv.as_dict(),
        "measured": {
            "points_file": src,
            "bench_meta": {k: meta[k] for k in ("date", "command", "device", "torch") if k in meta},
            "fitted_utc": now.isoformat(timespec="seconds"),
            "command": cmd,
            "source_kind": args.source_kind,
        },  # fmt: skip
        **({"compare": compare(args.compare, points)} if args.compare else {}),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--points", type=Path, required=True, help="JSON with 'cost_points' (or a bare list)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--label", default="h200-measured")
    p.add_argument("--source-kind", choices=sorted(SOURCE_KINDS), default="runner", help="what the points time")
    p.add_argument("--compare", type=Path, help="another calibration file: its error on these points")
    p.add_argument("--ref-rank", type=int, default=16, help="LoRA rank the simulated adapters have")
    p.add_argument("--holdout-every", type=int, default=5)
    p.add_argument("--device-bytes", type=float, default=141e9, help="device memory (H200: 141 GB)")
    p.add_argument("--utilization", type=float, default=0.90)
    p.add_argument("--adapter-slots", type=int, default=32)
    p.add_argument("--activation-bytes", type=int, default=1 << 30)
    p.add_argument("--max-batch-rows", type=int, default=256)
    p.add_argument("--max-prefill-tokens", type=int, default=2048)
    p.add_argument("--slo-ttft", type=float, default=2.0)
    p.add_argument("--slo-tpot", type=float, default=0.05)
    args = p.parse_args()
    args.device_bytes = int(args.device_bytes)
    raw, meta = load(args.points)
    src = str(args.points)
    out = build(raw, meta, args, src)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    args.out.with_name(args.out.name.replace(".json", ".points.json")).write_text(json.dumps(raw) + "\n")
    print(
        json.dumps(
            {k: out[k] for k in (*SIM_TERMS, "kv_blocks")}
            | {"fit_error": out["fit_error"], "model": out["fit"]["model"], "compare": out.get("compare")},
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
