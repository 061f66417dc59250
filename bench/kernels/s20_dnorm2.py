"""Session 20, second design (issue 4): the "+dn2" decode fusion (kernels.deferred_norm.gemv_dnorm2: no add + RMSNorm
launch between layers; the consumer GEMVs load the producers' sums, h and the norm weight in the plain x-pair layout,
one extra program column stores h' and the rows' sum(h'^2), r is applied by the next kernel) against today's policy,
in the 7B int4 decode step at batch 1. A copy of s20_dnorm.py (same protocol) with other variants.

7B int4 random model (bench/engine/random_model), fp16, 512 cached tokens, decode CUDA graphs with the runner's PDL
default, INLAID_QMM_TUNED=1. Protocol (s15_merge.py / s14_cfinq.py): per batch every variant's graph captured once on
ONE runner, then --rounds rounds in which the variants take turns; device ms = event-timed --replays back-to-back
replays of the variant's own graph; per round the ratio to "base". Variants: "base" (the shipped policy_fusion of the
batch), "dn2" ("swiglu+cfin+q+g+dn2" with deferred_norm's DN2_MAXNREG / DN2_MODE defaults), "dn2m<mode>" (that
mode), "dn2c<N>" (the cap set to N, 0 = uncapped), "qg" ("swiglu+cfin+q+g": dn2's fallback, the "+q" share), "dn"
(session 20's first design), "ctl" (base captured again: the noise control). Logits of each variant against base's.
Then the registers of every compiled _hgemvr_kernel variant (Triton's cache on the device).

Usage (device): INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels python3 bench/kernels/s20_dnorm2.py --out DIR
       [--variants base,dn2,qg,ctl] [--batches 1]
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
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))

from bench_decode import copy_bandwidth  # noqa: E402
from inlaid_worker.kernels import deferred_norm  # noqa: E402
from inlaid_worker.model.decode_graphs import policy_fusion  # noqa: E402
from random_model import SHAPES, kv_bytes, make_runner, weight_bytes, write_config  # noqa: E402
from steps import BLOCK, make_step  # noqa: E402

DN = "swiglu+cfin+g+dn"
DN2 = "swiglu+cfin+q+g+dn2"
CAP_DEFAULT = deferred_norm.DN_MAXNREG
CAP2_DEFAULT, MODE2_DEFAULT = deferred_norm.DN2_MAXNREG, deferred_norm.DN2_MODE
KEEP: list = []
DN2_CALLS = [0]  # gemv_dnorm2 launches seen (llama_fast's, at capture): 0 means "dn2" fell back


def _count_dn2() -> None:
    from inlaid_worker.model import llama_fast

    real = llama_fast.gemv_dnorm2

    def counted(*a, **kw):  # type: ignore[no-untyped-def]
        DN2_CALLS[0] += 1
        return real(*a, **kw)

    llama_fast.gemv_dnorm2 = counted


def variant(name: str, b: int) -> str:
    """The fusion of a variant name at batch b, deferred_norm's switches set for it."""
    deferred_norm.DN_MAXNREG = CAP_DEFAULT
    deferred_norm.DN_ABL = 0
    deferred_norm.DN2_MAXNREG, deferred_norm.DN2_MODE = CAP2_DEFAULT, MODE2_DEFAULT
    if name in ("base", "ctl"):
        return policy_fusion(b)
    if name == "qg":
        return "swiglu+cfin+q+g"
    if name.startswith("dn2"):
        if name[3:4] == "m":
            deferred_norm.DN2_MODE = int(name[4:])
        elif name[3:4] == "c":
            deferred_norm.DN2_MAXNREG = int(name[4:]) or None
        return DN2
    if name == "dn":
        return DN
    raise ValueError(name)


def replay_ms(g: torch.cuda.CUDAGraph, n: int) -> float:
    a, z = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    a.record()
    for _ in range(n):
        g.replay()
    z.record()
    z.synchronize()
    return a.elapsed_time(z) / n


