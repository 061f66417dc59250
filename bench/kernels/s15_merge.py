"""Session 15 (issue 4): the row attention's partition merge, decode_row option merge 0 (the volatile chunked merge)
against 1 (_merge_cg: every partial loaded at once with .cg loads, one L2 round trip), in the shipped decode step.

7B int4 random model (bench/engine/random_model), fp16, 512 cached tokens, decode CUDA graphs with the runner's PDL
default and the shipped fusion policy (decode_graphs.policy_fusion of the batch), INLAID_QMM_TUNED=1.
Protocol (s14_cfin.py / s15_anatomy.py): per batch every variant's graph captured once on ONE runner (the merge
option set through INLAID_DECODE_ROW_OPTS while its graph is captured), then --rounds rounds in which the variants
take turns; device ms = event-timed --replays back-to-back replays of the variant's own graph. Variants: "m0" (merge
0, the base), "m1" (merge 1), "m0ctl" (merge 0 captured again: the noise control). Per round the ratio to m0.
Logits of each variant against m0's. Then the attention kernel's iso time (PDL off): a CUDA graph of 32
row_rope_decode launches at the 7B shape (32 heads, 128 dims, 512 tokens, the engine's partition count), per launch,
the variants alternating.

Usage (device): INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels python3 bench/kernels/s15_merge.py --out DIR
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
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))

from bench_decode import copy_bandwidth  # noqa: E402
from graph_timing import replay_ms  # noqa: E402
from inlaid_worker.kernels import decode_row  # noqa: E402
from inlaid_worker.model.decode_graphs import policy_fusion  # noqa: E402
from random_model import SHAPES, kv_bytes, make_runner, weight_bytes, write_config  # noqa: E402
from steps import BLOCK, make_step  # noqa: E402

VARIANTS = {"m0": 0, "m1": 1, "m0ctl": 0}
KEEP: list = []


def set_merge(merge: int) -> None:
    os.environ["INLAID_DECODE_ROW_OPTS"] = f"merge={merge}"


@torch.inference_mode()
def point(runner, b: int, args, bw: float) -> dict:  # type: ignore[no-untyped-def]
    c = runner.config
    fusion = policy_fusion(b)
    runner.decode_fusion = fusion
    step = make_step(b, 1, 512, [-1] * b, c.vocab_size, runner.num_kv_blocks)
    kv0 = runner.kv_cache.clone()
    dg = runner._graphs
    graphs, logits = {}, {}
    for name, merge in VARIANTS.items():
        set_merge(merge)
        runner.kv_cache.copy_(kv0)
        logits[name] = runner.execute(step).clone()
        key = next(k for k in dg._graphs if k[0] == b and not k[1] and k[3] == fusion)
        graphs[name] = dg._graphs.pop(key)
        KEEP.append(graphs[name])
    set_merge(0)
    runner.kv_cache.copy_(kv0)
    base = logits["m0"]
    check = {n: dict(max_abs=float((lg - base).abs().max()), rel=float((lg - base).norm() / base.norm()),
                     argmax_same=float((lg.argmax(-1) == base.argmax(-1)).float().mean()),
                     finite=bool(torch.isfinite(lg).all())) for n, lg in logits.items()}  # fmt: skip
    dev: dict = {n: [] for n in graphs}
    for _ in range(args.rounds):
        for n, g in graphs.items():
            dev[n].append(round(replay_ms(g.graph, args.replays), 5))
    out = dict(batch=b, fusion=fusion, roofline_ms=(weight_bytes(runner.weights, b) + kv_bytes(c, b * 512, 2)) / bw * 1e3,
               check=check, rounds_device_ms=dev, summary={})  # fmt: skip
    for n in graphs:
        ratios = [y / x for x, y in zip(dev["m0"], dev[n], strict=True)]
        diffs = [(y - x) * 1e3 for x, y in zip(dev["m0"], dev[n], strict=True)]
        s = dict(median_ms=statistics.median(dev[n]), spread_us=(max(dev[n]) - min(dev[n])) * 1e3,
                 ratio_median=statistics.median(ratios), delta_us=statistics.median(diffs),
                 lower=sum(r < 1 for r in ratios), rounds=len(ratios))  # fmt: skip
        out["summary"][n] = s
        print(f"batch {b} {fusion} {n:6s} {s['median_ms']:.4f} ms (spread {s['spread_us']:4.1f} us) vs m0 "
              f"{s['ratio_median']:.4f}x {s['delta_us']:+6.1f} us/step lower {s['lower']}/{s['rounds']} | logits "
              f"max_abs {check[n]['max_abs']:.2e} argmax {check[n]['argmax_same']:.3f} finite {check[n]['finite']}",
              flush=True)  # fmt: skip
    return out


@torch.inference_mode()
def iso(args, dev: torch.device, b: int) -> dict:
    """row_rope_decode alone at the 7B shape (PDL off: no scope), 32 launches a graph over 32 layers' caches."""
    heads, kvh, d, ctx = 32, 32, 128, 512
    per = ctx // BLOCK
    caches = [(torch.randn(b * per, BLOCK, kvh, d, device=dev, dtype=torch.float16),
               torch.randn(b * per, BLOCK, kvh, d, device=dev, dtype=torch.float16)) for _ in range(32)]  # fmt: skip
    tables = torch.arange(b * per, dtype=torch.int32, device=dev).reshape(b, per)
    lens = torch.full((b,), ctx, dtype=torch.int32, device=dev)
    slots = (tables[:, -1].long() * BLOCK + BLOCK - 1).to(torch.int32)
    qkv = torch.randn(b, (heads + 2 * kvh) * d, device=dev, dtype=torch.float16)
    cos = torch.randn(b, d, device=dev, dtype=torch.float16)
    sin = torch.randn(b, d, device=dev, dtype=torch.float16)
    graphs = {}
    for name, merge in VARIANTS.items():
        set_merge(merge)

        def launches() -> None:
            for k, v in caches:
                decode_row.row_rope_decode(qkv, cos, sin, slots, k, v, tables, lens, d**-0.5, heads)

        launches()
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            launches()
        graphs[name] = g
        KEEP.append(g)
    set_merge(0)
    per_launch: dict = {n: [] for n in graphs}
    for _ in range(args.iso_rounds):
        for n, g in graphs.items():
            per_launch[n].append(round(replay_ms(g, args.replays) * 1e3 / 32, 3))
    out = dict(batch=b, parts=decode_row.row_parts(b, kvh, torch.cuda.get_device_properties(dev).multi_processor_count,
                                                   8), us=per_launch, median_us={n: statistics.median(v) for n, v in per_launch.items()})  # fmt: skip
    print(f"iso batch {b} parts {out['parts']}: " + " ".join(f"{n} {u:.2f} us" for n, u in out["median_us"].items()),
          flush=True)  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--batches", default="1,2")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--replays", type=int, default=20)
    ap.add_argument("--iso-rounds", type=int, default=5)
    ap.add_argument("--tag", default="s15-merge")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda")
    t0 = time.time()
    cfg_dir = write_config(SHAPES["7b"], Path(tempfile.mkdtemp()) / "7b")
    runner = make_runner(cfg_dir, "int4", dev, torch.float16, 1024, BLOCK, 4, "triton", True)
    bw = copy_bandwidth(dev)
    res: dict = dict(date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), device=torch.cuda.get_device_name(),
                     torch=torch.__version__, triton=triton.__version__, copy_GBps=bw / 1e9, argv=sys.argv,
                     points=[], iso=[])  # fmt: skip
    path = args.out / f"{args.tag}.json"
    print(f"setup {time.time() - t0:.0f} s, copy {bw / 1e9:.0f} GB/s", flush=True)
    for b in (int(x) for x in args.batches.split(",") if x):
        res["points"].append(point(runner, b, args, bw))
        path.write_text(json.dumps(res, indent=1))
        print(f"t {time.time() - t0:.0f} s", flush=True)
    for b in (int(x) for x in args.batches.split(",") if x):
        res["iso"].append(iso(args, dev, b))
        path.write_text(json.dumps(res, indent=1))
    res["wall_s"] = time.time() - t0
    path.write_text(json.dumps(res, indent=1))
    print(f"wall {res['wall_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
