"""Session 15: is HEAD's decode step slower than session 13's (f92593d)? Both trees in ONE process, alternating.

Session 14's closing grid (bench/results/decode-2026-12-01-s14-grid.md) measured batches 8-32 4-5% slower than
session 13's grid (-s13-grid.md), on different machines. Here the old tree runs beside HEAD: s15_regress.sh copies f92593d's workers/inlaid_worker to .carry_h2_old/inlaid_old (every "inlaid_worker" renamed "inlaid_old", so both
packages import side by side, each with its own tuner table, workspaces and policy) and its bench/engine random_model /
steps to .carry_h2_old/engine/*_old.py. Each tree builds the same 7B int4 random model (bench/engine/random_model,
seeded: the same weights), 512 cached tokens, decode CUDA graphs with each tree's defaults (decode fusion "auto":
each tree's FUSION_POLICY, PDL on, INLAID_QMM_TUNED=1).
Per batch: each tree's graph captured (two execute calls), then --rounds rounds in which the trees take turns (order
A B, then B A, alternating): device ms = event-timed --replays back-to-back replays of the tree's graph; wall ms =
runner.execute (bench_decode.py's step: synchronised, CPU work and the logits' copy to the host included), median of
--reps. Logits of HEAD against old from the same KV cache. --profile BATCHES: one replay of each tree's graph under
torch.profiler, per-kernel mean us (attribution).
Usage (device): INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels python3 bench/kernels/s15_regress.py --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
OLD = ROOT / ".carry_h2_old"
sys.path[:0] = [str(ROOT / "bench" / "engine"), str(OLD), str(OLD / "engine")]

import random_model  # noqa: E402
import random_model_old  # noqa: E402
import steps  # noqa: E402
from bench_decode import copy_bandwidth  # noqa: E402
from s9b_profile import replay_ms  # noqa: E402


def graph_of(runner, b: int):  # type: ignore[no-untyped-def]
    """The runner's captured base-model decode graph of bucket b (one per tree: each uses its "auto" fusion)."""
    keys = [k for k in runner._graphs._graphs if k[0] == b and not k[1]]
    if len(keys) != 1:
        raise RuntimeError(f"batch {b}: graph keys {keys}")
    return keys[0], runner._graphs._graphs[keys[0]]


def profile(g, label: str) -> dict:  # type: ignore[no-untyped-def]
    """Per kernel name (first 48 characters + grid): count and mean us over 3 profiled replays."""
    for _ in range(3):
        g.graph.replay()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            g.graph.replay()
        torch.cuda.synchronize()
    path = f"/tmp/s15-trace-{os.getpid()}.json"
    prof.export_chrome_trace(path)
    events = [e for e in json.loads(Path(path).read_text())["traceEvents"] if e.get("cat") == "kernel"]
    agg: dict = {}
    for e in events:
        k = f"{e['name'][:48]} grid={e.get('args', {}).get('grid')}"
        agg.setdefault(k, []).append(e["dur"])
    span = (max(e["ts"] + e["dur"] for e in events) - min(e["ts"] for e in events)) / 3
    out = dict(span_us=span, kernels={k: dict(n=len(v) / 3, mean_us=sum(v) / len(v), total_us=sum(v) / 3)
                                      for k, v in sorted(agg.items(), key=lambda kv: -sum(kv[1]))})  # fmt: skip
    print(f"profile {label}: span {span:.1f} us a replay", flush=True)
    for k, v in list(out["kernels"].items())[:14]:
        print(f"   {v['n']:5.0f} x {v['mean_us']:7.2f} us = {v['total_us']:8.1f}  {k}", flush=True)
    return out


