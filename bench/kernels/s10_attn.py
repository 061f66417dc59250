"""Session 10 (issue 4): why the batch-1 decode attention (kernels.paged_decode impl "tiles") costs ~6 us a layer
whatever the context, and whether SKIP_EMPTY (partitions past the context exit before the PDL wait; the merge reads
only the others) pays in the 7B int4 step.
Stages (each under its own time limit; --stages picks):
  matrix: batch 1, contexts --contexts, variants (tiles autotuned = HEAD; tiles SKIP_EMPTY; fixed tile configs;
          fewer partitions; split) through bench_decode_attn.point: attn_off (attention alone, graph, PDL off),
          step_on (rope_cache + attention + merge, graph, PDL mode 1), kernel_us (torch.profiler, PDL off), the
          autotuner's pick; errors against the fp32 reference (step_on with the new token's slots clobbered);
  ncu:    the kernels of a 1-layer rope + attention + merge PDL graph at batch 1 / 512 (tiles, tiles SKIP_EMPTY,
          split) under Nsight Compute (run by the shell script: `python3 s10_attn.py ncu-target`);
  step:   runner.execute of the 7B int4 step per --step-plan (batch @ context: variants of STEP_VARIANTS: old =
          HEAD, skip = SKIP_EMPTY 1, cNN = a fixed tiles config at that batch's bucket, ...s = both), alternating
          round by round on ONE runner, each variant with its own decode graphs; wall time and the graph's device
          time (back-to-back replays).
Usage (device): INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels:bench/engine python3 bench/kernels/s10_attn.py
  --out DIR [--stages matrix,step]
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

import bench_decode_attn as bda  # noqa: E402
from inlaid_worker.kernels import paged_decode as pd  # noqa: E402

_plain = bda.paged_decode


def _paged_decode(*a, cfg=None, skip_empty=None, **kw):  # type: ignore[no-untyped-def]
    """bench_decode_attn's paged_decode with a fixed tiles config (cfg) and SKIP_EMPTY as variant options."""
    old = pd.TILES_FIXED
    pd.TILES_FIXED = {torch.cuda.get_device_name(): {1: cfg}} if cfg else {}
    try:
        return _plain(*a, skip_empty=skip_empty, **kw)
    finally:
        pd.TILES_FIXED = old


