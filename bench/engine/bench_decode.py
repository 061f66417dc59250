"""Engine decode/prefill benchmark on random weights: the runner's step (4-/3-bit g128 via quant_matmul, or fp16)
with multi-LoRA adapters of several ranks on q/k/v/o or all linears, against the roofline (bytes a step must
read: weights as stored (packed words, zeros, scales) + active adapters + KV cache, over the measured copy
bandwidth) and transformers + PEFT, for one or more Llama shapes (--shapes 7b,13b) and weight kinds
(--quants int4,int3,fp16).

A decode step = B sequences, each with `--context` cached tokens, one new token each (KV contents are
whatever the cache holds: speed does not depend on values); time = median wall time of runner.execute
(which includes its CPU work and the logits' copy to the host; on CUDA the triton backend replays a CUDA graph
per batch bucket). Order (plan.py): for every shape x quant, the base-only batches, the rank-16 q/k/v/o points at
--lora-batch (32 adapters first) and prefill; then PEFT (--peft points, on --peft-shapes only); then the rest
of the grid per shape x quant; then the scheduling simulator's grid (cost_points.py, first shape and quant) into
the JSON's `cost_points`. --max-seconds S starts no measurement after S s (rows so far are saved after each
row; the markdown says how many were skipped). --profile writes torch.profiler tables of two decode steps.
Writes decode-<date>[-tag].{json,md}; each row carries its shape and `t_s` (seconds since the start).
Packed shapes missing from the shipped tuner table (kernels/tuned/; 7B int4 only) are tuned on first use.
H200, the 2026-11-29 run (one device call, the two commands back to back):
  PYTHONPATH=workers python3 bench/engine/bench_decode.py --out DIR --quants int4 --tag int4 --per-batch-lora 0 \
      --ranks 8,16,64 --distinct 8,32 --peft 32:8 --peft-reps 1 --reps 6 --warmup 2
  PYTHONPATH=workers python3 bench/engine/bench_decode.py --out DIR --quants fp16 --tag fp16 --batches 1,32 \
      --ranks 16 --targets qkvo --distinct 8,32 --peft '' --cost-points 0 --reps 6 --warmup 2
--fusions none,merge,rope runs the decode grid once per decode fusion (llama_fast.DECODE_FUSIONS) on the same
runner (switching drops its graphs), so before/after land in one run; with --profile, per fusion. H200, the
2026-11-29 fusion run (bench/results/decode-2026-11-29-fusion.md; bench_attention.py ran after it):
  PYTHONPATH=workers python3 bench/engine/bench_decode.py --out DIR --quants int4 --tag fusion --batches 1,16,32 \
      --fusions none,rope,merge --ranks 16 --targets qkvo --distinct 64 --lora-batch 32 --per-batch-lora 0 \
      --peft '' --cost-points 0 --reps 6 --warmup 2 --prefill-seqs 2 --prompt 256 --profile
--fusion-rounds R alternates the --fusions round by round at every point instead (rows carry `round_ms`).
--pdl 0,1,2 times every decode point with the decode graphs' Programmatic Dependent Launch mode (kernels.pdl) off,
on (dependents launch at kernel start) and 2 (after the main loop), alternating the modes round by round on the
same runner (the graphs are keyed by mode, so both stay captured); rows carry `pdl`; with --profile, batch 1 per mode.
Only buckets inside model.decode_graphs' PDL policy get PDL (env INLAID_PDL_MAX_BUCKET and INLAID_PDL_LORA=0/1
override it). H200 runs of 2026-11-30 (bench/results/decode-2026-11-30-pdl.md, -pdl2.md): bench/engine/pdl_h200.sh,
pdl2_h200.sh. --lora-at-batches D adds rank-16 q/k/v/o points with min(batch, D) adapters at every --batches.
--prefill-graphs 0,1 times steps with prefill rows with the runner's prefill CUDA graphs off, then on (a lone
128/512-token chunk and 32 decode rows + a 128-token chunk, base and rank-16; prefill_graph_rows.py).
CPU smoke test: TRITON_INTERPRET=1 PYTHONPATH=workers python3 bench/engine/bench_decode.py --out DIR --tiny
(--shapes tiny,tiny-mha --quants int4,int3,fp16 for both shapes and every weight kind; test_bench_decode.py)
(add --backend triton to run the fused forward under the interpreter; slow: minutes)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cost_points import measure_cost_points  # noqa: E402
from peft_baseline import peft_point  # noqa: E402
from plan import Budget, Point, decode_points, phases  # noqa: E402
from prefill_graph_rows import cases, prefill_graph_rows  # noqa: E402
from profile_step import kernel_times, profile_step  # noqa: E402
from random_model import QUANT_BITS, SHAPES, TARGETS, adapter_bytes, kv_bytes, make_runner, weight_bytes, write_config  # noqa: E402
from report import to_markdown  # noqa: E402
from steps import BLOCK, load_adapters, make_step, timed, timed_all  # noqa: E402


def copy_bandwidth(device: torch.device) -> float:
    """Bytes/s of a large device-to-device copy (bytes read + written), median of 10."""
    n = 2**28 if device.type == "cuda" else 2**24
    src, dst = torch.randn(n, device=device), torch.empty(n, device=device)
    times = timed_all(lambda: dst.copy_(src), device, 0, 13)
    return 2 * n * 4 / sorted(times[3:])[5]


def new_runner(args: argparse.Namespace, shape: str, quant: str):  # type: ignore[no-untyped-def]
    """A random-weight runner of `shape` and its KV pool size (blocks; block tables wrap around it)."""
    max_b = max(args.batches + [args.lora_batch, args.prefill_seqs])
    ctx = max(args.context, args.prompt)
    c0, el = SHAPES[shape], torch.empty((), dtype=args.dtype_).element_size()
    per_block = c0.layers * 2 * BLOCK * c0.kv_heads * (c0.hidden // c0.heads) * el
    pool = int(min(max_b * -(-ctx // BLOCK) * 4, max(64, args.kv_gb * 2**30 // per_block)))
    runner = make_runner(args.config_dirs[shape], quant, args.device_, args.dtype_, pool, BLOCK,
                         max(args.distinct + [32]), args.backend, not args.no_graphs)  # fmt: skip
    return runner, pool


def release(device: torch.device) -> None:
    """Give cached device memory back (call after dropping the last reference to a runner)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def profile_points(args: argparse.Namespace, runner, pool: int, name: str, meta: dict) -> None:  # type: ignore[no-untyped-def]
    """torch.profiler tables of two decode steps (batch 1 base, and batch 32 base or with 32 adapters); with --pdl,
    batch 1 per PDL mode."""
    last = ("b32-base", 32, 0) if args.fusions else ("b32-32lora", 32, 32)
    plan = (("b1-base", 1, 0), last)
    if args.pdl:
        plan = tuple((f"b1-base-pdl{m}", 1, 0, m) for m in args.pdl)  # type: ignore[assignment]
    for point, b, d, *mode in plan:
        if mode:
            runner.decode_pdl = mode[0]
        slots = load_adapters(runner, 16, TARGETS["qkvo"], d, "prof") if d else []
        ids = [slots[i % d] if d else -1 for i in range(b)]
        step = make_step(b, 1, args.context, ids, runner.config.vocab_size, pool)
        prof, text = profile_step(runner, step, f"{name}-{point}", args.out)
        meta.setdefault("profiles", {})[f"{name}-{point}"] = kernel_times(prof, 3)
        print(text, flush=True)


