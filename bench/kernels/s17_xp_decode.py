"""Session 17, helper H5 (issue 4): the decode step with llama_fast's TCSX_XP plumbing off and on (env INLAID_TCSX_XP:
the norm / silu_mul before a tcsx GEMM write its wgmma operand order, so quant_tcsx's pre-pass does not run),
alternating round by round on ONE runner: s16_mid_decode.py's protocol with the env switch as the variant instead of
the tuner table (both variants read the shipped table: INLAID_QMM_TUNED=1, one pick cache).

Per batch: each variant's decode graph captured once (the runner's default fusion and PDL; the switch is read at
capture), with its logits from the same KV cache and the launches its capture made (pre-passes: quant_tcsx.
tcsx_permute calls; xp GEMMs: llama_fast's launch_xp_kind calls of a tcsx kind); then --rounds rounds in which the variants
take turns (order alternating A B / B A): device ms = event-timed --replays back-to-back replays of the variant's graph,
wall ms = runner.execute (median of --reps synchronised steps). Ratios on / off per round, then the median; "lower" =
rounds where on < off.
Usage (device): INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels python3 bench/kernels/s17_xp_decode.py --out DIR \
    --shape 7b --batches 32,64,128
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

from bench_decode import copy_bandwidth  # noqa: E402
from inlaid_worker.kernels import quant_matmul_config, quant_tcsx  # noqa: E402
from inlaid_worker.model import llama_fast  # noqa: E402
from random_model import SHAPES, kv_bytes, make_runner, weight_bytes, write_config  # noqa: E402
from s9b_profile import replay_ms  # noqa: E402
from steps import BLOCK, make_step, timed_all  # noqa: E402

KEEP: list = []  # every captured graph stays alive (a pool whose graphs died cannot be captured into again)
CONTEXT = 512
VARIANTS = {"off": "0", "on": "1"}  # name -> INLAID_TCSX_XP
COUNTS = {"prepass": 0, "xp": 0}


def _spy() -> None:
    """Count the pre-passes (quant_tcsx.tcsx_permute, called by launch_tcsx when no xp is given) and the GEMMs
    llama_fast runs on an operand-ordered x."""
    real_perm, real_launch = quant_tcsx.tcsx_permute, llama_fast.launch_xp_kind

    def perm(*a, **k):  # type: ignore[no-untyped-def]
        COUNTS["prepass"] += 1
        return real_perm(*a, **k)

    def launch(w, cfg, y, xp):  # type: ignore[no-untyped-def]  # llama_fast's one xp launch (session 18)
        from inlaid_worker.kernels.quant_matmul_config import TCSX_KINDS

        COUNTS["xp"] += cfg.kind in TCSX_KINDS
        return real_launch(w, cfg, y, xp)

    quant_tcsx.tcsx_permute = perm  # type: ignore[assignment]
    llama_fast.launch_xp_kind = launch  # type: ignore[assignment]


@torch.inference_mode()
def point(runner, b: int, args) -> dict:  # type: ignore[no-untyped-def]
    c = runner.config
    step = make_step(b, 1, CONTEXT, [-1] * b, c.vocab_size, runner.num_kv_blocks)
    kv0 = runner.kv_cache.clone()
    names = list(VARIANTS)
    logits, graphs, launches = {}, {}, {}
    dg = runner._graphs
    for n in names:  # capture + correctness from the same KV cache
        os.environ["INLAID_TCSX_XP"] = VARIANTS[n]
        COUNTS.update(prepass=0, xp=0)
        runner.kv_cache.copy_(kv0)
        logits[n] = runner.execute(step).clone()  # the eager warm-up and the capture
        launches[n] = dict(COUNTS)
        runner.kv_cache.copy_(kv0)
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
            os.environ["INLAID_TCSX_XP"] = VARIANTS[n]
            key, g = graphs[n]
            dg._graphs[key] = g
            dev[n].append(round(replay_ms(g.graph, args.replays), 4))
            t = timed_all(lambda: runner.execute(step), runner.device, 2, args.reps)  # noqa: B023
            wall[n].append(round(sorted(t)[len(t) // 2] * 1e3, 4))
            del dg._graphs[key]
    roof = (weight_bytes(runner.weights, b) + kv_bytes(c, b * CONTEXT, 2)) / args.bw * 1e3
    out = dict(batch=b, roofline_ms=roof, check=check, picks=picks, launches_at_capture=launches,
               rounds_device_ms=dev, rounds_wall_ms=wall, device_ms={n: statistics.median(v) for n, v in dev.items()},
               wall_ms={n: statistics.median(v) for n, v in wall.items()})  # fmt: skip
    a, z = names[0], names[-1]
    for key in ("device", "wall"):
        ra, rz = out[f"rounds_{key}_ms"][a], out[f"rounds_{key}_ms"][z]
        ratios = [y / x for x, y in zip(ra, rz, strict=True)]
        out[f"{key}_cmp"] = dict(ratio_median=statistics.median(ratios), lower=sum(q < 1 for q in ratios),
                                 rounds=len(ratios), ratios=[round(q, 5) for q in ratios], a_spread=max(ra) - min(ra),
                                 b_spread=max(rz) - min(rz))  # fmt: skip
    d, w = out["device_cmp"], out["wall_cmp"]
    print(f"{args.shape} batch {b}: device {a} {out['device_ms'][a]:.4f} -> {z} {out['device_ms'][z]:.4f} ms = "
          f"{d['ratio_median']:.4f} (lower in {d['lower']}/{d['rounds']}; spreads {d['a_spread']:.4f} / "
          f"{d['b_spread']:.4f}); wall {out['wall_ms'][a]:.4f} -> {out['wall_ms'][z]:.4f} = {w['ratio_median']:.4f} "
          f"({w['lower']}/{w['rounds']}); launches {launches}; logits rel {check[z]['rel']:.2e} argmax "
          f"{check[z]['argmax_same']:.3f}", flush=True)  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--shape", default="7b")
    ap.add_argument("--batches", default="32,64,128")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--replays", type=int, default=20)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--tag", default="s17-xp")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    _spy()
    batches = [int(b) for b in args.batches.split(",") if b]
    dev = torch.device("cuda")
    t0 = time.time()
    args.bw = copy_bandwidth(dev)
    cfg_dir = write_config(SHAPES[args.shape], Path(tempfile.mkdtemp()) / args.shape)
    blocks = max(batches) * (CONTEXT // BLOCK + 2) + 64
    runner = make_runner(cfg_dir, "int4", dev, torch.float16, blocks, BLOCK, 4, "triton", True)
    res: dict = dict(date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                     device=torch.cuda.get_device_name(), torch=torch.__version__, copy_GBps=args.bw / 1e9,
                     argv=sys.argv, shape=args.shape, fusion=runner.decode_fusion, pdl=runner.decode_pdl,
                     package=llama_fast.__file__, points=[])  # fmt: skip
    path = args.out / f"{args.tag}-{args.shape}.json"
    for b in batches:
        res["points"].append(point(runner, b, args))
        path.write_text(json.dumps(res, indent=1))
    res["wall_s"] = time.time() - t0
    path.write_text(json.dumps(res, indent=1))
    print(f"wall {res['wall_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
