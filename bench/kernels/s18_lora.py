"""Session 18 (issue 4): the 7B int4 batch-32 decode step with multi-LoRA, the BGMV kernels (kernels.lora_fused, one
row per program: a shared adapter is read once per row) against the grouped ones (kernels.lora_grouped: an adapter's
rows grouped on the device, read once per 16 rows), A/B in one process.

7B int4 random model (bench/engine/random_model), fp16, 512 cached tokens, batch 32, decode CUDA graphs (the runner's
defaults), the shipped tuner table (INLAID_QMM_TUNED=1). Adapters: random, rank 16 then 64 (pools only grow, so
ascending), on q/k/v/o ("qkvo") or all 7 linears ("all"); 1 adapter (every row the same slot) or 32 (one each).
Per point both variants' graphs are captured once on ONE runner (kernel_lora.GROUPED flipped between captures), then
--rounds rounds in which they take turns (s16_b1.py's protocol): device ms (event-timed --replays back-to-back
replays of the variant's own graph) and wall ms (runner.execute, median of --reps synchronised steps); the base-only
step (no adapter) is timed the same way in every round. Logits of the grouped variant against the BGMV one's.
--profile POINTS: torch.profiler over one replay of each variant's graph at those points: GPU time per kernel.

Usage (device): INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels python3 bench/kernels/s18_lora.py --out DIR
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

from bench_decode import copy_bandwidth  # noqa: E402
from inlaid_worker.model import kernel_lora  # noqa: E402
from random_model import SHAPES, TARGETS, adapter_bytes, kv_bytes, make_runner, weight_bytes, write_config  # noqa: E402
from s9b_profile import replay_ms  # noqa: E402
from steps import BLOCK, load_adapters, make_step, timed_all  # noqa: E402

KEEP: list = []  # captured graphs stay alive (a pool whose graphs died cannot be captured into again)
VARIANTS = {"bgmv": False, "grouped": True}
POINTS = "16:qkvo:32,16:qkvo:1,16:all:1,16:all:32,64:qkvo:1,64:all:1,64:all:32"


def capture(runner, step, grouped: bool | None) -> tuple:  # type: ignore[no-untyped-def]
    """(graph key, its _Graph popped from the runner, logits) of `step` with kernel_lora.GROUPED = grouped."""
    dg = runner._graphs
    before = set(dg._graphs)
    if grouped is not None:
        kernel_lora.GROUPED = grouped
    logits = runner.execute(step).clone()
    key = next(k for k in dg._graphs if k not in before)
    g = dg._graphs.pop(key)
    KEEP.append(g)
    return key, g, logits


def time_round(runner, step, key, g, args, grouped: bool | None = None) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(device ms, wall ms) of the graph g at key; grouped: kernel_lora.GROUPED for the wall steps (the setting is
    part of the graph's key since session 18's per-step rule: the steps must look up g's key, not capture anew)."""
    dg = runner._graphs
    if grouped is not None:
        kernel_lora.GROUPED = grouped
    dg._graphs[key] = g
    dev = replay_ms(g.graph, args.replays)
    t = timed_all(lambda: runner.execute(step), runner.device, 1, args.reps)
    del dg._graphs[key]
    return round(dev, 4), round(sorted(t)[len(t) // 2] * 1e3, 4)


def profile_graph(g) -> dict:  # type: ignore[no-untyped-def]
    """GPU us per kernel name over one replay."""
    for _ in range(2):
        g.graph.replay()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        g.graph.replay()
        torch.cuda.synchronize()
    out: dict = {}
    for e in prof.key_averages():
        us = float(getattr(e, "self_device_time_total", 0.0) or 0.0)
        if us > 0:
            out[e.key[:70]] = dict(us=round(us, 1), n=e.count)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["us"]))