def decode_rows(args: argparse.Namespace, runner, pool: int, shape: str, quant: str, points: list[Point],
                meta: dict, log, budget: Budget) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    c, el = runner.config, torch.empty((), dtype=args.dtype_).element_size()
    loaded, slots = None, []
    for rank, targets, batch, distinct in points:
        if not budget.allows():
            continue
        if distinct and loaded != (rank, targets):  # as many adapters as this config's points use
            count = max(p[3] for p in points if p[:2] == (rank, targets))
            slots = load_adapters(runner, rank, TARGETS[targets], count, targets)
            loaded = (rank, targets)
        ids = [slots[i % distinct] if distinct else -1 for i in range(batch)]
        step = make_step(batch, 1, args.context, ids, c.vocab_size, pool)
        nbytes = weight_bytes(runner.weights, batch) + kv_bytes(c, batch * args.context, el)
        nbytes += distinct * adapter_bytes(c, rank, TARGETS.get(targets, ()), el)
        row = dict(kind="decode", shape=shape, quant=quant, backend=runner.backend, rank=rank, targets=targets,
                   batch=batch, distinct=distinct, roofline_ms=nbytes / meta["copy_GBps"] / 1e6, bytes=nbytes,
                   fusion=runner.decode_fusion or "eager")  # fmt: skip
        if alternate_fusions(args):
            for fusion, t, spread in alternating_times(runner, step, args, "decode_fusion", args.fusions,
                                                       args.fusion_rounds):  # fmt: skip
                log(dict(row, fusion=fusion, step_ms=t * 1e3, tokens_per_s=batch / t, round_ms=spread,
                         t_s=budget.elapsed()))  # fmt: skip
            continue
        if not args.pdl:
            t = timed(lambda: runner.execute(step), args.device_, args.warmup, args.reps)
            log(dict(row, step_ms=t * 1e3, tokens_per_s=batch / t, t_s=budget.elapsed()))
            continue
        for mode, t, spread in alternating_times(runner, step, args, "decode_pdl", args.pdl, args.pdl_rounds):
            log(dict(row, pdl=mode, step_ms=t * 1e3, tokens_per_s=batch / t, round_ms=spread, t_s=budget.elapsed()))