@torch.inference_mode()
def point(runner, b: int, args, bw: float) -> dict:  # type: ignore[no-untyped-def]
    c = runner.config
    step = make_step(b, 1, 512, [-1] * b, c.vocab_size, runner.num_kv_blocks)
    kv0 = runner.kv_cache.clone()
    dg = runner._graphs
    graphs, logits, fusions = {}, {}, {}
    for name in args.variants.split(","):
        fusion = fusions[name] = variant(name, b)
        runner.decode_fusion = fusion
        before = DN2_CALLS[0]
        runner.kv_cache.copy_(kv0)
        logits[name] = runner.execute(step).clone()
        key = next(k for k in dg._graphs if k[0] == b and not k[1] and k[3] == fusion)
        graphs[name] = dg._graphs.pop(key)
        KEEP.append(graphs[name])
        print(f"batch {b} {name}: captured, gemv_dnorm2 launches {DN2_CALLS[0] - before}", flush=True)
    variant("base", b)
    runner.kv_cache.copy_(kv0)
    base = logits["base"]
    check = {n: dict(max_abs=float((lg - base).abs().max()), rel=float((lg - base).norm() / base.norm()),
                     argmax_same=float((lg.argmax(-1) == base.argmax(-1)).float().mean()),
                     finite=bool(torch.isfinite(lg).all())) for n, lg in logits.items()}  # fmt: skip
    dev: dict = {n: [] for n in graphs}
    for _ in range(args.rounds):
        for n, g in graphs.items():
            dev[n].append(round(replay_ms(g.graph, args.replays), 5))
    out = dict(batch=b, fusions=fusions, roofline_ms=(weight_bytes(runner.weights, b) + kv_bytes(c, b * 512, 2)) / bw * 1e3,
               check=check, rounds_device_ms=dev, summary={})  # fmt: skip
    for n in graphs:
        ratios = [y / x for x, y in zip(dev["base"], dev[n], strict=True)]
        diffs = [(y - x) * 1e3 for x, y in zip(dev["base"], dev[n], strict=True)]
        s = dict(median_ms=statistics.median(dev[n]), spread_us=(max(dev[n]) - min(dev[n])) * 1e3,
                 ratio_median=statistics.median(ratios), delta_us=statistics.median(diffs),
                 lower=sum(r < 1 for r in ratios), rounds=len(ratios))  # fmt: skip
        out["summary"][n] = s
        print(f"batch {b} {n:5s} {fusions[n]:18s} {s['median_ms']:.4f} ms (spread {s['spread_us']:4.1f} us) vs base "
              f"{s['ratio_median']:.4f}x {s['delta_us']:+6.1f} us/step lower {s['lower']}/{s['rounds']} | logits "
              f"max_abs {check[n]['max_abs']:.2e} rel {check[n]['rel']:.1e} argmax {check[n]['argmax_same']:.3f} "
              f"finite {check[n]['finite']}", flush=True)  # fmt: skip
    print(f"batch {b} roofline {out['roofline_ms']:.4f} ms", flush=True)
    return out


def compiled_regs() -> list[dict]:
    """n_regs / n_spills of every _hgemvr_kernel variant compiled in this process, with its switches."""
    from inlaid_worker.kernels import quant_hgemvr as qh

    rows = []
    for cache in qh._hgemvr_kernel.device_caches.values():
        for ck in cache[0].values():
            try:
                consts = {str(k): v for k, v in ck.src.constants.items() if isinstance(v, (int, bool))}
            except Exception:  # noqa: BLE001 - best effort
                consts = {}
            keep = {k: v for k, v in consts.items() if any(s in k for s in ("DNORM", "XNORM", "XSUMS", "FINISH",
                                                                           "BURST", "BLOCK_M", "BLOCK_N", "QK_CONST"))}  # fmt: skip
            rows.append(dict(n_regs=ck.n_regs, n_spills=ck.n_spills, maxnreg=getattr(ck.metadata, "maxnreg", None),
                             consts=keep))  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--batches", default="1")
    ap.add_argument("--variants", default="base,dn2,qg,ctl")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--replays", type=int, default=20)
    ap.add_argument("--tag", default="s20-dnorm2")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda")
    t0 = time.time()
    _count_dn2()
    cfg_dir = write_config(SHAPES["7b"], Path(tempfile.mkdtemp()) / "7b")
    runner = make_runner(cfg_dir, "int4", dev, torch.float16, 1024, BLOCK, 4, "triton", True)
    bw = copy_bandwidth(dev)
    res: dict = dict(date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), device=torch.cuda.get_device_name(),
                     torch=torch.__version__, triton=triton.__version__, copy_GBps=bw / 1e9, argv=sys.argv,
                     dn2_maxnreg_default=CAP2_DEFAULT, dn2_mode_default=MODE2_DEFAULT, points=[])  # fmt: skip
    path = args.out / f"{args.tag}.json"
    print(f"setup {time.time() - t0:.0f} s, copy {bw / 1e9:.0f} GB/s", flush=True)
    for b in (int(x) for x in args.batches.split(",") if x):
        res["points"].append(point(runner, b, args, bw))
        path.write_text(json.dumps(res, indent=1))
        print(f"t {time.time() - t0:.0f} s", flush=True)
    res["regs"] = compiled_regs()
    for r in res["regs"]:
        print("regs", r, flush=True)
    res["wall_s"] = time.time() - t0
    path.write_text(json.dumps(res, indent=1))
    print(f"wall {res['wall_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
