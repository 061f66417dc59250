"""Session 15: "cfin" for the tcs kinds (kernels.consumer_finish.TCS_DEFER: the quant_tcs tensor-core GEMVs' split-K
read-and-clear epilogue deferred into the add + RMSNorm that follows, launch_tcs's `defer`) against today's step, on
the 7B int4 random model (bench/engine/random_model), 512 cached tokens, decode CUDA graphs with the runner's PDL
default, the shipped tuner table (INLAID_QMM_TUNED=1). A copy of s14_cfin.py (left as it was) with other variants.

s12_norm.point's protocol: per batch every variant's graph captured once on ONE runner, then --rounds rounds in
which the variants take turns (device ms: event-timed --replays back-to-back replays of the variant's own graph;
wall ms: runner.execute, median of --reps synchronised steps); logits of each variant against "none"'s.
Variants: decode fusion names; a "cfinT" part runs "cfin" with consumer_finish.TCS_DEFER on (tcs picks deferred too);
"cfinTO" also forces o's pick at M = 2..16 to O_TCS (a tcs2a plan, deferred; the shipped o picks there are quant_tcg /
quant_tc kinds, which have no deferred epilogue). Every other name: TCS_DEFER off, the tuner's picks.
--pairs A:B,... are compared round by round (B / A per round). Each variant's deferred GEMVs at capture (M, N, K,
kind) are recorded in the JSON ("deferred").
Usage (device): INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels python3 bench/kernels/s15_tcsfin.py --out DIR
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))

import s12_norm  # noqa: E402
from bench_decode import copy_bandwidth  # noqa: E402
from inlaid_worker.kernels import consumer_finish  # noqa: E402
from inlaid_worker.kernels.quant_matmul_config import QMMConfig  # noqa: E402
from random_model import SHAPES, make_runner, write_config  # noqa: E402
from s14_cfin import compare  # noqa: E402
from steps import BLOCK  # noqa: E402

CONFIG_FOR = consumer_finish.config_for
LAUNCH = consumer_finish._launch_deferred
DEFERRED: list = []  # (M, N, K, kind) of each deferred launch since the last variant() call


def o_tcs(x2: torch.Tensor, w) -> QMMConfig:  # type: ignore[no-untyped-def]
    """Variant "cfinTO": o (a square 4096 weight) at M = 2..16 as tcs2a (block_m 8 / 16, two warpgroups, split 4, 4 stages);
    every other GEMV the tuner's pick."""
    m = x2.shape[0]
    if w.in_features == w.out_features and 2 <= m <= 16:
        return QMMConfig(8 if m <= 8 else 16, 128, 128, 4, 4, 4, True, "tcs2a")
    return CONFIG_FOR(x2, w)


def recording(x2, w, cfg, h):  # type: ignore[no-untyped-def]
    DEFERRED.append((x2.shape[0], w.out_features, w.in_features, cfg.kind))
    return LAUNCH(x2, w, cfg, h)