def alternate_fusions(args: argparse.Namespace) -> bool:
    """--fusion-rounds R > 0 with several --fusions: the fusions alternate round by round at every decode point."""
    return args.fusion_rounds > 0 and len(args.fusions) > 1


def alternating_times(runner, step, args: argparse.Namespace, attr: str, values: list, rounds: int) -> list[tuple]:  # type: ignore[no-untyped-def]  # noqa: E501
    """(value, median s, per-round medians in ms) of one step per value of the runner's `attr` (decode_pdl: PDL
    modes; decode_fusion: fusions), the values alternating over `rounds` rounds of --reps timed steps (after
    --warmup untimed ones per value and round; the first round also captures each value's graph: the decode graphs
    are keyed by both)."""
    per: dict = {v: [] for v in values}
    medians: dict = {v: [] for v in values}
    for _ in range(rounds):
        for v in values:
            setattr(runner, attr, v)
            times = timed_all(lambda: runner.execute(step), args.device_, args.warmup, args.reps)
            per[v] += times
            medians[v].append(round(sorted(times)[len(times) // 2] * 1e3, 4))
    return [(v, sorted(per[v])[len(per[v]) // 2], medians[v]) for v in values]


def prefill_rows(args: argparse.Namespace, runner, pool: int, shape: str, quant: str, log, budget: Budget) -> None:  # type: ignore[no-untyped-def]  # noqa: E501
    """Prefill tokens/s: `--prefill-seqs` prompts of `--prompt` tokens, base only and with rank-16 adapters
    (none with --prefill-seqs 0)."""
    if args.prefill_seqs <= 0:
        return
    for rank, distinct in ((0, 0), (16, min(8, args.prefill_seqs, max(args.distinct)))):
        if not budget.allows():
            continue
        slots = load_adapters(runner, rank, TARGETS["qkvo"], distinct, "prefill") if distinct else []
        ids = [slots[i % distinct] if distinct else -1 for i in range(args.prefill_seqs)]
        step = make_step(args.prefill_seqs, args.prompt, args.prompt, ids, runner.config.vocab_size, pool)
        t = timed(lambda: runner.execute(step), args.device_, min(1, args.warmup), max(1, args.reps // 2))
        tokens = args.prefill_seqs * args.prompt
        log(dict(kind="prefill", shape=shape, quant=quant, backend=runner.backend, rank=rank,
                 targets="qkvo" if rank else "-", batch=args.prefill_seqs, distinct=distinct, tokens=tokens,
                 step_ms=t * 1e3, tokens_per_s=tokens / t, t_s=budget.elapsed()))  # fmt: skip


def bench_runner(args: argparse.Namespace, shape: str, quant: str, points: list[Point], first: bool, meta: dict,
                 log, budget: Budget) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    """One runner of (shape, quant): `points` per decode fusion; in phase 1 (`first`) also profiles and prefill."""
    if not budget.allows(len(points) * max(1, len(args.fusions)) + 2 * first):
        return
    runner, pool = new_runner(args, shape, quant)
    name = f"{shape}-{quant}"
    meta.setdefault("kv_pool_blocks", {})[name] = pool
    default = runner.decode_fusion
    # the goals' rows: the default's, or "none"'s when a fusion comparison leaves the default ("auto") out
    meta["default_fusion"] = default if not args.fusions or default in args.fusions else "none"
    for fusion in [None] if alternate_fusions(args) else args.fusions or [default]:
        if fusion is not None:
            runner.decode_fusion = fusion  # the graphs are keyed by fusion
        if args.profile and first and fusion is not None:
            profile_points(args, runner, pool, name + (f"-{fusion}" if args.fusions else ""), meta)
        decode_rows(args, runner, pool, shape, quant, points, meta, log, budget)
    if args.fusions and default is not None:
        runner.decode_fusion = default
    if first:
        prefill_rows(args, runner, pool, shape, quant, log, budget)
    if first and args.prefill_graphs and runner.backend == "triton":
        slots = load_adapters(runner, 16, TARGETS["qkvo"], min(8, max(args.distinct)), "pg")
        steps = cases(args.prefill_graph_chunks, args.prefill_graph_decode, args.context, slots,
                      runner.config.vocab_size, pool)  # fmt: skip
        prefill_graph_rows(runner, steps, args.prefill_graphs, args.device_, args.warmup, args.reps,
                           lambda r: log(dict(r, t_s=budget.elapsed())), budget.allows, dict(shape=shape, quant=quant))  # fmt: skip
    captures = meta.setdefault("graph_captures", {})
    captures[name] = captures.get(name, 0) + runner.graph_captures
    del runner
    release(args.device_)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ints = lambda s: [int(v) for v in s.split(",")]  # noqa: E731
    names = lambda s: [v for v in s.split(",") if v]  # noqa: E731
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tiny", action="store_true", help="tiny random Llama shape and a small grid (CPU check)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--backend", default=None, help="runner backend: torch | triton (default: by device)")
    ap.add_argument("--shapes", type=names, default=["7b"], help=f"comma list of {', '.join(SHAPES)}")
    ap.add_argument("--quants", type=names, default=["int4", "fp16"], help="comma list of int4, int3, fp16")
    ap.add_argument("--batches", type=ints, default=[1, 4, 16, 32, 64, 128, 256])
    ap.add_argument("--distinct", type=ints, default=[1, 8, 32, 64])
    ap.add_argument("--ranks", type=ints, default=[8, 16, 32, 64])
    ap.add_argument("--targets", type=names, default=["qkvo", "all"])
    ap.add_argument("--lora-batch", type=int, default=32, help="batch of the rank x targets sweep")
    ap.add_argument("--context", type=int, default=512, help="cached tokens per sequence at decode")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--prefill-seqs", type=int, default=4)
    ap.add_argument("--peft", default="", help="batch:distinct points for transformers+PEFT, e.g. 32:8 ('' = none)")
    ap.add_argument("--peft-shapes", type=names, default=[], help="PEFT's shapes (default: the first of --shapes)")
    ap.add_argument("--peft-new-tokens", type=int, default=16)
    ap.add_argument("--tag", default="", help="suffix of the output files (decode-<date>[-tag].{json,md})")
    ap.add_argument("--kv-gb", type=float, default=40.0, help="KV pool size; block tables wrap around it")
    ap.add_argument("--no-graphs", action="store_true", help="eager decode steps (no CUDA graphs)")
    ap.add_argument("--cost-points", type=int, default=1, help="1: time the simulator's cost grid (first shape, quant)")
    ap.add_argument("--profile", action="store_true", help="torch.profiler tables of two decode steps")
    ap.add_argument("--fusions", type=names, default=[], help="decode fusions to compare, e.g. none,merge,rope")
    ap.add_argument("--fusion-rounds", type=int, default=0,
                    help="R > 0: the --fusions alternate over R rounds at every decode point (else one pass each)")  # fmt: skip
    ap.add_argument("--per-batch-lora", type=int, default=1, help="1: rank-16 q/k/v/o adapters at every batch too")
    ap.add_argument("--peft-reps", type=int, default=0, help="timed generate() calls per PEFT point (0: reps // 3)")
    ap.add_argument("--max-seconds", type=float, default=0.0, help="no new measurement after S seconds (0 = no limit)")
    ap.add_argument("--pdl", type=ints, default=[], help="PDL modes to compare (kernels.pdl), e.g. 0,1 or 0,1,2")
    ap.add_argument("--pdl-rounds", type=int, default=3, help="alternating rounds of the --pdl modes per point")
    ap.add_argument("--lora-at-batches", type=int, default=0,
                    help="D > 0: rank-16 q/k/v/o points at every --batches with min(batch, D) adapters (phase 1)")
    ap.add_argument("--prefill-graphs", type=ints, default=[], help="0,1: prefill/mixed steps, graphs off then on")
    ap.add_argument("--prefill-graph-chunks", type=ints, default=[128, 512], help="chunk sizes of --prefill-graphs")
    ap.add_argument("--prefill-graph-decode", type=int, default=32, help="decode rows of its mixed step")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=10)
    if "--tiny" in sys.argv:  # a small grid; flags given explicitly still win
        ap.set_defaults(shapes=["tiny"], batches=[1, 4, 8], distinct=[1, 2, 4], ranks=[4, 8], lora_batch=8, context=32,
                        prompt=32, prefill_seqs=2, peft_new_tokens=4, warmup=1, reps=3)  # fmt: skip
    args = ap.parse_args()
    for value, known, flag in ((args.shapes, SHAPES, "--shapes"), (args.quants, ("fp16", *QUANT_BITS), "--quants"),
                               (args.targets, TARGETS, "--targets"), (args.peft_shapes, SHAPES, "--peft-shapes")):  # fmt: skip
        if not set(value) <= set(known):
            ap.error(f"{flag}: unknown {sorted(set(value) - set(known))}; known: {', '.join(known)}")
    args.peft_shapes = args.peft_shapes or args.shapes[:1]
    args.device_ = torch.device(args.device)
    args.dtype_ = torch.float16 if args.device_.type == "cuda" else torch.float32
    packed = any(q in QUANT_BITS for q in args.quants)
    needs_triton = packed or (args.backend or ("triton" if args.device_.type == "cuda" else "")) == "triton"
    if args.device_.type == "cpu" and needs_triton and os.environ.get("TRITON_INTERPRET") != "1":
        ap.error("on the CPU, int4/int3 weights and the triton backend need TRITON_INTERPRET=1")
    return args


def tuned_picks() -> list[dict]:
    """The quant_matmul tuner's pick per (m bucket, N, K) of this run (bench/kernels/tuned_table.py reads these)."""
    from inlaid_worker.kernels import quant_matmul_config as qmc

    return [dict(dtype=str(key[1]).removeprefix("torch."), M=key[2], N=key[3], K=key[4], bits=key[5], group=key[6],
                 sym=key[7], act=key[8], pick=str(cfg)) for key, cfg in qmc._TUNED.items()]  # fmt: skip


def main() -> None:
    args = parse_args()
    torch.manual_seed(0)
    if args.device_.type == "cpu":
        torch.set_num_threads(1)
        if os.environ.get("TRITON_INTERPRET") == "1":
            sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "workers" / "tests" / "kernels"))
            from cases import _patch_interpreter_for_numpy  # Triton 3.6 interpreter vs numpy >= 2.4

            _patch_interpreter_for_numpy()
    args.out.mkdir(parents=True, exist_ok=True)
    dev = args.device_
    date = dt.date.today().isoformat()
    meta = dict(date=date, command="PYTHONPATH=workers python3 " + " ".join(sys.argv),
                device=torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({platform.processor() or platform.machine()})",
                torch=torch.__version__, shapes={s: vars(SHAPES[s]) for s in args.shapes}, dtype=str(args.dtype_),
                context=args.context, interpreted=os.environ.get("TRITON_INTERPRET") == "1",
                max_seconds=args.max_seconds)  # fmt: skip
    meta["copy_GBps"] = copy_bandwidth(dev) / 1e9
    meta["cuda_graphs"] = dev.type == "cuda" and not args.no_graphs and (args.backend or "triton") == "triton"
    rows: list[dict] = []
    cost: list[dict] = []

    def save() -> None:  # after every row: a run cut short still leaves its results
        stem = args.out / f"decode-{date}{'-' + args.tag if args.tag else ''}"
        stem.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows, cost_points=cost), indent=1))
        stem.with_suffix(".md").write_text(to_markdown(meta, rows, cost))

    def log(row: dict, keep: bool = True) -> None:
        if keep:
            rows.append(row)
        print(json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
        save()

    budget = Budget(args.max_seconds)
    first, rest = phases(decode_points(args.batches, args.ranks, args.targets, args.distinct, args.lora_batch,
                                       bool(args.per_batch_lora)), args.lora_batch)  # fmt: skip
    if args.lora_at_batches > 0:  # after the base batches, in phase 1, adapters loaded once (the largest count)
        extra = [(16, "qkvo", b, min(b, args.lora_at_batches)) for b in args.batches]
        first += [p for p in extra if p not in first]
        rest = [p for p in rest if p not in extra]
    runs = [(shape, quant) for shape in args.shapes for quant in args.quants]
    with tempfile.TemporaryDirectory() as tmp:
        args.config_dirs = {s: write_config(SHAPES[s], Path(tmp) / s) for s in args.shapes}
        for shape, quant in runs:  # phase 1: base batches, the key LoRA points, prefill
            bench_runner(args, shape, quant, first, True, meta, log, budget)
        for shape in (s for s in args.shapes if s in args.peft_shapes):
            for point in filter(None, args.peft.split(",")):
                if budget.allows():
                    batch, distinct = (int(v) for v in point.split(":"))
                    row = peft_point(SHAPES[shape], batch, distinct, 16, "qkvo", args.context, args.peft_new_tokens,
                                     dev, args.dtype_, args.peft_reps or max(1, args.reps // 3))  # fmt: skip
                    log(dict(row, shape=shape, t_s=budget.elapsed()))
        for shape, quant in runs if rest else []:  # phase 2: the rest of the grid
            bench_runner(args, shape, quant, rest, False, meta, log, budget)
        if args.cost_points and budget.allows():  # last: the goal rows and PEFT come first
            runner, pool = new_runner(args, args.shapes[0], args.quants[0])
            reps = max(3, args.reps // 2)
            cost += measure_cost_points(runner, pool, dev, 2, reps, args.tiny, lambda r: log(r, False))
            meta["cost_points_run"] = f"{args.shapes[0]}-{args.quants[0]}"
            del runner
            release(dev)
    meta["wall_s"] = budget.elapsed()
    meta["skipped"] = budget.skipped
    meta["tuned"] = tuned_picks()
    save()
    print(to_markdown(meta, rows, cost))


if __name__ == "__main__":
    main()
