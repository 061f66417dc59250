"""Session 16 (issue 4): the 7B int4 batch-1 decode step, row attention options and fusions, A/B in one process.

7B int4 random model (bench/engine/random_model), fp16, 512 cached tokens, decode CUDA graphs with the runner's PDL
default, the shipped tuner table (INLAID_QMM_TUNED=1). s15_tcsfin.py / s16_omerge.py's protocol (s12_norm.point):
per batch every variant's graph captured once on ONE runner, then --rounds rounds in which the variants take turns
(device ms: event-timed --replays back-to-back replays of the variant's own graph; wall ms: runner.execute, median of
--reps synchronised steps); logits of each variant against "none"'s; --pairs A:B compared round by round (B / A).

Variants: "FUSION@opts", opts "key=value/key=value/..." of decode_row's options (ROW_DEFAULTS: merge, parts, per_sm,
block_n, ...) set through INLAID_DECODE_ROW_OPTS while the variant's graph is captured; a bare word (e.g. "ctl")
only tags a second capture of the same thing (the noise control). Then the row attention alone (--iso: merge values;
PDL off, a graph of 32 row_rope_decode launches over 32 layers' caches at the 7B shape, per launch, alternating).

Usage (device): INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels python3 bench/kernels/s16_b1.py --out DIR
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))

import s12_norm  # noqa: E402
from bench_decode import copy_bandwidth  # noqa: E402
from graph_timing import replay_ms  # noqa: E402
from inlaid_worker.kernels import decode_row  # noqa: E402
from random_model import SHAPES, make_runner, write_config  # noqa: E402
from s14_cfin import compare  # noqa: E402
from s16_b1_merge import ordered_row_kernel  # noqa: E402
from steps import BLOCK  # noqa: E402

KEEP: list = []


ROW_KERNEL = decode_row._row_kernel  # the package's


def row_opts(name: str) -> str:
    """The INLAID_DECODE_ROW_OPTS value of a variant name ("" for none; "proto=1" is not a row option)."""
    _, _, opt = name.partition("@")
    return ",".join(p for p in opt.split("/") if "=" in p and not p.startswith("proto="))


def variant(name: str) -> str:
    """Sets INLAID_DECODE_ROW_OPTS for the variant (and with "proto=1" swaps s16_b1_merge's ordered-merge kernel
    into decode_row while its graph is captured); returns its decode fusion name."""
    os.environ["INLAID_DECODE_ROW_OPTS"] = row_opts(name)
    decode_row.row_env()  # a bad option fails here, before anything is captured
    decode_row._row_kernel = ordered_row_kernel() if "proto=1" in name.partition("@")[2].split("/") else ROW_KERNEL
    return name.partition("@")[0]


@torch.inference_mode()
def iso(args, dev: torch.device, b: int, names: list[str]) -> dict:  # type: ignore[no-untyped-def]
    """row_rope_decode alone at the 7B shape (PDL off), 32 launches a graph over 32 layers' caches, per variant
    ("@opts" of a variant name: "merge=1", "proto=1", "merge=1/ctl", ...)."""
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
    graphs, outs = {}, {}
    for name in names:
        variant("x@" + name)

        def launches() -> list:
            return [decode_row.row_rope_decode(qkv, cos, sin, slots, k, v, tables, lens, d**-0.5, heads)
                    for k, v in caches]  # fmt: skip

        outs[name] = torch.stack(launches())
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            launches()
        graphs[name] = g
        KEEP.append(g)
    variant("none")
    per_launch: dict = {n: [] for n in graphs}
    for _ in range(args.iso_rounds):
        for n, g in graphs.items():
            per_launch[n].append(round(replay_ms(g, args.replays) * 1e3 / 32, 3))
    ref = outs[names[0]].float()
    out = dict(batch=b, us=per_launch, median_us={n: statistics.median(v) for n, v in per_launch.items()},
               max_abs_vs_first={n: float((o.float() - ref).abs().max()) for n, o in outs.items()})  # fmt: skip
    print(f"iso batch {b}: " + " ".join(f"{n} {u:.3f} us" for n, u in out["median_us"].items())
          + f" | max |diff| vs {names[0]}: {out['max_abs_vs_first']}", flush=True)  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--plan", default="1=none,swiglu+cfin+g@merge=1,swiglu+cfin+g@merge=2,swiglu+cfin+g@merge=1/ctl")
    ap.add_argument("--pairs", default="swiglu+cfin+g@merge=1:swiglu+cfin+g@merge=2,"
                                       "swiglu+cfin+g@merge=1:swiglu+cfin+g@merge=1/ctl")  # fmt: skip
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--replays", type=int, default=20)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument(
        "--iso", default="", help="variants (their opts) of the kernel alone, e.g. merge=1,proto=1,merge=1/ctl"
    )
    ap.add_argument("--iso-batches", default="1")
    ap.add_argument("--iso-rounds", type=int, default=5)
    ap.add_argument("--tag", default="s16-b1")
    args = ap.parse_args()
    plan = {int(b): f.split(",") for b, f in (x.split("=", 1) for x in args.plan.split(";") if x)}
    pairs = [tuple(p.split(":")) for p in args.pairs.split(",") if p]
    args.out.mkdir(parents=True, exist_ok=True)
    s12_norm.variant = variant
    dev = torch.device("cuda")
    t0 = time.time()
    cfg_dir = write_config(SHAPES["7b"], Path(tempfile.mkdtemp()) / "7b")
    runner = make_runner(cfg_dir, "int4", dev, torch.float16, 1024, BLOCK, 4, "triton", True)
    res: dict = dict(date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), device=torch.cuda.get_device_name(),
                     torch=torch.__version__, copy_GBps=copy_bandwidth(dev) / 1e9, argv=sys.argv, points=[],
                     pairs=[], iso=[])  # fmt: skip
    path = args.out / f"{args.tag}.json"
    print(f"setup {time.time() - t0:.0f} s", flush=True)
    for b, variants in plan.items():
        point = s12_norm.point(runner, b, variants, args, res["copy_GBps"] * 1e9)
        res["points"].append(point)
        for a, bb in pairs:
            if a not in variants or bb not in variants:
                continue
            cmp = dict(batch=b, **compare(point, a, bb))
            res["pairs"].append(cmp)
            d, w = cmp["device_ms"], cmp["wall_ms"]
            print(f"batch {b} {bb} vs {a}: device {d['b_median']:.4f} / {d['a_median']:.4f} ms = "
                  f"{d['ratio_median']:.4f} (lower in {d['b_lower']}/{d['rounds']}; spreads {d['b_spread']:.4f} / "
                  f"{d['a_spread']:.4f}) | wall {w['b_median']:.4f} / {w['a_median']:.4f} = {w['ratio_median']:.4f} "
                  f"({w['b_lower']}/{w['rounds']})", flush=True)  # fmt: skip
        path.write_text(json.dumps(res, indent=1))
        print(f"t {time.time() - t0:.0f} s", flush=True)
    variant("none")
    if args.iso:
        for b in (int(x) for x in args.iso_batches.split(",") if x):
            res["iso"].append(iso(args, dev, b, args.iso.split(",")))
            path.write_text(json.dumps(res, indent=1))
    res["wall_s"] = time.time() - t0
    path.write_text(json.dumps(res, indent=1))
    print(f"wall {res['wall_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
