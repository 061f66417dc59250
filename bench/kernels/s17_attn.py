"""Session 17 (issue 4): other work splits of the batch-1/2/4 row decode attention (kernels.decode_row), measured with
the options it already takes: many warps a program and few partitions (fewer partials for the last arriver to merge,
more bytes in flight a program), against the shipped one-warp 16-token partitions (paged_decode.ROW_TABLE).

Stages (one process, one H200, torch's CUDA graphs; every variant's kernel compiled before any timing):
  iso:   the attention alone, 7B shape (32 heads = 32 KV heads x 128, fp16, block 16), 32 launches a graph over 32
         layers' caches, PDL mode 1 (the decode graphs' mode; prefetch before the wait), per launch in us, the
         variants taking turns for --iso-rounds rounds, at every --contexts; batches 1-2 run row_rope_decode (rotary
         and the new token's KV write inside, as the shipped buckets 1-2), batch 4 row_decode (as bucket 4).
  exact: every variant's output against the torch reference (row_rope_reference / paged_decode_reference) at the
         same shapes (relative norm error, max |diff|).
  step:  the 7B int4 decode step (random g128 weights, bench/engine/random_model, INLAID_QMM_TUNED=1, the shipped
         fusion of the bucket), s12_norm.point's protocol with the context as a parameter: each variant's graph
         captured once on ONE runner, --rounds rounds in which the variants take turns (device ms: event-timed
         --replays back-to-back replays; wall ms: runner.execute, median of --reps), logits against the first
         variant's. Variants per batch: the shipped options, a second capture of them ("ctl", the noise control) and
         the --pick best of the iso sweep (by the iso ratio at the first context, then the best at the others).

Variant names: "key=value/key=value" of decode_row's options (INLAID_DECODE_ROW_OPTS while the graph is captured, or
keywords in iso); "" (shown as "ship") is the shipped table entry; "ctl" tags a second capture of it; a "row" part
sets INLAID_DECODE_ROW=1 (impl "row" at a bucket where ROW_TABLE leaves "tiles", e.g. --batches 8 --stages step).
--step "B=v1,v2;..." fixes a batch's step variants (the iso best at each context is added where the iso ran).
Results: bench/results/decode-2026-12-01-s17-attn.md. The `groups=1` kernel (and num_warps up to 16, block_n up to 256)
was slower everywhere and is not in the package: apply bench/kernels/s17_attn_groups.patch (git apply, repo root) to
run those variants again.

Usage (device): INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels python3 bench/kernels/s17_attn.py --out DIR
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
from inlaid_worker.kernels import decode_row, pdl  # noqa: E402
from inlaid_worker.kernels.paged_decode import paged_decode_reference  # noqa: E402
from random_model import SHAPES, kv_bytes, make_runner, weight_bytes, write_config  # noqa: E402
from s9b_profile import replay_ms  # noqa: E402
from s12_norm import KEEP, key_of  # noqa: E402
from steps import BLOCK, make_step, timed_all  # noqa: E402

FUSION = {1: "swiglu+cfin+g", 2: "swiglu+cfin+q", 4: "cfin", 8: "cfin"}  # decode_graphs.FUSION_POLICY's (session 16)
G = "/groups=1"  # decode_row._row_kernel_g: warp groups with their own softmax, meeting once a program
SWEEP = {
    1: ["", "ctl", "parts=4/block_n=128/num_warps=8", "parts=4/block_n=128/num_warps=16",
        "parts=4/block_n=128/num_warps=4", "parts=8/block_n=64/num_warps=4", "parts=8/block_n=64/num_warps=8",
        "parts=8/block_n=64/num_warps=16", "parts=16/block_n=32/num_warps=2", "parts=16/block_n=32/num_warps=4",
        "parts=2/block_n=128/num_warps=16", "parts=2/block_n=256/num_warps=16/lookahead=0",
        "parts=4/block_n=128/num_warps=8" + G, "parts=4/block_n=128/num_warps=16" + G,
        "parts=8/block_n=64/num_warps=4" + G, "parts=8/block_n=64/num_warps=8" + G,
        "parts=16/block_n=32/num_warps=4" + G, "parts=2/block_n=128/num_warps=16" + G,
        "parts=1/block_n=128/num_warps=16" + G],
    2: ["", "ctl", "parts=2/block_n=128/num_warps=8", "parts=2/block_n=128/num_warps=16",
        "parts=4/block_n=64/num_warps=4", "parts=4/block_n=64/num_warps=8", "parts=4/block_n=128/num_warps=8",
        "parts=8/block_n=32/num_warps=4",
        "parts=2/block_n=128/num_warps=8" + G, "parts=2/block_n=128/num_warps=16" + G,
        "parts=4/block_n=64/num_warps=8" + G, "parts=1/block_n=128/num_warps=16" + G],
    4: ["", "ctl", "parts=1/block_n=128/num_warps=8", "parts=1/block_n=128/num_warps=16",
        "parts=2/block_n=64/num_warps=4", "parts=2/block_n=64/num_warps=8", "parts=2/block_n=128/num_warps=8",
        "parts=4/block_n=32/num_warps=4",
        "parts=1/block_n=128/num_warps=8" + G, "parts=1/block_n=128/num_warps=16" + G,
        "parts=2/block_n=64/num_warps=8" + G, "parts=2/block_n=128/num_warps=8" + G],
}  # fmt: skip


def opts_of(name: str) -> dict[str, int]:
    return {k: int(v) for k, v in (p.split("=") for p in name.split("/") if "=" in p)}


def show(name: str) -> str:
    return name or "ship"


def set_env(name: str) -> None:
    """The variant's row options; a "row" part also sets INLAID_DECODE_ROW=1 (impl "row" at a bucket ROW_TABLE leaves
    on "tiles", e.g. 8)."""
    os.environ["INLAID_DECODE_ROW_OPTS"] = ",".join(f"{k}={v}" for k, v in opts_of(name).items())
    os.environ["INLAID_DECODE_ROW"] = "1" if "row" in name.split("/") else ""


def ship_base(b: int) -> dict[str, int]:
    from inlaid_worker.kernels import paged_decode as pd

    return dict(pd.ROW_TABLE["NVIDIA H200"][b])


@torch.inference_mode()
def iso(args, dev: torch.device, b: int, ctx: int, names: list[str], time_it: bool = True) -> dict:  # type: ignore[no-untyped-def]
    heads, kvh, d = 32, 32, 128
    per = -(-ctx // BLOCK)
    gen = torch.Generator(device=dev).manual_seed(17 * b + ctx)
    caches = [(torch.randn(b * per, BLOCK, kvh, d, device=dev, dtype=torch.float16, generator=gen),
               torch.randn(b * per, BLOCK, kvh, d, device=dev, dtype=torch.float16, generator=gen)) for _ in range(32)]  # fmt: skip
    tables = torch.randperm(b * per, device=dev, generator=gen).to(torch.int32).reshape(b, per)
    lens = torch.full((b,), ctx, dtype=torch.int32, device=dev)
    slots = (tables[:, (ctx - 1) // BLOCK].long() * BLOCK + (ctx - 1) % BLOCK).to(torch.int32)
    qkv = torch.randn(b, (heads + 2 * kvh) * d, device=dev, dtype=torch.float16, generator=gen)
    cos = torch.randn(b, d, device=dev, dtype=torch.float16, generator=gen)
    sin = torch.randn(b, d, device=dev, dtype=torch.float16, generator=gen)
    q = qkv[:, : heads * d].reshape(b, heads, d)
    base = ship_base(b)
    rope = bool(base.get("rope", 0))
    os.environ["INLAID_DECODE_ROW_OPTS"] = ""

    def launches(name: str) -> list:
        kw = opts_of(name)
        if rope:
            return [decode_row.row_rope_decode(qkv, cos, sin, slots, k, v, tables, lens, d**-0.5, heads, base=base,
                                               **kw) for k, v in caches]  # fmt: skip
        return [decode_row.row_decode(q, k, v, tables, lens, d**-0.5, torch.empty_like(q), base=base, **kw)
                for k, v in caches]  # fmt: skip

    k0 = [(k[:, :, :, :].clone(), v.clone()) for k, v in caches[:1]]
    graphs, err = {}, {}
    with pdl.scope(1):
        for name in names:
            caches[0][0].copy_(k0[0][0])
            caches[0][1].copy_(k0[0][1])
            out = launches(name)[0].float()
            if not time_it:
                continue
            # exact: the first layer against the torch reference (from the same cache, the new token written again)
            kc, vc = k0[0][0].clone(), k0[0][1].clone()
            if rope:
                ref = decode_row.row_rope_reference(qkv, cos, sin, slots.long(), kc, vc, tables, lens, d**-0.5, heads)
            else:
                ref = paged_decode_reference(q, kc, vc, tables, lens, d**-0.5)
            ref = ref.float()
            err[show(name)] = dict(rel=float((out - ref).norm() / ref.norm()), max_abs=float((out - ref).abs().max()))
            torch.cuda.synchronize()
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                launches(name)
            graphs[show(name)] = g
            KEEP.append(g)
    if not time_it:
        return {}
    per_launch: dict = {n: [] for n in graphs}
    for _ in range(args.iso_rounds):
        for n, g in graphs.items():
            per_launch[n].append(round(replay_ms(g, args.replays) * 1e3 / 32, 3))
    med = {n: statistics.median(v) for n, v in per_launch.items()}
    ship = per_launch.get("ship") or next(iter(per_launch.values()))
    ratio = {n: statistics.median([x / y for x, y in zip(v, ship, strict=True)]) for n, v in per_launch.items()}
    lower = {n: sum(x < y for x, y in zip(v, ship, strict=True)) for n, v in per_launch.items()}
    out = dict(batch=b, context=ctx, us=per_launch, median_us=med, ratio_vs_ship=ratio, lower_vs_ship=lower, exact=err)
    for n in graphs:
        print(f"iso b{b} ctx {ctx} {n:48s} {med[n]:7.3f} us  x{ratio[n]:.3f} (lower {lower[n]}/{args.iso_rounds})"
              f"  rel err {err[n]['rel']:.2e} max {err[n]['max_abs']:.2e}", flush=True)  # fmt: skip
    del graphs, caches
    return out


@torch.inference_mode()
def point(args, runner, b: int, ctx: int, names: list[str], bw: float) -> dict:  # type: ignore[no-untyped-def]
    c = runner.config
    step = make_step(b, 1, ctx, [-1] * b, c.vocab_size, runner.num_kv_blocks)
    kv0 = runner.kv_cache.clone()
    logits, graphs = {}, {}
    dg = runner._graphs
    fusion = FUSION[b]
    runner.decode_fusion = fusion
    for n in names:
        set_env(n)
        runner.kv_cache.copy_(kv0)
        logits[n] = runner.execute(step).clone()
        key = key_of(runner, b, fusion)
        graphs[n] = (key, dg._graphs.pop(key))
        KEEP.append(graphs[n])
    set_env("")
    base = logits[names[0]]
    check = {show(n): dict(rel=float((lg - base).norm() / base.norm()), max_abs=float((lg - base).abs().max()),
                           argmax_same=float((lg.argmax(-1) == base.argmax(-1)).float().mean()),
                           finite=bool(torch.isfinite(lg).all())) for n, lg in logits.items()}  # fmt: skip
    dev_ms: dict = {n: [] for n in names}
    wall_ms: dict = {n: [] for n in names}
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            key, g = graphs[n]
            dg._graphs[key] = g
            dev_ms[n].append(round(replay_ms(g.graph, args.replays), 4))
            t = timed_all(lambda: runner.execute(step), runner.device, 2, args.reps)  # noqa: B023
            wall_ms[n].append(round(sorted(t)[len(t) // 2] * 1e3, 4))
            del dg._graphs[key]
    roof = (weight_bytes(runner.weights, b) + kv_bytes(c, b * ctx, 2)) / bw * 1e3
    out = dict(batch=b, context=ctx, fusion=fusion, roofline_ms=roof, check=check,
               rounds_device_ms={show(n): v for n, v in dev_ms.items()},
               rounds_wall_ms={show(n): v for n, v in wall_ms.items()}, pairs={})  # fmt: skip
    a = dev_ms[names[0]]
    for n in names:
        v = dev_ms[n]
        ratios = [y / x for x, y in zip(a, v, strict=True)]
        wr = [y / x for x, y in zip(wall_ms[names[0]], wall_ms[n], strict=True)]
        out["pairs"][show(n)] = dict(device_ms=statistics.median(v), ratio_median=statistics.median(ratios),
                                     lower=sum(x < 1 for x in ratios), rounds=len(ratios),
                                     delta_us=(statistics.median(v) - statistics.median(a)) * 1e3,
                                     spread_ms=max(v) - min(v), wall_ms=statistics.median(wall_ms[n]),
                                     wall_ratio=statistics.median(wr), wall_lower=sum(x < 1 for x in wr))  # fmt: skip
        p = out["pairs"][show(n)]
        print(f"step b{b} ctx {ctx} {fusion} {show(n):44s} device {p['device_ms']:.4f} ms x{p['ratio_median']:.4f} "
              f"(lower {p['lower']}/{p['rounds']}, {p['delta_us']:+.1f} us, spread {p['spread_ms'] * 1e3:.1f} us) "
              f"= {p['device_ms'] / roof:.3f}x roofline {roof:.4f} | wall {p['wall_ms']:.4f} x{p['wall_ratio']:.4f} | "
              f"logits rel {check[show(n)]['rel']:.1e} argmax {check[show(n)]['argmax_same']:.2f}", flush=True)  # fmt: skip
    return out


def pick(iso_rows: list[dict], b: int, contexts: list[int], k: int) -> list[str]:
    """The k variants (not ship / ctl) of least iso ratio at the first context, plus the best at each other one."""
    names = [n for n in SWEEP.get(b, []) if n not in ("", "ctl")]
    got: list[str] = []
    for i, ctx in enumerate(contexts):
        row = next((r for r in iso_rows if r["batch"] == b and r["context"] == ctx), None)
        if row is None:
            continue
        ok = [n for n in names if row["exact"][n]["rel"] < 1e-2]
        best = sorted(ok, key=lambda n: row["ratio_vs_ship"][n])
        for n in best[: (k if i == 0 else 1)]:
            if n not in got:
                got.append(n)
    return got


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--batches", default="1,2,4")
    ap.add_argument("--contexts", default="512,2048")
    ap.add_argument("--iso-contexts", default="", help="contexts of the iso sweep (default: --contexts)")
    ap.add_argument("--stages", default="iso,step")
    ap.add_argument("--iso-rounds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--replays", type=int, default=20)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--pick", type=int, default=3)
    ap.add_argument("--step", default="", help="fixed step variants per batch 'B=v1,v2;B=...' (else the iso pick)")
    ap.add_argument("--tag", default="s17-attn")
    ap.add_argument("--precompile", type=int, default=0, help="processes compiling the iso kernels first")
    ap.add_argument("--shard", type=int, default=0)
    ap.add_argument("--shards", type=int, default=1)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    batches = [int(x) for x in args.batches.split(",")]
    contexts = [int(x) for x in args.contexts.split(",")]
    dev = torch.device("cuda")
    t0 = time.time()
    res: dict = dict(date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), device=torch.cuda.get_device_name(),
                     torch=torch.__version__, argv=sys.argv, ship={b: ship_base(b) for b in batches if b in SWEEP},
                     iso=[], step=[],
                     picks={})  # fmt: skip
    path = args.out / f"{args.tag}.json"
    stages = args.stages.split(",")
    if "warm" in stages:  # a shard of the iso kernels compiled (Triton's disk cache), nothing timed
        todo = [(b, n) for b in batches for n in SWEEP[b] if n != "ctl"][args.shard :: args.shards]
        for b in {b for b, _ in todo}:
            iso(args, dev, b, 512, [n for bb, n in todo if bb == b], time_it=False)
        return
    if args.precompile > 0:
        import subprocess

        cmd = [sys.executable, __file__, "--out", str(args.out / "warm"), "--stages", "warm", "--batches", args.batches,
               "--shards", str(args.precompile)]  # fmt: skip
        procs = [subprocess.Popen([*cmd, "--shard", str(i)], stdout=subprocess.DEVNULL) for i in range(args.precompile)]
        print(f"precompile rc {[p.wait() for p in procs]} in {time.time() - t0:.0f} s", flush=True)
    runner = None
    if "step" in stages:
        fixed = {int(k): v.split(",") for k, v in (x.split("=", 1) for x in args.step.split(";") if x)}
        cfg_dir = write_config(SHAPES["7b"], Path(tempfile.mkdtemp()) / "7b")
        runner = make_runner(cfg_dir, "int4", dev, torch.float16, 1024, BLOCK, 4, "triton", True)
        res["copy_GBps"] = copy_bandwidth(dev) / 1e9
        print(f"runner {time.time() - t0:.0f} s, copy {res['copy_GBps']:.0f} GB/s", flush=True)
    iso_ctx = [int(x) for x in args.iso_contexts.split(",") if x] or contexts
    for ctx in contexts:
        if "iso" in stages and ctx in iso_ctx:
            for b in batches:
                res["iso"].append(iso(args, dev, b, ctx, SWEEP[b]))
                path.write_text(json.dumps(res, indent=1))
                print(f"t {time.time() - t0:.0f} s", flush=True)
        if runner is not None:
            for b in batches:
                cand = fixed.get(b) or pick(res["iso"], b, contexts, args.pick)
                if b in fixed:  # plus the iso sweep's best at this context where it ran
                    cand += [n for n in pick(res["iso"], b, [ctx], 1) if n not in cand]
                res["picks"][b] = cand
                res["step"].append(point(args, runner, b, ctx, ["", "ctl", *cand], res["copy_GBps"] * 1e9))
                path.write_text(json.dumps(res, indent=1))
                print(f"t {time.time() - t0:.0f} s", flush=True)
    res["wall_s"] = time.time() - t0
    path.write_text(json.dumps(res, indent=1))
    print(f"wall {res['wall_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