@torch.inference_mode()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--points", default=POINTS, help="rank:targets:distinct, comma separated (ascending ranks)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--replays", type=int, default=10)
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--profile", default="64:all:1,64:all:32")
    ap.add_argument("--max-seconds", type=float, default=80.0, help="no new point after S seconds")
    ap.add_argument("--tag", default="s18-lora")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda")
    t0 = time.time()
    shape = SHAPES["7b"]
    cfg_dir = write_config(shape, Path(tempfile.mkdtemp()) / "7b")
    b, ctx = args.batch, 512
    pool = b * (ctx // BLOCK + 1) * 2
    runner = make_runner(cfg_dir, "int4", dev, torch.float16, pool, BLOCK, 32, "triton", True)
    c = runner.config
    res: dict = dict(date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), device=torch.cuda.get_device_name(),
                     torch=torch.__version__, copy_GBps=copy_bandwidth(dev) / 1e9, argv=sys.argv, batch=b,
                     context=ctx, points=[])  # fmt: skip
    path = args.out / f"{args.tag}.json"
    base_bytes = weight_bytes(runner.weights, b) + kv_bytes(c, b * ctx, 2)
    base_step = make_step(b, 1, ctx, [-1] * b, c.vocab_size, pool)
    base = capture(runner, base_step, None)
    print(f"setup {time.time() - t0:.0f} s, copy {res['copy_GBps']:.0f} GB/s", flush=True)
    loaded, slots = None, []
    for spec in args.points.split(","):
        if time.time() - t0 > args.max_seconds:
            res.setdefault("skipped", []).append(spec)
            continue
        rank, targets, distinct = spec.split(":")
        rank, distinct = int(rank), int(distinct)
        if loaded != (rank, targets):
            slots = load_adapters(runner, rank, TARGETS[targets], 32, targets)
            loaded = (rank, targets)
        step = make_step(b, 1, ctx, [slots[i % distinct] for i in range(b)], c.vocab_size, pool)
        graphs = {v: capture(runner, step, on) for v, on in VARIANTS.items()}
        ref = graphs["bgmv"][2].float()
        check = {v: dict(rel=float((lg.float() - ref).norm() / ref.norm()),
                         argmax=float((lg.argmax(-1) == ref.argmax(-1)).float().mean())) for v, (_, _, lg) in graphs.items()}  # fmt: skip
        rounds: dict = {v: dict(dev=[], wall=[]) for v in ["base", *VARIANTS]}
        for _ in range(args.rounds):
            for v in rounds:
                key, g, _ = base if v == "base" else graphs[v]
                d, w = time_round(runner, base_step if v == "base" else step, key, g, args, VARIANTS.get(v))
                rounds[v]["dev"].append(d)
                rounds[v]["wall"].append(w)
        med = {v: {m: statistics.median(r[m]) for m in r} for v, r in rounds.items()}
        lower = sum(x < y for x, y in zip(rounds["grouped"]["dev"], rounds["bgmv"]["dev"], strict=True))
        nbytes = distinct * adapter_bytes(c, rank, TARGETS[targets], 2)
        point = dict(rank=rank, targets=targets, distinct=distinct, adapter_bytes=nbytes, check=check, rounds=rounds,
                     median=med, grouped_lower_device=lower,
                     roofline_ms=(base_bytes + nbytes) / res["copy_GBps"] / 1e6)  # fmt: skip
        if spec in args.profile.split(","):
            point["profile"] = {v: profile_graph(g) for v, (_, g, _) in graphs.items()}
        res["points"].append(point)
        path.write_text(json.dumps(res, indent=1))
        bd, bw = med["base"]["dev"], med["base"]["wall"]
        print(f"r{rank} {targets} d{distinct}: base {bd:.3f}/{bw:.3f} | " + " | ".join(
            f"{v} dev {med[v]['dev']:.3f} ({med[v]['dev'] / bd:.3f}x) wall {med[v]['wall']:.3f} ({med[v]['wall'] / bw:.3f}x)"
            for v in VARIANTS) + f" | grouped/bgmv dev {med['grouped']['dev'] / med['bgmv']['dev']:.4f} lower {lower}/"
            f"{args.rounds} | logits rel {check['grouped']['rel']:.2e} argmax {check['grouped']['argmax']:.3f} | "
            f"t {time.time() - t0:.0f} s", flush=True)  # fmt: skip
        for v, prof in point.get("profile", {}).items():
            lora = {k: p for k, p in prof.items() if "shrink" in k or "expand" in k or "Memset" in k or "fill" in k}
            print(f"  profile {v}: total {sum(p['us'] for p in prof.values()):.0f} us; " + "; ".join(
                f"{k[:28]} {p['us']:.0f} us / {p['n']}" for k, p in lora.items()), flush=True)  # fmt: skip
        del graphs
    res["wall_s"] = time.time() - t0
    path.write_text(json.dumps(res, indent=1))
    print(f"wall {res['wall_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
