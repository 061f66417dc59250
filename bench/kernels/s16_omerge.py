"""[Record: runs only at b4fa76e..9814c79; the +m code was removed in e017bd5 after this measured it slower,
bench/results/decode-2026-12-01-s16-omerge.md.]
Session 16 (issue 4), built offline, for the next session to run: the "+m" decode fusion (the row attention's busy
partitions store partials only, the o GEMV merges them on load: consumer_finish.attn_o_add_norm) against the shipped
step, on the 7B int4 random model (bench/engine/random_model), 512 cached tokens, decode CUDA graphs with the runner's
PDL default, the shipped tuner table (INLAID_QMM_TUNED=1). s15_tcsfin.py's protocol (s12_norm.point): per batch every
variant's graph captured once on ONE runner, then --rounds rounds in which the variants take turns (device ms:
event-timed --replays back-to-back replays of the variant's own graph; wall ms: runner.execute, median of --reps
synchronised steps); logits of each variant against "none"'s; --pairs A:B compared round by round (B / A per round).

Variants: decode fusion names, optionally with "@bnN" (N = 128 / 256), "@wN" (warps) and / or "@KIND" (a row kind),
e.g. "@bn128/w4/hgemvr": the square o GEMV (of every variant with that suffix) runs block_n N (256: 4 warps) / N warps /
that kind instead of the shipped pick (hgemvrb 64 x 11 at batch 1): fewer N tiles re-reading each head's
partials (bench/kernels/s16_omerge_sass.py: 254 registers at 64 x 11, a second wave at 64 threads a CTA). The o
launches that read partials at capture ((M, kind, block_m, block_n, block_k, split, warps)) are recorded in the JSON
("merged"); an empty list means "+m" fell back at that batch (the o pick is no row kind with block_k == head_dim).
Usage (device): INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels python3 bench/kernels/s16_omerge.py --out DIR
"""

from __future__ import annotations

import argparse
import dataclasses
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
LAUNCH = consumer_finish.launch_hgemvr
MERGED: list = []  # (M, kind, block_m, block_n, block_k, split, warps) of each o launch from partials since variant()
BLOCK_N: list[int] = [0]  # the "@bnN" override of the current variant (0: the tuner's pick)
KIND: list[str] = [""]  # the "@KIND" override (a consumer_finish.ROW_KINDS name; "": the tuner's pick)
WARPS: list[int] = [0]  # the "@wN" override (0: 4 with block_n >= 256, else the pick's)


def o_config(x2: torch.Tensor, w) -> QMMConfig:  # type: ignore[no-untyped-def]
    """The tuner's pick; under "@bnN" / "@KIND" the square (o) weight's row pick with block_n N (N >= 256: 4 warps) /
    that row kind."""
    cfg = CONFIG_FOR(x2, w)
    if w.in_features == w.out_features and cfg.kind in consumer_finish.ROW_KINDS:
        if BLOCK_N[0]:
            cfg = dataclasses.replace(cfg, block_n=BLOCK_N[0], num_warps=4 if BLOCK_N[0] >= 256 else cfg.num_warps)
        if WARPS[0]:
            cfg = dataclasses.replace(cfg, num_warps=WARPS[0])
        if KIND[0]:
            cfg = dataclasses.replace(cfg, kind=KIND[0])
    return cfg
    return cfg


def recording(x2, w, block_m, block_n, block_k, split_k, num_warps, y, **kw):  # type: ignore[no-untyped-def]
    if kw.get("x_parts") is not None:
        MERGED.append((x2.shape[0], "row", block_m, block_n, block_k, split_k, num_warps))
    return LAUNCH(x2, w, block_m, block_n, block_k, split_k, num_warps, y, **kw)


def variant(name: str) -> str:
    """consumer_finish's switches for a variant name and its decode fusion name (module docstring)."""
    base, _, opt = name.partition("@")  # "@bn256", "@hgemvr", "@bn128/hgemvr"
    parts = [p for p in opt.split("/") if p]
    BLOCK_N[0] = next((int(p.removeprefix("bn")) for p in parts if p.startswith("bn")), 0)
    KIND[0] = next((p for p in parts if p in consumer_finish.ROW_KINDS), "")
    WARPS[0] = next((int(p[1:]) for p in parts if p[0] == "w"), 0)
    if any(not p.startswith(("bn", "w")) and p not in consumer_finish.ROW_KINDS for p in parts):
        raise ValueError(f"variant {name!r}: options are bnN, wN and {consumer_finish.ROW_KINDS}")
    consumer_finish.config_for = o_config
    consumer_finish.launch_hgemvr = recording
    MERGED.clear()
    return base


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--plan", default="1=none,swiglu+cfin+g,swiglu+cfin+g+m,swiglu+cfin+g+m@bn256,"
                                      "swiglu+cfin+g+m@bn128/w4;2=none,swiglu+cfin+q,swiglu+cfin+q+m,"
                                      "swiglu+cfin+q+m@bn256",
                    help="per-batch variants: 'B=f1,f2;B2=...' (each list needs 'none')")  # fmt: skip
    ap.add_argument("--pairs", default="swiglu+cfin+g:swiglu+cfin+g+m,swiglu+cfin+g:swiglu+cfin+g+m@bn256,"
                                       "swiglu+cfin+g:swiglu+cfin+g+m@bn128/w4,swiglu+cfin+q:swiglu+cfin+q+m,"
                                       "swiglu+cfin+q:swiglu+cfin+q+m@bn256")  # fmt: skip
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--replays", type=int, default=20)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--tag", default="s16-omerge")
    ap.add_argument("--shape", default="7b", help="random_model.SHAPES key (7b, 13b)")
    args = ap.parse_args()
    plan = {int(b): f.split(",") for b, f in (x.split("=") for x in args.plan.split(";") if x)}
    args.out.mkdir(parents=True, exist_ok=True)
    merged: dict = {}

    def tracked(name: str) -> str:  # point() calls variant(f) before each capture and each timing turn
        if last[0] is not None and last[0] not in merged:
            merged[last[0]] = sorted(set(MERGED))
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
                     pairs=[], merged={})  # fmt: skip
    path = args.out / f"{args.tag}.json"
    for b, fusions in plan.items():
        merged.clear()
        last[0] = None
        point = s12_norm.point(runner, b, fusions, args, res["copy_GBps"] * 1e9)
        res["merged"][str(b)] = {k: [list(t) for t in v] for k, v in merged.items()}
        print(f"batch {b} o launches from partials at capture: {res['merged'][str(b)]}", flush=True)
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
    consumer_finish.config_for, consumer_finish.launch_hgemvr = CONFIG_FOR, LAUNCH
    res["wall_s"] = time.time() - t0
    path.write_text(json.dumps(res, indent=1))
    print(f"wall {res['wall_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
