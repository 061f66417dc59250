"""Session 18, helper H4 (issue 4): the decode step with TCSX_XP extended to tcl picks off and on (llama_fast.
TCL_XP_BUCKETS empty vs {128, 256}: the norm / silu_mul before a tcl GEMM write its wgmma operand order, so quant_tcl's
pre-pass does not run; tcsx picks take xp in both), alternating round by round on ONE runner: s17_xp_decode.py's
protocol with the module switch as the variant (read at every forward, so at each variant's graph capture; both read
the shipped table: INLAID_QMM_TUNED=1, one pick cache).

Per batch: each variant's decode graph captured once (the runner's default fusion and PDL), with its logits and the
launches its capture made (tcl pre-passes: quant_tcl.tcl_permute calls; tcl GEMMs on xp: llama_fast's launch_xp_kind (tcl kinds)
calls with xp); then --rounds rounds in which the variants take turns (order alternating A B / B A): device ms =
event-timed --replays back-to-back replays of the variant's graph, wall ms = runner.execute (median of --reps
synchronised steps). Ratios on / off per round, then the median; "lower" = rounds where on < off. Unlike s17 the KV
cache is not cloned and restored between variants (13B at batch 256 holds ~115 GB of it): a step writes only its own
new slots, each before it reads them, so every variant's logits come from the same cache.
Also the host cost of the picks' lookup (eager forwards pay it; a graph pays it once at capture): tuned_config per call
and llama_fast._XpPicks per hit, on this batch's x and the first layer's qkv.
Usage (device): INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels python3 bench/kernels/s18_tclxp_decode.py --out DIR \
    --shape 7b --batches 128,256
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
from inlaid_worker.kernels import quant_matmul_config, quant_tcl  # noqa: E402
from inlaid_worker.kernels.quant_matmul import tuned_config  # noqa: E402
from inlaid_worker.model import llama_fast  # noqa: E402
from random_model import SHAPES, kv_bytes, make_runner, weight_bytes, write_config  # noqa: E402
from s9b_profile import replay_ms  # noqa: E402
from steps import BLOCK, make_step, timed_all  # noqa: E402

KEEP: list = []  # every captured graph stays alive (a pool whose graphs died cannot be captured into again)
VARIANTS = {"off": frozenset(), "on": frozenset({128, 256})}  # name -> llama_fast.TCL_XP_BUCKETS
COUNTS = {"prepass": 0, "xp": 0}


def _spy() -> None:
    """Count tcl's pre-passes (quant_tcl.tcl_permute, called by launch_tcl when no xp is given) and the tcl GEMMs
    llama_fast runs on an operand-ordered x."""
    real_perm, real_launch = quant_tcl.tcl_permute, llama_fast.launch_xp_kind

    def perm(*a, **k):  # type: ignore[no-untyped-def]
        COUNTS["prepass"] += 1
        return real_perm(*a, **k)

    def launch(w, cfg, y, xp):  # type: ignore[no-untyped-def]  # llama_fast's one xp launch (session 18)
        from inlaid_worker.kernels.quant_matmul import TCL_KINDS

        COUNTS["xp"] += cfg.kind in TCL_KINDS
        return real_launch(w, cfg, y, xp)

    quant_tcl.tcl_permute = perm  # type: ignore[assignment]
    llama_fast.launch_xp_kind = launch  # type: ignore[assignment]


def lookup_us(runner, b: int) -> dict:  # type: ignore[no-untyped-def]
    """Host us per pick lookup: the tuner's (tuned_config, what every _xp_pick call costs) and a memo hit."""
    x = torch.zeros(b, runner.config.hidden_size, dtype=torch.float16, device=runner.device)
    qkv = runner.weights.layers[0].qkv
    n = 2000
    tuned_config(x, qkv.parts[0])
    t = time.perf_counter()
    for _ in range(n):
        llama_fast._xp_pick(x, qkv)
    pick = (time.perf_counter() - t) / n * 1e6
    memo = llama_fast._XpPicks()
    memo(x, qkv)
    t = time.perf_counter()
    for _ in range(n):
        memo(x, qkv)
    hit = (time.perf_counter() - t) / n * 1e6
    layers = len(runner.weights.layers)
    return dict(xp_pick_us=pick, memo_hit_us=hit, per_forward_before_us=3 * layers * pick,
                per_forward_after_us=3 * pick + (3 * layers - 3) * hit)  # fmt: skip