def matrix_variants(b: int, dev: torch.device, full: bool) -> list[tuple[str, dict]]:
    p = pd.choose_num_parts(b, bda.KV_HEADS, dev)
    out = [("tiles", dict(impl="tiles", skip_empty=0)), ("tiles-skip", dict(impl="tiles", skip_empty=1)),
            ("tiles-skip-pre", dict(impl="tiles", skip_empty=1, tiles_prefetch=1)),
            ("tiles-c32", dict(impl="tiles", skip_empty=0, cfg=(32, 4, 2))),
            ("tiles-c64", dict(impl="tiles", skip_empty=0, cfg=(64, 4, 2))),
            (f"tiles-p{p // 4}", dict(impl="tiles", skip_empty=0, num_parts=p // 4)),
            ("split", dict(impl="split")),
            ("tiles-c16", dict(impl="tiles", skip_empty=0, cfg=(16, 4, 2))),
            ("tiles-c16-skip", dict(impl="tiles", skip_empty=1, cfg=(16, 4, 2))),
            ("tiles-c32-skip", dict(impl="tiles", skip_empty=1, cfg=(32, 4, 2)))]  # fmt: skip
    return [v for v in out if not MATRIX_KEEP or v[0] in MATRIX_KEEP]


MATRIX_KEEP: list[str] = []  # --matrix-variants (empty: all)


def matrix(args, res: dict, dev: torch.device) -> None:  # type: ignore[no-untyped-def]
    bda.variants = matrix_variants
    bda.paged_decode = _paged_decode
    rows = []
    for ctx in args.contexts:
        layer_mb = ctx * 2 * bda.KV_HEADS * bda.D * 2 / 1e6
        layers = int(min(32, max(4, -(-200 // layer_mb))))
        for row in bda.point(1, ctx, layers, False, True, dev):
            row["tuned_pick"] = str(getattr(pd._decode_tuned, "best_config", None))
            rows.append(row)
        res["matrix"] = rows
        (args.out / "s10-attn.json").write_text(json.dumps(res, indent=1))
    bda.paged_decode = _plain
    print("| ctx | variant | attn_off us | step_on us | kernel us | err | pdl_err |", flush=True)
    for r in rows:
        ku = r.get("kernel_us", {})
        print(f"| {r['context']} | {r['variant']} | {r.get('attn_off_us', 0):.2f} | {r.get('step_on_us', 0):.2f} | "
              f"{' + '.join(f'{k[:8]} {v:.2f}' for k, v in ku.items())} | {r.get('rel_err', -1):.1e} | "
              f"{r.get('pdl_err', -1):.1e} {r.get('error', '')}", flush=True)  # fmt: skip
    print("tuned pick:", rows[-1]["tuned_pick"] if rows else None, flush=True)


def ncu_target() -> None:
    """The process ncu profiles: per variant a 2-layer rope_cache + attention + merge graph (PDL 1), batch 1 /
    512 tokens, captured after one eager call, then replayed once. Fixed tile (env INLAID_DECODE_TILES_CONFIG)
    so no autotuning launches are profiled."""
    from inlaid_worker.kernels import pdl
    from inlaid_worker.kernels.rope_cache import rope_and_cache
    from inlaid_worker.model.rope import cos_sin

    dev = torch.device("cuda")
    torch.manual_seed(0)
    ctx, layers, h, d, bs = 512, 1, 32, 128, 16
    nblk = ctx // bs
    kv = torch.randn(layers, 2, nblk * 4, bs, h, d, device=dev).half()
    tables = torch.randperm(nblk * 4, device=dev)[:nblk].to(torch.int32).reshape(1, nblk)
    lens = torch.full((1,), ctx, device=dev, dtype=torch.int32)
    slots = (tables[:, -1].long() * bs + bs - 1).to(torch.int32)
    qkv = torch.randn(1, 3 * h * d, device=dev).half()
    inv = 1.0 / (10000.0 ** (torch.arange(0, d, 2, device=dev, dtype=torch.float32) / d))
    cos, sin = cos_sin(inv, lens - 1, torch.float16)
    for name, kw in (("tiles", dict(impl="tiles", skip_empty=0)), ("tiles-skip", dict(impl="tiles", skip_empty=1)),
                     ("split", dict(impl="split"))):  # fmt: skip

        def fn() -> list[torch.Tensor]:
            outs = []
            for i in range(layers):
                q = rope_and_cache(qkv, cos[:, 0], sin[:, 0], slots, kv[i, 0], kv[i, 1], h)
                outs.append(pd.paged_decode(q, kv[i, 0], kv[i, 1], tables, lens, d**-0.5, **kw))  # noqa: B023
            return outs

        with pdl.scope(1):
            fn()
            torch.cuda.synchronize()
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                fn()
        torch.cuda.nvtx.range_push(f"replay-{name}")
        g.replay()
        torch.cuda.synchronize()
        torch.cuda.nvtx.range_pop()
        print("ncu target", name, flush=True)


# step variants: name -> (SKIP_EMPTY, fixed tiles config at the batch's bucket or None = autotune)
STEP_VARIANTS: dict[str, tuple[int, tuple[int, int, int] | None]] = {
    "old": (0, None), "skip": (1, None), "c16": (0, (16, 4, 2)), "c16s": (1, (16, 4, 2)), "c32s": (1, (32, 4, 2)),
    "c32": (0, (32, 4, 2))}  # fmt: skip


def step(args, res: dict, dev: torch.device) -> None:  # type: ignore[no-untyped-def]
    from bench_decode import copy_bandwidth
    from random_model import SHAPES, kv_bytes, make_runner, weight_bytes, write_config
    from s9b_profile import replay_ms
    from steps import BLOCK, make_step, timed_all

    cfg_dir = write_config(SHAPES["7b"], Path(tempfile.mkdtemp()) / "7b")
    runner = make_runner(cfg_dir, "int4", dev, torch.float16, 1024, BLOCK, 4, "triton", True)
    c = runner.config
    bw = copy_bandwidth(dev)
    res["copy_GBps"] = bw / 1e9
    name = torch.cuda.get_device_name()
    dg_sets: dict = {}
    rows = res.setdefault("step", [])
    for item in args.step_plan.split(";"):  # "batch@context:variant,variant"
        head, _, names = item.partition(":")
        b, ctx = (int(v) for v in head.split("@"))
        variants = names.split(",")
        st = make_step(b, 1, ctx, [-1] * b, c.vocab_size, runner.num_kv_blocks)
        nbytes = weight_bytes(runner.weights, b) + kv_bytes(c, b * ctx, 2)
        wall: dict = {v: [] for v in variants}
        rmed: dict = {v: [] for v in variants}
        dev_ms: dict = {v: [] for v in variants}
        for _ in range(args.rounds):
            for v in variants:
                skip, cfg = STEP_VARIANTS[v]
                pd.SKIP_EMPTY = skip
                pd.TILES_FIXED = {name: {1 << (b - 1).bit_length(): cfg}} if cfg else {}
                if runner._graphs is not None:
                    runner._graphs._graphs = dg_sets.setdefault(v, {})
                t = timed_all(lambda: runner.execute(st), dev, 2, args.reps)  # noqa: B023
                dg = runner._graphs
                dg_sets[v] = dg._graphs
                wall[v] += t
                rmed[v].append(round(sorted(t)[len(t) // 2] * 1e3, 4))
                key = min((k for k in dg._graphs if k[0] >= b), key=lambda k: k[0])
                dev_ms[v].append(round(replay_ms(dg._graphs[key].graph, args.replays), 4))
        base = variants[0]
        for v in variants:
            rows.append(dict(batch=b, context=ctx, variant=v, skip_empty=STEP_VARIANTS[v][0],
                             tiles_config=STEP_VARIANTS[v][1], step_ms=statistics.median(wall[v]) * 1e3,
                             device_ms=statistics.median(dev_ms[v]), roofline_ms=nbytes / bw * 1e3,
                             round_ms=rmed[v], round_device_ms=dev_ms[v],
                             tuned_picks={str(k): str(c) for k, c in pd._decode_tuned.cache.items()}))  # fmt: skip
            o = next(r for r in rows[::-1] if r["variant"] == base and r["batch"] == b and r["context"] == ctx)
            n = rows[-1]
            wins = sum(x < y for x, y in zip(rmed[v], rmed[base], strict=True))
            dwins = sum(x < y for x, y in zip(dev_ms[v], dev_ms[base], strict=True))
            print(f"| {b} | {ctx} | {v} | {n['step_ms']:.3f} | {n['step_ms'] / o['step_ms']:.3f} | {wins}/{args.rounds} "
                  f"| {n['device_ms']:.4f} | {n['device_ms'] / o['device_ms']:.3f} | {dwins}/{args.rounds} | "
                  f"{n['roofline_ms']:.3f} |", flush=True)  # fmt: skip
        (args.out / "s10-attn.json").write_text(json.dumps(res, indent=1))
    pd.SKIP_EMPTY = None
    pd.TILES_FIXED = {}


def main() -> None:
    if sys.argv[1:2] == ["ncu-target"]:
        ncu_target()
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--stages", default="matrix,step")
    ap.add_argument("--contexts", default="512,1,2048,64")
    ap.add_argument("--step-plan", default="1@512:old,skip;2@512:old,skip;4@512:old,skip",
                    help="batch@context:variants;... (STEP_VARIANTS; the first is the baseline)")  # fmt: skip
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--matrix-variants", default="", help="comma list of matrix variant names (default: all)")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--replays", type=int, default=10)
    args = ap.parse_args()
    args.contexts = [int(x) for x in args.contexts.split(",")]
    MATRIX_KEEP[:] = [v for v in args.matrix_variants.split(",") if v]
    args.out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda")
    path = args.out / "s10-attn.json"
    res: dict = json.loads(path.read_text()) if path.exists() else {}
    res.setdefault("date", time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
    res.update(device=torch.cuda.get_device_name(), torch=torch.__version__, command=" ".join(sys.argv))
    t0 = time.time()
    for stage in args.stages.split(","):
        t = time.time()
        {"matrix": matrix, "step": step}[stage](args, res, dev)
        res[f"{stage}_s"] = round(time.time() - t, 1)
        path.write_text(json.dumps(res, indent=1))
        print(f"stage {stage}: {res[f'{stage}_s']} s", flush=True)
    print(f"wall {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