@torch.inference_mode()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--batches", default="8,16,32,1")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--replays", type=int, default=20)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--profile", default="16,32")
    ap.add_argument("--tag", default="s15-regress")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda")
    t0 = time.time()
    res: dict = dict(date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), device=torch.cuda.get_device_name(),
                     torch=torch.__version__, copy_GBps=copy_bandwidth(dev) / 1e9, argv=sys.argv, points=[],
                     profiles={})  # fmt: skip
    trees = {}
    for name, rm in (("old", random_model_old), ("head", random_model)):
        torch.manual_seed(0)
        cfg = rm.write_config(rm.SHAPES["7b"], Path(tempfile.mkdtemp()) / "7b")
        trees[name] = rm.make_runner(cfg, "int4", dev, torch.float16, 1024, steps.BLOCK, 4, "triton", True)
        print(f"{name}: runner from {sys.modules[type(trees[name]).__module__].__file__} "
              f"({time.time() - t0:.0f} s)", flush=True)  # fmt: skip
    path = args.out / f"{args.tag}.json"
    prof_b = {int(x) for x in args.profile.split(",") if x}
    for b in (int(x) for x in args.batches.split(",") if x):
        graphs, logits = {}, {}
        for name, runner in trees.items():
            c = runner.config
            step = steps.make_step(b, 1, 512, [-1] * b, c.vocab_size, runner.num_kv_blocks)
            kv0 = runner.kv_cache.clone()
            runner.execute(step)
            runner.kv_cache.copy_(kv0)
            logits[name] = runner.execute(step).float().cpu()
            del kv0
            key, g = graph_of(runner, b)
            graphs[name] = (runner, step, key, g)
        ref = logits["old"]
        rel = float((logits["head"] - ref).norm() / ref.norm())
        argmax = float((logits["head"].argmax(-1) == ref.argmax(-1)).float().mean())
        dev_ms: dict = {n: [] for n in trees}
        wall_ms: dict = {n: [] for n in trees}
        for r in range(args.rounds):
            for name in list(trees) if r % 2 == 0 else list(trees)[::-1]:
                runner, step, _key, g = graphs[name]
                dev_ms[name].append(round(replay_ms(g.graph, args.replays), 4))
                t = steps.timed_all(lambda: runner.execute(step), dev, 2, args.reps)  # noqa: B023
                wall_ms[name].append(round(sorted(t)[len(t) // 2] * 1e3, 4))
        point = dict(batch=b, keys={n: str(v[2]) for n, v in graphs.items()}, logits_rel=rel, argmax_same=argmax,
                     rounds_device_ms=dev_ms, rounds_wall_ms=wall_ms)  # fmt: skip
        for key, rounds in (("device", dev_ms), ("wall", wall_ms)):
            ratios = [h / o for o, h in zip(rounds["old"], rounds["head"], strict=True)]
            point[key] = dict(old_median=statistics.median(rounds["old"]),
                              head_median=statistics.median(rounds["head"]), ratio_median=statistics.median(ratios), head_lower=sum(x < 1 for x in ratios),
                              old_spread=max(rounds["old"]) - min(rounds["old"]),
                              head_spread=max(rounds["head"]) - min(rounds["head"]), ratios=ratios)  # fmt: skip
        res["points"].append(point)
        d, w = point["device"], point["wall"]
        print(f"batch {b} keys {point['keys']}: device old {d['old_median']:.4f} head {d['head_median']:.4f} ms = "
              f"{d['ratio_median']:.4f} (head lower {d['head_lower']}/{args.rounds}; spreads {d['old_spread']:.4f} / "
              f"{d['head_spread']:.4f}) | wall old {w['old_median']:.4f} head {w['head_median']:.4f} = "
              f"{w['ratio_median']:.4f} ({w['head_lower']}/{args.rounds}; spreads {w['old_spread']:.4f} / "
              f"{w['head_spread']:.4f}) | logits rel {rel:.2e} argmax {argmax:.3f}", flush=True)  # fmt: skip
        if b in prof_b:
            res["profiles"][str(b)] = {n: profile(graphs[n][3], f"b{b} {n}") for n in trees}
        path.write_text(json.dumps(res, indent=1))
    res["wall_s"] = time.time() - t0
    path.write_text(json.dumps(res, indent=1))
    print(f"wall {res['wall_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