@torch.inference_mode()
def point(runner, b: int, args) -> dict:  # type: ignore[no-untyped-def]
    c = runner.config
    step = make_step(b, 1, args.context, [-1] * b, c.vocab_size, runner.num_kv_blocks)
    names = list(VARIANTS)
    logits, graphs, launches = {}, {}, {}
    dg = runner._graphs
    for n in names:  # capture + correctness from the same KV cache (module docstring)
        llama_fast.TCL_XP_BUCKETS = VARIANTS[n]
        COUNTS.update(prepass=0, xp=0)
        logits[n] = runner.execute(step).clone()  # the eager warm-up and the capture
        launches[n] = dict(COUNTS)
        logits[n + "@replay"] = runner.execute(step).clone()
        keys = [k for k in dg._graphs if k[0] == b and not k[1]]
        assert len(keys) == 1, keys
        graphs[n] = (keys[0], dg._graphs.pop(keys[0]))
        KEEP.append(graphs[n])
    mb = quant_matmul_config.m_bucket(b)
    picks = sorted(f"N{k[3]} K{k[4]}: {v.kind} m{v.block_m} n{v.block_n} s{v.split_k} st{v.num_stages}"
                   for k, v in quant_matmul_config._TUNED.items() if k[2] == mb)  # fmt: skip
    base = logits[names[0]]
    check = {n: dict(rel=float((lg - base).norm() / base.norm()),
                     argmax_same=float((lg.argmax(-1) == base.argmax(-1)).float().mean()),
                     finite=bool(torch.isfinite(lg).all())) for n, lg in logits.items()}  # fmt: skip
    dev: dict = {n: [] for n in names}
    wall: dict = {n: [] for n in names}
    for r in range(args.rounds):
        for n in names if r % 2 == 0 else names[::-1]:
            llama_fast.TCL_XP_BUCKETS = VARIANTS[n]
            key, g = graphs[n]
            dg._graphs[key] = g
            dev[n].append(round(replay_ms(g.graph, args.replays), 4))
            t = timed_all(lambda: runner.execute(step), runner.device, 2, args.reps)  # noqa: B023
            wall[n].append(round(sorted(t)[len(t) // 2] * 1e3, 4))
            del dg._graphs[key]
    roof = (weight_bytes(runner.weights, b) + kv_bytes(c, b * args.context, 2)) / args.bw * 1e3
    out = dict(batch=b, roofline_ms=roof, check=check, picks=picks, launches_at_capture=launches,
               lookup=lookup_us(runner, b), rounds_device_ms=dev, rounds_wall_ms=wall,
               device_ms={n: statistics.median(v) for n, v in dev.items()},
               wall_ms={n: statistics.median(v) for n, v in wall.items()})  # fmt: skip
    a, z = names[0], names[-1]
    for key in ("device", "wall"):
        ra, rz = out[f"rounds_{key}_ms"][a], out[f"rounds_{key}_ms"][z]
        ratios = [y / x for x, y in zip(ra, rz, strict=True)]
        out[f"{key}_cmp"] = dict(ratio_median=statistics.median(ratios), lower=sum(q < 1 for q in ratios),
                                 rounds=len(ratios), ratios=[round(q, 5) for q in ratios], a_spread=max(ra) - min(ra),
                                 b_spread=max(rz) - min(rz))  # fmt: skip
    d, w, lk = out["device_cmp"], out["wall_cmp"], out["lookup"]
    print(f"{args.shape} batch {b}: device {a} {out['device_ms'][a]:.4f} -> {z} {out['device_ms'][z]:.4f} ms = "
          f"{d['ratio_median']:.4f} (lower in {d['lower']}/{d['rounds']}; max round {max(d['ratios']):.4f}; spreads "
          f"{d['a_spread']:.4f} / {d['b_spread']:.4f}); wall {out['wall_ms'][a]:.4f} -> {out['wall_ms'][z]:.4f} = "
          f"{w['ratio_median']:.4f} ({w['lower']}/{w['rounds']}); launches {launches}; logits rel "
          f"{check[z]['rel']:.2e} (off replay {check[a + '@replay']['rel']:.2e}) argmax {check[z]['argmax_same']:.3f}; "
          f"lookup {lk['xp_pick_us']:.2f} us, memo hit {lk['memo_hit_us']:.2f} us", flush=True)  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--shape", default="7b")
    ap.add_argument("--batches", default="128,256")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--replays", type=int, default=20)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--tag", default="s18-tcl-xp")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    _spy()
    batches = [int(b) for b in args.batches.split(",") if b]
    dev = torch.device("cuda")
    t0 = time.time()
    args.bw = copy_bandwidth(dev)
    cfg_dir = write_config(SHAPES[args.shape], Path(tempfile.mkdtemp()) / args.shape)
    blocks = max(batches) * (args.context // BLOCK + 2) + 64
    runner = make_runner(cfg_dir, "int4", dev, torch.float16, blocks, BLOCK, 4, "triton", True)
    res: dict = dict(date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                     device=torch.cuda.get_device_name(), torch=torch.__version__, copy_GBps=args.bw / 1e9,
                     argv=sys.argv, shape=args.shape, fusion=runner.decode_fusion, pdl=runner.decode_pdl,
                     package=llama_fast.__file__, tcsx_xp=llama_fast.tcsx_xp_on(), points=[])  # fmt: skip
    path = args.out / f"{args.tag}-{args.shape}.json"
    for b in batches:
        res["points"].append(point(runner, b, args))
        path.write_text(json.dumps(res, indent=1))
    res["wall_s"] = time.time() - t0
    path.write_text(json.dumps(res, indent=1))
    print(f"wall {res['wall_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
