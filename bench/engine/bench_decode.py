"""Engine decode/prefill benchmark on random weights: the runner's step (4-bit g128 via quant_matmul, or fp16)
with multi-LoRA adapters of several ranks on q/k/v/o or all linears, against the roofline (bytes a step must
read: weights + active adapters + KV cache, over the measured copy bandwidth) and transformers + PEFT.

A decode step = B sequences, each with `--context` cached tokens, one new token each (KV contents are
whatever the cache holds: speed does not depend on values); time = median wall time of runner.execute
(which includes its CPU work and the logits' copy to the host; on CUDA the triton backend replays a CUDA graph
per batch bucket). The first quant also times the scheduling simulator's grid (cost_points.py) into the JSON's
`cost_points`; --profile writes torch.profiler tables of two decode steps. Writes decode-<date>[-tag].{json,md}.
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
CPU smoke test: TRITON_INTERPRET=1 PYTHONPATH=workers python3 bench/engine/bench_decode.py --out DIR --tiny
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
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cost_points import measure_cost_points  # noqa: E402
from peft_baseline import peft_point  # noqa: E402
from profile_step import kernel_times, profile_step  # noqa: E402
from random_model import LLAMA2_7B, TARGETS, TINY, adapter_bytes, kv_bytes, make_runner, weight_bytes  # noqa: E402
from report import to_markdown  # noqa: E402
from steps import BLOCK, load_adapters, make_step, sync, timed  # noqa: E402


def copy_bandwidth(device: torch.device) -> float:
    """Bytes/s of a large device-to-device copy (bytes read + written), median of 10."""
    n = 2**28 if device.type == "cuda" else 2**24
    src, dst = torch.randn(n, device=device), torch.empty(n, device=device)
    times = []
    for _ in range(13):
        sync(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n * 4 / sorted(times[3:])[5]


def decode_plan(args: argparse.Namespace) -> list[tuple[int, str, int, int]]:
    """(rank, targets, batch, distinct); rank 0 = base only. Grouped by adapter config (loaded once each)."""
    plan = [(0, "-", b, 0) for b in args.batches]
    for rank in args.ranks:
        for targets in args.targets:
            plan += [(rank, targets, args.lora_batch, d) for d in args.distinct if d <= args.lora_batch]
    if args.per_batch_lora:
        plan += [(16, "qkvo", b, d) for b in args.batches for d in args.distinct if d <= b and b != args.lora_batch]
    return sorted(set(plan), key=lambda p: (p[0], p[1], p[2], p[3]))


def new_runner(args: argparse.Namespace, quant: str):  # type: ignore[no-untyped-def]
    """A random-weight runner and its KV pool size (blocks; block tables wrap around it)."""
    max_b = max(args.batches + [args.lora_batch, args.prefill_seqs])
    ctx = max(args.context, args.prompt)
    c0, el = args.shape, torch.empty((), dtype=args.dtype_).element_size()
    per_block = c0.layers * 2 * BLOCK * c0.kv_heads * (c0.hidden // c0.heads) * el
    pool = int(min(max_b * -(-ctx // BLOCK) * 4, max(64, args.kv_gb * 2**30 // per_block)))
    runner = make_runner(args.config_dir, quant, args.device_, args.dtype_, pool, BLOCK, max(args.distinct + [32]),
                         args.backend, not args.no_graphs)  # fmt: skip
    return runner, pool


def release(device: torch.device) -> None:
    """Give cached device memory back (call after dropping the last reference to a runner)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def bench_quant(args: argparse.Namespace, quant: str, meta: dict, log) -> None:  # type: ignore[no-untyped-def]
    dev, dtype = args.device_, args.dtype_
    el = torch.empty((), dtype=dtype).element_size()
    runner, pool = new_runner(args, quant)
    meta.setdefault("kv_pool_blocks", {})[quant] = pool
    c = runner.config
    fusions = args.fusions or [runner.decode_fusion]
    meta["default_fusion"] = runner.decode_fusion
    for fusion in fusions:
        if fusion is not None:
            runner.decode_fusion = fusion  # drops the graphs of the previous fusion
        tag = f"-{fusion}" if args.fusions else ""
        if args.profile:
            last = ("b32-base", 32, 0) if args.fusions else ("b32-32lora", 32, 32)
            points = (("b1-base", 1, 0), last)
            for name, b, d in points:
                slots = load_adapters(runner, 16, TARGETS["qkvo"], d, "prof") if d else []
                ids = [slots[i % d] if d else -1 for i in range(b)]
                step = make_step(b, 1, args.context, ids, c.vocab_size, pool)
                prof, text = profile_step(runner, step, f"{quant}-{name}{tag}", args.out)
                meta.setdefault("profiles", {})[f"{quant}-{name}{tag}"] = kernel_times(prof, 3)
                print(text, flush=True)
        loaded, slots = None, []
        for rank, targets, batch, distinct in decode_plan(args):
            if distinct and loaded != (rank, targets):
                slots = load_adapters(runner, rank, TARGETS[targets], max(args.distinct), targets)
                loaded = (rank, targets)
            ids = [slots[i % distinct] if distinct else -1 for i in range(batch)]
            step = make_step(batch, 1, args.context, ids, c.vocab_size, pool)
            t = timed(lambda: runner.execute(step), dev, args.warmup, args.reps)
            nbytes = weight_bytes(runner.weights, batch) + kv_bytes(c, batch * args.context, el)
            nbytes += distinct * adapter_bytes(c, rank, TARGETS.get(targets, ()), el)
            log(dict(kind="decode", quant=quant, backend=runner.backend, rank=rank, targets=targets, batch=batch,
                     distinct=distinct, step_ms=t * 1e3, roofline_ms=nbytes / meta["copy_GBps"] / 1e6,
                     bytes=nbytes, tokens_per_s=batch / t, fusion=runner.decode_fusion or "eager"))  # fmt: skip
    if args.fusions and meta["default_fusion"] is not None:
        runner.decode_fusion = meta["default_fusion"]
    for rank, distinct in ((0, 0), (16, min(8, args.prefill_seqs, max(args.distinct)))):
        if distinct:
            slots = load_adapters(runner, rank, TARGETS["qkvo"], distinct, "prefill")
        ids = [slots[i % distinct] if distinct else -1 for i in range(args.prefill_seqs)]
        step = make_step(args.prefill_seqs, args.prompt, args.prompt, ids, c.vocab_size, pool)
        t = timed(lambda: runner.execute(step), dev, 1, max(1, args.reps // 2))
        tokens = args.prefill_seqs * args.prompt
        log(dict(kind="prefill", quant=quant, backend=runner.backend, rank=rank, targets="qkvo" if rank else "-",
                 batch=args.prefill_seqs, distinct=distinct, tokens=tokens, step_ms=t * 1e3,
                 tokens_per_s=tokens / t))  # fmt: skip
    meta.setdefault("graph_captures", {})[quant] = runner.graph_captures
    del runner
    release(dev)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ints = lambda s: [int(v) for v in s.split(",")]  # noqa: E731
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tiny", action="store_true", help="tiny random Llama shape and a small grid (CPU check)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--backend", default=None, help="runner backend: torch | triton (default: by device)")
    ap.add_argument("--quants", default="int4,fp16")
    ap.add_argument("--batches", type=ints, default=[1, 4, 16, 32, 64, 128, 256])
    ap.add_argument("--distinct", type=ints, default=[1, 8, 32, 64])
    ap.add_argument("--ranks", type=ints, default=[8, 16, 32, 64])
    ap.add_argument("--targets", default="qkvo,all")
    ap.add_argument("--lora-batch", type=int, default=32, help="batch of the rank x targets sweep")
    ap.add_argument("--context", type=int, default=512, help="cached tokens per sequence at decode")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--prefill-seqs", type=int, default=4)
    ap.add_argument("--peft", default="1:0,1:1,32:0,32:8", help="batch:distinct points for transformers+PEFT ('' = none)")
    ap.add_argument("--peft-new-tokens", type=int, default=16)
    ap.add_argument("--tag", default="", help="suffix of the output files (decode-<date>[-tag].{json,md})")
    ap.add_argument("--kv-gb", type=float, default=40.0, help="KV pool size; block tables wrap around it")
    ap.add_argument("--no-graphs", action="store_true", help="eager decode steps (no CUDA graphs)")
    ap.add_argument("--cost-points", type=int, default=1, help="1: time the simulator's cost grid (first quant)")
    ap.add_argument("--profile", action="store_true", help="torch.profiler tables of two decode steps")
    ap.add_argument("--fusions", default="", help="decode fusions to compare, e.g. none,merge,rope ('' = default)")
    ap.add_argument("--per-batch-lora", type=int, default=1, help="1: rank-16 q/k/v/o adapters at every batch too")
    ap.add_argument("--peft-reps", type=int, default=0, help="timed generate() calls per PEFT point (0: reps // 3)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=10)
    if "--tiny" in sys.argv:  # a small grid; flags given explicitly still win
        ap.set_defaults(batches=[1, 4, 8], distinct=[1, 2, 4], ranks=[4, 8], lora_batch=8, context=32, prompt=32,
                        prefill_seqs=2, peft="1:0,4:2", peft_new_tokens=4, warmup=1, reps=3)  # fmt: skip
    args = ap.parse_args()
    args.device_ = torch.device(args.device)
    args.dtype_ = torch.float16 if args.device_.type == "cuda" else torch.float32
    args.targets = args.targets.split(",")
    args.fusions = [f for f in args.fusions.split(",") if f]
    args.shape = TINY if args.tiny else LLAMA2_7B
    needs_triton = "int4" in args.quants or (args.backend or ("triton" if args.device_.type == "cuda" else "")) == "triton"
    if args.device_.type == "cpu" and needs_triton and os.environ.get("TRITON_INTERPRET") != "1":
        ap.error("on the CPU, int4 weights and the triton backend need TRITON_INTERPRET=1")
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
                torch=torch.__version__, shape=vars(args.shape), dtype=str(args.dtype_), context=args.context,
                interpreted=os.environ.get("TRITON_INTERPRET") == "1")  # fmt: skip
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

    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        from random_model import write_config

        args.config_dir = write_config(args.shape, Path(tmp) / "config")
        for quant in args.quants.split(","):
            bench_quant(args, quant, meta, log)
    for point in filter(None, args.peft.split(",")):
        batch, distinct = (int(v) for v in point.split(":"))
        log(peft_point(args.shape, batch, distinct, 16, "qkvo", args.context, args.peft_new_tokens, dev,
                       args.dtype_, args.peft_reps or max(1, args.reps // 3)))  # fmt: skip
    if args.cost_points:  # last: the goal rows and PEFT come first should the call run out of time
        with tempfile.TemporaryDirectory() as tmp:
            from random_model import write_config

            args.config_dir = write_config(args.shape, Path(tmp) / "config")
            runner, pool = new_runner(args, args.quants.split(",")[0])
            cost += measure_cost_points(runner, pool, dev, 2, max(3, args.reps // 2), args.tiny, lambda r: log(r, False))
            meta["cost_points_quant"] = args.quants.split(",")[0]
            del runner
            release(dev)
    meta["wall_s"] = time.time() - t0
    meta["tuned"] = tuned_picks()
    save()
    print(to_markdown(meta, rows, cost))


if __name__ == "__main__":
    main()
