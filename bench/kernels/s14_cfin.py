"""Session 14: the consumer finishes the split-K sum (the "cfin" decode fusion, kernels.consumer_finish) against
today's step, on the 7B int4 random model (bench/engine/random_model), 512 cached tokens, decode CUDA graphs with
the runner's PDL default, the shipped tuner table (INLAID_QMM_TUNED=1).

s12_norm.point's protocol: per batch every variant's graph captured once on ONE runner, then --rounds rounds in
which the variants take turns (device ms: event-timed --replays back-to-back replays of the variant's own graph;
wall ms: runner.execute, median of --reps synchronised steps); logits of each variant against "none"'s.
Variants: decode fusion names; a "cfinS" part runs "cfin" with fused_norm.SUMS_MODE 2 (the sums loaded, then zeroed
after a CTA barrier), "cfinX" with mode 1 (one atomic exchange per sum), "cfin" with the module's default (runs 1-2 of
2026-12-01: mode 1; since: mode 2). --pairs A:B,... are compared round by round (B / A per round).
Usage (device): INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels python3 bench/kernels/s14_cfin.py --out DIR
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))

import s12_norm  # noqa: E402
from bench_decode import copy_bandwidth  # noqa: E402
from inlaid_worker.kernels import fused_norm  # noqa: E402
from random_model import SHAPES, make_runner, write_config  # noqa: E402
from steps import BLOCK  # noqa: E402

SUMS_DEFAULT = fused_norm.SUMS_MODE
SUMS_VARIANTS = {"cfinS": 2, "cfinX": 1}


def variant(name: str) -> str:
    """fused_norm.SUMS_MODE for a variant name (SUMS_VARIANTS, else the default) and its decode fusion name."""
    parts = name.split("+")
    fused_norm.SUMS_MODE = next((SUMS_VARIANTS[p] for p in parts if p in SUMS_VARIANTS), SUMS_DEFAULT)
    return "+".join("cfin" if p in SUMS_VARIANTS else p for p in parts)


def compare(point: dict, a: str, b: str) -> dict:
    """B against A round by round: per-round ratios of device and wall ms, rounds where B is lower, medians."""
    out: dict = dict(a=a, b=b)
    for key in ("rounds_device_ms", "rounds_wall_ms"):
        ra, rb = point[key][a], point[key][b]
        ratios = [y / x for x, y in zip(ra, rb, strict=True)]
        out[key.removeprefix("rounds_")] = dict(ratio_median=statistics.median(ratios), ratios=ratios,
                                                b_lower=sum(r < 1 for r in ratios), rounds=len(ratios),
                                                a_median=statistics.median(ra), b_median=statistics.median(rb),
                                                a_spread=max(ra) - min(ra), b_spread=max(rb) - min(rb))  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--batches", default="1,2")
    ap.add_argument("--fusions", default="none,swiglu,swiglu+cfin,swiglu+cfinS,cfin,cfinS")
    ap.add_argument("--pairs", default="swiglu:swiglu+cfin,swiglu:swiglu+cfinS,none:cfin,none:cfinS")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--replays", type=int, default=20)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--profile", default="", help="variants to profile at batch 1 (PDL mode 1): swiglu,swiglu+cfin")
    ap.add_argument("--tag", default="s14-cfin")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    s12_norm.variant = variant  # point() and profile() set each variant's switches through it
    fusions = args.fusions.split(",")
    pairs = [tuple(p.split(":")) for p in args.pairs.split(",") if p]
    dev = torch.device("cuda")
    t0 = time.time()
    cfg_dir = write_config(SHAPES["7b"], Path(tempfile.mkdtemp()) / "7b")
    runner = make_runner(cfg_dir, "int4", dev, torch.float16, 1024, BLOCK, 4, "triton", True)
    res: dict = dict(date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), device=torch.cuda.get_device_name(),
                     torch=torch.__version__, copy_GBps=copy_bandwidth(dev) / 1e9, argv=sys.argv, points=[],
                     pairs=[])  # fmt: skip
    path = args.out / f"{args.tag}.json"
    if args.profile:
        res["profile_pdl1"] = s12_norm.profile(runner, 1, args.profile.split(","), 1)
        path.write_text(json.dumps(res, indent=1))
    for b in (int(x) for x in args.batches.split(",") if x):
        point = s12_norm.point(runner, b, fusions, args, res["copy_GBps"] * 1e9)
        res["points"].append(point)
        for a, bb in pairs:
            cmp = dict(batch=b, **compare(point, a, bb))
            res["pairs"].append(cmp)
            d, w = cmp["device_ms"], cmp["wall_ms"]
            print(f"batch {b} {bb} vs {a}: device {d['b_median']:.4f} / {d['a_median']:.4f} ms = "
                  f"{d['ratio_median']:.4f}"
                  f" (lower in {d['b_lower']}/{d['rounds']}; spreads {d['b_spread']:.4f} / {d['a_spread']:.4f}) | wall "
                  f"{w['b_median']:.4f} / {w['a_median']:.4f} = {w['ratio_median']:.4f} ({w['b_lower']}/{w['rounds']})",
                  flush=True)  # fmt: skip
        path.write_text(json.dumps(res, indent=1))
    res["wall_s"] = time.time() - t0
    path.write_text(json.dumps(res, indent=1))
    print(f"wall {res['wall_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
