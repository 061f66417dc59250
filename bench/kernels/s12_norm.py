"""Session 12: the residual add + RMSNorm folded into the GEMVs around it (the "norm" decode fusion, kernels.gemv_norm)
against the unfused step, on the 7B int4 random model (bench/engine/random_model), 512 cached tokens, decode CUDA
graphs with the runner's PDL default, the shipped tuner table (INLAID_QMM_TUNED=1).

Per batch: every fusion's graph captured once on ONE runner (the graphs are keyed by fusion), then --rounds rounds in
which the fusions take turns: device time (event-timed, --replays back-to-back replays of the fusion's own graph) and
wall time (runner.execute, --reps synchronised steps). Correctness: each fusion's logits against "none"'s (relative
norm, max |diff|, argmax agreement) from the same KV cache.
Usage (device): INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels python3 bench/kernels/s12_norm.py --out DIR
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
from inlaid_worker.kernels import gemv_norm, quant_hgemvr  # noqa: E402
from random_model import SHAPES, kv_bytes, make_runner, weight_bytes, write_config  # noqa: E402
from s9b_profile import replay_ms  # noqa: E402
from steps import BLOCK, make_step, timed_all  # noqa: E402


def variant(name: str) -> str:
    """Set gemv_norm's switches for a variant name and return its fusion: "norm16..." NORM_FAST on, "normU..." no
    register cap, "normR<n>..." cap n (default: the module's, 80)."""
    import re

    gemv_norm.NORM_FAST = "16" in name
    cap = re.search(r"normR(\d+)", name)
    gemv_norm.NORM_MAXNREG = None if "normU" in name else int(cap.group(1)) if cap else 80
    return re.sub(r"norm(16|U|R\d+)+", "norm", name)


KEEP: list = []  # every captured graph stays alive (a pool whose graphs died cannot be captured into again)


def key_of(runner, b: int, fusion: str) -> tuple:  # type: ignore[no-untyped-def]
    return next(k for k in runner._graphs._graphs if k[0] == b and not k[1] and k[3] == fusion)


@torch.inference_mode()
def point(runner, b: int, fusions: list[str], args, bw: float) -> dict:  # type: ignore[no-untyped-def]
    c = runner.config
    step = make_step(b, 1, 512, [-1] * b, c.vocab_size, runner.num_kv_blocks)
    kv0 = runner.kv_cache.clone()
    logits = {}
    graphs: dict = {}  # variant -> (graph key, its _Graph): variants of one fusion name each keep their own graph
    dg = runner._graphs
    for f in fusions:  # capture + correctness from the same KV cache
        fusion = variant(f)
        runner.decode_fusion = fusion
        runner.kv_cache.copy_(kv0)
        logits[f] = runner.execute(step).clone()
        runner.kv_cache.copy_(kv0)
        again = runner.execute(step).clone()  # a replay of the captured graph (slots zeroed inside it)
        logits[f + "@replay"] = again
        key = key_of(runner, b, fusion)
        graphs[f] = (key, dg._graphs.pop(key))
        KEEP.append(graphs[f])
    variant("norm")
    base = logits["none"]
    check = {}
    for f, lg in logits.items():
        check[f] = dict(rel=float((lg - base).norm() / base.norm()), max_abs=float((lg - base).abs().max()),
                        argmax_same=float((lg.argmax(-1) == base.argmax(-1)).float().mean()),
                        finite=bool(torch.isfinite(lg).all()))  # fmt: skip
    dev_ms: dict = {f: [] for f in fusions}
    wall_ms: dict = {f: [] for f in fusions}
    for _ in range(args.rounds):
        for f in fusions:
            runner.decode_fusion = variant(f)
            key, g = graphs[f]
            dg._graphs[key] = g
            dev_ms[f].append(round(replay_ms(g.graph, args.replays), 4))
            t = timed_all(lambda: runner.execute(step), runner.device, 2, args.reps)  # noqa: B023
            wall_ms[f].append(round(sorted(t)[len(t) // 2] * 1e3, 4))
            del dg._graphs[key]
    roof = (weight_bytes(runner.weights, b) + kv_bytes(c, b * 512, 2)) / bw * 1e3
    out = dict(batch=b, roofline_ms=roof, check=check, rounds_device_ms=dev_ms, rounds_wall_ms=wall_ms,
               device_ms={f: statistics.median(v) for f, v in dev_ms.items()},
               wall_ms={f: statistics.median(v) for f, v in wall_ms.items()})  # fmt: skip
    ref = out["device_ms"]["none"]
    for f in fusions:
        wins = sum(x < y for x, y in zip(dev_ms[f], dev_ms["none"], strict=True))
        print(f"batch {b} {f:12s} device {out['device_ms'][f]:.4f} ms ({out['device_ms'][f] / ref:.3f}x none, lower in "
              f"{wins}/{args.rounds}) wall {out['wall_ms'][f]:.4f} ms = {out['wall_ms'][f] / roof:.2f}x roofline "
              f"{roof:.3f} | logits rel {check[f]['rel']:.2e} argmax {check[f]['argmax_same']:.3f}", flush=True)  # fmt: skip
    return out


@torch.inference_mode()
def profile(runner, b: int, fusions: list[str], pdl_mode: int) -> dict:  # type: ignore[no-untyped-def]
    """Kernels of one replay per variant under torch.profiler (graphs captured with PDL mode pdl_mode): per
    (kernel, grid, registers) the count and mean duration in us."""
    import os

    step = make_step(b, 1, 512, [-1] * b, runner.config.vocab_size, runner.num_kv_blocks)
    runner.decode_pdl = pdl_mode
    dg = runner._graphs
    out = {}
    for f in fusions:
        fusion = variant(f)
        runner.decode_fusion = fusion
        runner.execute(step)
        key = key_of(runner, b, fusion)
        g = dg._graphs.pop(key)
        KEEP.append(g)
        for _ in range(3):
            g.graph.replay()
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            g.graph.replay()
            torch.cuda.synchronize()
        path = f"/tmp/s12-trace-{os.getpid()}.json"
        prof.export_chrome_trace(path)
        events = [e for e in json.loads(Path(path).read_text())["traceEvents"] if e.get("cat") == "kernel"]
        agg: dict = {}
        for e in events:
            a = e.get("args", {})
            k = f"{e['name'][:40]} grid={a.get('grid')} regs={a.get('registers per thread')}"
            agg.setdefault(k, []).append(e["dur"])
        span = max(e["ts"] + e["dur"] for e in events) - min(e["ts"] for e in events)
        out[f] = dict(span_us=span, kernels={k: dict(n=len(v), mean_us=sum(v) / len(v), total_us=sum(v))
                                              for k, v in sorted(agg.items(), key=lambda kv: -sum(kv[1]))})  # fmt: skip
        print(f"profile b{b} pdl{pdl_mode} {f}: span {span:.1f} us, {len(events)} kernels", flush=True)
        for k, v in list(out[f]["kernels"].items())[:10]:
            print(f"   {v['n']:4d} x {v['mean_us']:7.2f} us = {v['total_us']:8.1f}  {k}", flush=True)
    variant("norm")
    runner.decode_pdl = 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--batches", default="1,2")
    ap.add_argument("--fusions", default="none,norm")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--replays", type=int, default=20)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--profile", default="", help="PDL modes to profile batch 1 under, e.g. 0,1 ('' = none)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    fusions = args.fusions.split(",")
    if fusions[0] != "none":
        raise SystemExit("--fusions must start with none (the reference)")
    dev = torch.device("cuda")
    t0 = time.time()
    cfg_dir = write_config(SHAPES["7b"], Path(tempfile.mkdtemp()) / "7b")
    runner = make_runner(cfg_dir, "int4", dev, torch.float16, 1024, BLOCK, 4, "triton", True)
    res: dict = dict(date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), device=torch.cuda.get_device_name(),
                     torch=torch.__version__, copy_GBps=copy_bandwidth(dev) / 1e9, argv=sys.argv, points=[])  # fmt: skip
    for mode in (int(x) for x in args.profile.split(",") if x):
        res[f"profile_pdl{mode}"] = profile(runner, 1, fusions, mode)
        (args.out / "s12-norm.json").write_text(json.dumps(res, indent=1))
    for b in (int(x) for x in args.batches.split(",") if x):
        res["points"].append(point(runner, b, fusions, args, res["copy_GBps"] * 1e9))
        (args.out / "s12-norm.json").write_text(json.dumps(res, indent=1))
    regs = []
    try:  # the compiled half2 row GEMVs' registers and spills (their constexprs at the key's end)
        for cache in quant_hgemvr._hgemvr_kernel.device_caches.values():
            for key, k in cache[0].items():
                consts = dict(k.src.constants.items()) if hasattr(k.src, "constants") else {}
                regs.append(dict(n_regs=k.n_regs, n_spills=k.n_spills, key=str(key)[-400:], consts=str(consts)[-300:]))
    except Exception as exc:  # noqa: BLE001  (a Triton internals change: report it, keep the timings)
        regs.append(dict(error=repr(exc)))
    res["hgemvr_regs"] = regs
    for r in regs:
        print("regs", json.dumps(r)[-500:], flush=True)
    res["wall_s"] = time.time() - t0
    (args.out / "s12-norm.json").write_text(json.dumps(res, indent=1))
    print(f"wall {res['wall_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
