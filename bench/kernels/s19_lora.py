"""Session 19 (issue 4): LoRA overhead of the decode step under the SHIPPED kernel_lora.GROUPED setting (the per-step
rule, AUTO, since session 19), 7B int4, against the base-only step; batch 32 for the README's table cells and smaller
batches (where LoRA overhead was never measured).

s18_lora_auto.py's setup and protocol (its capture / time_round): 7B int4 random model, fp16, 512 cached tokens,
decode CUDA graphs (the runner's defaults), the shipped tuner table (INLAID_QMM_TUNED=1), ONE runner (KV pool sized
for the largest batch). Per point the shipped setting's graph is captured once (and, where the rule picks the grouped
kernels, a BGMV-only graph too, GROUPED False: the rule's gain), then --rounds rounds in which the batch's base-only
step and the LoRA step(s) take turns: device ms (event-timed --replays back-to-back replays of the variant's own
graph) and wall ms (runner.execute, median of --reps synchronised steps).
Points batch:rank:targets:distinct (rows cycle over `distinct` adapters; "b" = one per row), grouped by ascending rank.

Usage (device): INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels python3 bench/kernels/s19_lora.py --out DIR
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
from s18_lora_auto import capture, time_round  # noqa: E402
from steps import BLOCK, load_adapters, make_step  # noqa: E402

POINTS = ("32:16:qkvo:1,32:16:qkvo:8,32:16:qkvo:b,32:16:all:1,32:16:all:b,1:16:qkvo:1,4:16:qkvo:1,4:16:qkvo:b,"
          "16:16:qkvo:1,16:16:qkvo:b,32:64:all:1,32:64:all:b")  # fmt: skip


def parse(points: str) -> list[tuple[int, int, str, int]]:
    """(batch, rank, targets, distinct) per point, stable-sorted by (rank, targets) so each adapter set loads once."""
    out = []
    for p in points.split(","):
        b, r, t, d = p.split(":")
        out.append((int(b), int(r), t, int(b) if d == "b" else int(d)))
    order = list(dict.fromkeys((r, t) for _, r, t, _ in out))
    return sorted(out, key=lambda s: order.index((s[1], s[2])))


@torch.inference_mode()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--points", default=POINTS, help="batch:rank:targets:distinct, comma separated")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--replays", type=int, default=8)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--max-seconds", type=float, default=90.0, help="no new point after S seconds")
    ap.add_argument("--tag", default="s19-lora")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    shipped = kernel_lora.GROUPED
    dev = torch.device("cuda")
    t0 = time.time()
    specs = parse(args.points)
    ctx = 512
    pool = max(b for b, *_ in specs) * (ctx // BLOCK + 1) * 2
    runner = make_runner(write_config(SHAPES["7b"], Path(tempfile.mkdtemp()) / "7b"), "int4", dev, torch.float16,
                         pool, BLOCK, 32, "triton", True)  # fmt: skip
    c = runner.config
    res: dict = dict(date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), device=torch.cuda.get_device_name(),
                     torch=torch.__version__, copy_GBps=copy_bandwidth(dev) / 1e9, argv=sys.argv, context=ctx,
                     shipped_grouped=str(shipped), rule=dict(min_rows=kernel_lora.MIN_ROWS,
                     min_rows_per_adapter=kernel_lora.MIN_ROWS_PER_ADAPTER), points=[])  # fmt: skip
    path = args.out / f"{args.tag}.json"
    bases: dict[int, tuple] = {}
    loaded, slots = None, []
    print(f"setup {time.time() - t0:.0f} s, copy {res['copy_GBps']:.0f} GB/s, shipped GROUPED {shipped}", flush=True)
    for b, rank, targets, distinct in specs:
        spec = f"{b}:{rank}:{targets}:{distinct}"
        if time.time() - t0 > args.max_seconds:
            res.setdefault("skipped", []).append(spec)
            continue
        if b not in bases:
            step = make_step(b, 1, ctx, [-1] * b, c.vocab_size, pool)
            bases[b] = (step, capture(runner, step, shipped))
        if loaded != (rank, targets):
            need = max(d for _, r, t, d in specs if (r, t) == (rank, targets))
            slots = load_adapters(runner, rank, TARGETS[targets], need, targets)
            loaded = (rank, targets)
        step = make_step(b, 1, ctx, [slots[i % distinct] for i in range(b)], c.vocab_size, pool)
        graphs = {"shipped": capture(runner, step, shipped)}
        picked = "grouped" if graphs["shipped"][0][5] else "bgmv"
        if picked == "grouped":
            graphs["bgmv"] = capture(runner, step, False)
        check = {}
        if "bgmv" in graphs:
            ref, lg = graphs["bgmv"][2].float(), graphs["shipped"][2].float()
            check = dict(rel=float((lg - ref).norm() / ref.norm()), argmax=float((lg.argmax(-1) == ref.argmax(-1)).float().mean()))  # fmt: skip
        settings = {"base": shipped, "shipped": shipped, "bgmv": False}
        rounds: dict = {v: dict(dev=[], wall=[]) for v in ["base", *graphs]}
        for _ in range(args.rounds):
            for v in rounds:
                s, (key, g, _) = bases[b] if v == "base" else (step, graphs[v])
                d, w = time_round(runner, s, key, g, settings[v], args)
                rounds[v]["dev"].append(d)
                rounds[v]["wall"].append(w)
        med = {v: {m: statistics.median(r[m]) for m in r} for v, r in rounds.items()}
        ratio = {v: {m: round(med[v][m] / med["base"][m], 4) for m in ("dev", "wall")} for v in graphs}
        point = dict(batch=b, rank=rank, targets=targets, distinct=distinct, picked=picked, check=check,
                     rounds=rounds, median=med, over_base=ratio)  # fmt: skip
        res["points"].append(point)
        path.write_text(json.dumps(res, indent=1))
        print(f"b{b} r{rank} {targets} d{distinct} (picks {picked}): base dev {med['base']['dev']:.3f} wall "
              f"{med['base']['wall']:.3f} | " + " | ".join(
              f"{v} dev {med[v]['dev']:.3f} ({ratio[v]['dev']:.3f}x) wall {med[v]['wall']:.3f} ({ratio[v]['wall']:.3f}x)"
              for v in graphs) + (f" | logits rel {check['rel']:.1e} argmax {check['argmax']:.3f}" if check else "")
              + f" | t {time.time() - t0:.0f} s", flush=True)  # fmt: skip
        del graphs
    res["wall_s"] = time.time() - t0
    path.write_text(json.dumps(res, indent=1))
    print(f"wall {res['wall_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