def variant(name: str) -> str:
    """consumer_finish's switches for a variant name and its decode fusion name (module docstring)."""
    parts = name.split("+")
    consumer_finish.TCS_DEFER = any(p in ("cfinT", "cfinTO") for p in parts)
    consumer_finish.config_for = o_tcs if "cfinTO" in parts else CONFIG_FOR
    consumer_finish._launch_deferred = recording
    DEFERRED.clear()
    return "+".join("cfin" if p in ("cfinT", "cfinTO") else p for p in parts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--batches", default="4,8,16")
    ap.add_argument("--fusions", default="none,merge,swiglu+cfin,swiglu+cfinT,swiglu+cfinTO")
    ap.add_argument("--pairs", default="none:swiglu+cfinT,swiglu+cfin:swiglu+cfinT,none:swiglu+cfinTO,"
                                       "merge:swiglu+cfinT")  # fmt: skip
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--replays", type=int, default=20)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--plan", default="", help="per-batch fusions, overriding --batches / --fusions: "
                                                "'2=swiglu+cfin+q,swiglu+cfinT+q;8=none,merge'")  # fmt: skip
    ap.add_argument("--profile", default="", help="'B=f1,f2': one replay of each at batch B under torch.profiler")
    ap.add_argument("--extra-names", default="", help="fusion names the decode graphs accept for this run only "
                                                      "(bench-only: e.g. merge+cfin)")  # fmt: skip
    ap.add_argument("--tag", default="s15-tcsfin")
    ap.add_argument("--shape", default="7b", help="random_model.SHAPES key (7b, 13b)")
    args = ap.parse_args()
    extra = tuple(n for n in args.extra_names.split(",") if n)
    if extra:  # both checks read their module's global at call time
        from inlaid_worker.model import decode_graphs, llama_fast

        llama_fast.DECODE_FUSIONS = llama_fast.DECODE_FUSIONS + extra
        decode_graphs.DECODE_FUSIONS = decode_graphs.DECODE_FUSIONS + extra
    plan = {int(b): f.split(",") for b, f in (x.split("=") for x in args.plan.split(";") if x)} if args.plan else {
        int(b): args.fusions.split(",") for b in args.batches.split(",") if b}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    deferred: dict = {}

    def tracked(name: str) -> str:  # point() calls variant(f) before each capture and each timing turn
        if DEFERRED and last[0] is not None:
            deferred.setdefault(last[0], sorted(set(DEFERRED)))
        last[0] = name
        return variant(name)

    last: list = [None]
    s12_norm.variant = tracked
    pairs = [tuple(p.split(":")) for p in args.pairs.split(",") if p]
    dev = torch.device("cuda")
    t0 = time.time()
    cfg_dir = write_config(SHAPES[args.shape], Path(tempfile.mkdtemp()) / args.shape)
    runner = make_runner(cfg_dir, "int4", dev, torch.float16, 1024, BLOCK, 4, "triton", True)
    res: dict = dict(date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), device=torch.cuda.get_device_name(),
                     torch=torch.__version__, copy_GBps=copy_bandwidth(dev) / 1e9, argv=sys.argv, points=[],
                     pairs=[], deferred={}, extra_names=list(extra))  # fmt: skip
    path = args.out / f"{args.tag}.json"
    if args.profile:
        pb, pf = args.profile.split("=")
        res["profile"] = dict(batch=int(pb), kernels=s12_norm.profile(runner, int(pb), pf.split(","), 1))
        path.write_text(json.dumps(res, indent=1))
    for b, fusions in plan.items():
        deferred.clear()
        last[0] = None
        point = s12_norm.point(runner, b, fusions, args, res["copy_GBps"] * 1e9)
        res["deferred"][str(b)] = {k: [list(t) for t in v] for k, v in deferred.items()}
        print(f"batch {b} deferred at capture: {res['deferred'][str(b)]}", flush=True)
        res["points"].append(point)
        for a, bb in pairs:
            if a not in fusions or bb not in fusions:
                continue
            cmp = dict(batch=b, **compare(point, a, bb))
            res["pairs"].append(cmp)
            d, w = cmp["device_ms"], cmp["wall_ms"]
            print(f"batch {b} {bb} vs {a}: device {d['b_median']:.4f} / {d['a_median']:.4f} ms = "
                  f"{d['ratio_median']:.4f}"
                  f" (lower in {d['b_lower']}/{d['rounds']}; spreads {d['b_spread']:.4f} / {d['a_spread']:.4f}) | wall "
                  f"{w['b_median']:.4f} / {w['a_median']:.4f} = {w['ratio_median']:.4f} ({w['b_lower']}/{w['rounds']})",
                  flush=True)  # fmt: skip
        path.write_text(json.dumps(res, indent=1))
    variant("none")
    res["wall_s"] = time.time() - t0
    path.write_text(json.dumps(res, indent=1))
    print(f"wall {res['wall_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
