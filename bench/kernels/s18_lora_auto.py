"""Session 18 (issue 4): the decode graphs' per-step choice of LoRA kernels (model.kernel_lora.pick_grouped: the
grouped kernels where the step's LoRA rows share adapters enough, else BGMV) against BGMV only, 7B int4 batch 32.

s18_lora.py's setup and protocol: 7B int4 random model, fp16, 512 cached tokens, decode CUDA graphs (the runner's
defaults), the shipped tuner table; per point both settings' graphs captured once on ONE runner (kernel_lora.GROUPED
False = BGMV only, None = the per-step rule; set again before each variant's steps, since the choice is part of the
graph's key), then --rounds rounds in which base-only, BGMV and rule take turns: device ms (event-timed --replays
back-to-back replays of the variant's own graph) and wall ms (runner.execute, median of --reps synchronised steps).
Where the rule picks BGMV its graph is a second BGMV graph: that point is the control (BGMV against BGMV).
Points rank:targets:distinct (rows cycle over `distinct` adapters: 8 = 4 rows each at batch 32), ascending ranks;
each (rank, targets) loads only as many adapters as its points use.

Usage (device): INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels python3 bench/kernels/s18_lora_auto.py --out DIR
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
from random_model import SHAPES, TARGETS, make_runner, write_config  # noqa: E402
from s9b_profile import replay_ms  # noqa: E402
from steps import BLOCK, load_adapters, make_step, timed_all  # noqa: E402

KEEP: list = []  # captured graphs stay alive (a pool whose graphs died cannot be captured into again)
VARIANTS: dict[str, bool | None] = {"bgmv": False, "rule": kernel_lora.AUTO}
POINTS = "16:qkvo:32,16:qkvo:8,64:all:1"


def capture(runner, step, grouped: bool | None) -> tuple:  # type: ignore[no-untyped-def]
    """(graph key, its _Graph popped from the runner, logits) of `step` with kernel_lora.GROUPED = grouped."""
    dg = runner._graphs
    before = set(dg._graphs)
    kernel_lora.GROUPED = grouped
    logits = runner.execute(step).clone()
    key = next(k for k in dg._graphs if k not in before)
    g = dg._graphs.pop(key)
    KEEP.append(g)
    return key, g, logits


def time_round(runner, step, key, g, grouped: bool | None, args) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(device ms, wall ms) of graph g; the wall steps run under `grouped`, so they look up g's key."""
    dg = runner._graphs
    kernel_lora.GROUPED = grouped
    dg._graphs[key] = g
    dev = replay_ms(g.graph, args.replays)
    t = timed_all(lambda: runner.execute(step), runner.device, 1, args.reps)
    del dg._graphs[key]
    for k in list(dg._graphs):  # a wall step that captured anew (its key not g's): reported, kept alive
        print(f"WARNING: a wall step captured {k}, not {key}", flush=True)
        KEEP.append(dg._graphs.pop(k))
    return round(dev, 4), round(sorted(t)[len(t) // 2] * 1e3, 4)


def adapter_counts(specs: list[tuple[int, str, int]]) -> dict[tuple[int, str], int]:
    """Adapters to load per (rank, targets): the most distinct adapters any of its points uses."""
    out: dict[tuple[int, str], int] = {}
    for rank, targets, distinct in specs:
        out[(rank, targets)] = max(out.get((rank, targets), 0), distinct)
    return out


@torch.inference_mode()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--points", default=POINTS, help="rank:targets:distinct, comma separated (ascending ranks)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--replays", type=int, default=8)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--max-seconds", type=float, default=45.0, help="no new point after S seconds")
    ap.add_argument("--tag", default="s18-lora-auto")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda")
    t0 = time.time()
    cfg_dir = write_config(SHAPES["7b"], Path(tempfile.mkdtemp()) / "7b")
    b, ctx = args.batch, 512
    pool = b * (ctx // BLOCK + 1) * 2
    runner = make_runner(cfg_dir, "int4", dev, torch.float16, pool, BLOCK, 32, "triton", True)
    c = runner.config
    res: dict = dict(date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), device=torch.cuda.get_device_name(),
                     torch=torch.__version__, copy_GBps=copy_bandwidth(dev) / 1e9, argv=sys.argv, batch=b,
                     context=ctx, rule=dict(min_rows=kernel_lora.MIN_ROWS,
                                            min_rows_per_adapter=kernel_lora.MIN_ROWS_PER_ADAPTER), points=[])  # fmt: skip
    path = args.out / f"{args.tag}.json"
    base_step = make_step(b, 1, ctx, [-1] * b, c.vocab_size, pool)
    base = capture(runner, base_step, False)
    print(f"setup {time.time() - t0:.0f} s, copy {res['copy_GBps']:.0f} GB/s", flush=True)
    specs = [(int(r), t, int(d)) for r, t, d in (p.split(":") for p in args.points.split(","))]
    counts = adapter_counts(specs)
    loaded, slots = None, []
    for rank, targets, distinct in specs:
        spec = f"{rank}:{targets}:{distinct}"
        if time.time() - t0 > args.max_seconds:
            res.setdefault("skipped", []).append(spec)
            continue
        if loaded != (rank, targets):
            slots = load_adapters(runner, rank, TARGETS[targets], counts[(rank, targets)], targets)
            loaded = (rank, targets)
        ids = [slots[i % distinct] for i in range(b)]
        step = make_step(b, 1, ctx, ids, c.vocab_size, pool)
        graphs = {v: capture(runner, step, s) for v, s in VARIANTS.items()}
        picked = "grouped" if graphs["rule"][0][5] else "bgmv"
        ref = graphs["bgmv"][2].float()
        lg = graphs["rule"][2].float()
        check = dict(rel=float((lg - ref).norm() / ref.norm()), argmax=float((lg.argmax(-1) == ref.argmax(-1)).float().mean()))  # fmt: skip
        rounds: dict = {v: dict(dev=[], wall=[]) for v in ["base", *VARIANTS]}
        for _ in range(args.rounds):
            for v in rounds:
                key, g, _ = base if v == "base" else graphs[v]
                d, w = time_round(runner, base_step if v == "base" else step, key, g, VARIANTS.get(v, False), args)
                rounds[v]["dev"].append(d)
                rounds[v]["wall"].append(w)
        med = {v: {m: statistics.median(r[m]) for m in r} for v, r in rounds.items()}
        ratios = [round(x / y, 4) for x, y in zip(rounds["rule"]["dev"], rounds["bgmv"]["dev"], strict=True)]
        lower = sum(r < 1 for r in ratios)
        point = dict(rank=rank, targets=targets, distinct=distinct, picked=picked, keys={v: str(k) for v, (k, _, _) in graphs.items()},
                     check=check, rounds=rounds, median=med, rule_over_bgmv_dev=ratios, rule_lower_device=lower)  # fmt: skip
        res["points"].append(point)
        path.write_text(json.dumps(res, indent=1))
        bd, bw = med["base"]["dev"], med["base"]["wall"]
        print(f"r{rank} {targets} d{distinct} (rule picks {picked}): base {bd:.3f}/{bw:.3f} | " + " | ".join(
            f"{v} dev {med[v]['dev']:.3f} ({med[v]['dev'] / bd:.3f}x) wall {med[v]['wall']:.3f} ({med[v]['wall'] / bw:.3f}x)"
            for v in VARIANTS) + f" | rule/bgmv dev {med['rule']['dev'] / med['bgmv']['dev']:.4f} lower {lower}/"
            f"{args.rounds} (per round {min(ratios):.4f}-{max(ratios):.4f}) | logits rel {check['rel']:.2e} argmax "
            f"{check['argmax']:.3f} | t {time.time() - t0:.0f} s", flush=True)  # fmt: skip
        del graphs
    res["wall_s"] = time.time() - t0
    path.write_text(json.dumps(res, indent=1))
    print(f"wall {res['wall_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
