"""Engine decode/prefill benchmark on random weights: the runner's step (4-bit g128 via quant_matmul, or fp16)
with multi-LoRA adapters of several ranks on q/k/v/o or all linears, against the roofline (bytes a step must
read: weights + active adapters + KV cache, over the measured copy bandwidth) and transformers + PEFT.

A decode step = B sequences, each with `--context` cached tokens, one new token each (KV contents are
whatever the cache holds: speed does not depend on values); time = median wall time of runner.execute
(which includes its CPU work and the logits' copy to the host). Writes decode-<date>.{json,md} to --out.
H200 (two calls keep each under the device tool's 10 minutes; the goals are judged in the int4 file):
  PYTHONPATH=workers python3 bench/engine/bench_decode.py --out DIR --quants int4 --tag int4
  PYTHONPATH=workers python3 bench/engine/bench_decode.py --out DIR --quants fp16 --peft '' --tag fp16
CPU smoke test: TRITON_INTERPRET=1 PYTHONPATH=workers python3 bench/engine/bench_decode.py --out DIR --tiny
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
from inlaid_worker.model.step_input import StepInput  # noqa: E402
from peft_baseline import peft_point  # noqa: E402
from random_model import LLAMA2_7B, TARGETS, TINY, adapter_bytes, kv_bytes, make_runner, random_adapter, weight_bytes  # noqa: E402,E501
from report import to_markdown  # noqa: E402

BLOCK = 16


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


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


def timed(fn, device: torch.device, warmup: int, reps: int) -> float:  # type: ignore[no-untyped-def]
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def make_step(batch: int, query: int, context: int, slots: list[int], vocab: int) -> StepInput:
    """`batch` sequences, each with `query` new tokens ending at position context-1; disjoint block tables."""
    blocks = -(-context // BLOCK)
    tables = torch.arange(batch * blocks).reshape(batch, blocks)
    pos = torch.arange(context - query, context).repeat(batch)
    seq = torch.arange(batch).repeat_interleave(query)
    slot_map = tables[seq, pos // BLOCK] * BLOCK + pos % BLOCK
    ids = torch.tensor(slots, dtype=torch.int64).repeat_interleave(query)
    return StepInput(
        token_ids=torch.randint(3, vocab, (batch * query,)), positions=pos, adapter_ids=ids, slot_mapping=slot_map,
        query_start_loc=torch.arange(batch + 1) * query, context_lens=torch.full((batch,), context),
        block_tables=tables, logits_indices=torch.arange(1, batch + 1) * query - 1,
    )  # fmt: skip


def load_adapters(runner, rank: int, targets: str, count: int) -> list[int]:  # type: ignore[no-untyped-def]
    """Replace the runner's adapters with `count` random ones; returns their slots."""
    for name in list(runner.adapter_slots):
        runner.remove_adapter(name)
    adapter = random_adapter(runner.config, rank, TARGETS[targets])
    return [runner.add_adapter(f"{targets}-r{rank}-{i}", adapter) for i in range(count)]


def decode_plan(args: argparse.Namespace) -> list[tuple[int, str, int, int]]:
    """(rank, targets, batch, distinct); rank 0 = base only. Grouped by adapter config (loaded once each)."""
    plan = [(0, "-", b, 0) for b in args.batches]
    for rank in args.ranks:
        for targets in args.targets:
            plan += [(rank, targets, args.lora_batch, d) for d in args.distinct if d <= args.lora_batch]
    plan += [(16, "qkvo", b, d) for b in args.batches for d in args.distinct if d <= b and b != args.lora_batch]
    return sorted(set(plan), key=lambda p: (p[0], p[1], p[2], p[3]))


def bench_quant(args: argparse.Namespace, quant: str, meta: dict, log) -> None:  # type: ignore[no-untyped-def]
    dev, dtype = args.device_, args.dtype_
    max_b = max(args.batches + [args.lora_batch, args.prefill_seqs])
    ctx = max(args.context, args.prompt)
    runner = make_runner(args.config_dir, quant, dev, dtype, max_b * -(-ctx // BLOCK), BLOCK,
                         max(args.distinct), args.backend)  # fmt: skip
    c, el = runner.config, torch.empty((), dtype=dtype).element_size()
    loaded, slots = None, []
    for rank, targets, batch, distinct in decode_plan(args):
        if distinct and loaded != (rank, targets):
            slots, loaded = load_adapters(runner, rank, targets, max(args.distinct)), (rank, targets)
        ids = [slots[i % distinct] if distinct else -1 for i in range(batch)]
        step = make_step(batch, 1, args.context, ids, c.vocab_size)
        t = timed(lambda: runner.execute(step), dev, args.warmup, args.reps)
        nbytes = weight_bytes(runner.weights, batch) + kv_bytes(c, batch * args.context, el)
        nbytes += distinct * adapter_bytes(c, rank, TARGETS.get(targets, ()), el)
        log(dict(kind="decode", quant=quant, backend=runner.backend, rank=rank, targets=targets, batch=batch,
                 distinct=distinct, step_ms=t * 1e3, roofline_ms=nbytes / meta["copy_GBps"] / 1e6,
                 bytes=nbytes, tokens_per_s=batch / t))  # fmt: skip
    for rank, distinct in ((0, 0), (16, min(8, args.prefill_seqs, max(args.distinct)))):
        if distinct:
            slots = load_adapters(runner, rank, "qkvo", distinct)
        ids = [slots[i % distinct] if distinct else -1 for i in range(args.prefill_seqs)]
        step = make_step(args.prefill_seqs, args.prompt, args.prompt, ids, c.vocab_size)
        t = timed(lambda: runner.execute(step), dev, 1, max(1, args.reps // 2))
        tokens = args.prefill_seqs * args.prompt
        log(dict(kind="prefill", quant=quant, backend=runner.backend, rank=rank, targets="qkvo" if rank else "-",
                 batch=args.prefill_seqs, distinct=distinct, tokens=tokens, step_ms=t * 1e3,
                 tokens_per_s=tokens / t))  # fmt: skip
    del runner
    if dev.type == "cuda":
        torch.cuda.empty_cache()


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
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=10)
    if "--tiny" in sys.argv:  # a small grid; flags given explicitly still win
        ap.set_defaults(batches=[1, 4, 8], distinct=[1, 2, 4], ranks=[4, 8], lora_batch=8, context=32, prompt=32,
                        prefill_seqs=2, peft="1:0,4:2", peft_new_tokens=4, warmup=1, reps=3)  # fmt: skip
    args = ap.parse_args()
    args.device_ = torch.device(args.device)
    args.dtype_ = torch.float16 if args.device_.type == "cuda" else torch.float32
    args.targets = args.targets.split(",")
    args.shape = TINY if args.tiny else LLAMA2_7B
    needs_triton = "int4" in args.quants or (args.backend or ("triton" if args.device_.type == "cuda" else "")) == "triton"
    if args.device_.type == "cpu" and needs_triton and os.environ.get("TRITON_INTERPRET") != "1":
        ap.error("on the CPU, int4 weights and the triton backend need TRITON_INTERPRET=1")
    return args


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
    rows: list[dict] = []

    def save() -> None:  # after every row: a run cut short still leaves its results
        stem = args.out / f"decode-{date}{'-' + args.tag if args.tag else ''}"
        stem.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
        stem.with_suffix(".md").write_text(to_markdown(meta, rows))

    def log(row: dict) -> None:
        rows.append(row)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
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
                       args.dtype_, max(1, args.reps // 3)))  # fmt: skip
    meta["wall_s"] = time.time() - t0
    save()
    print(to_markdown(meta, rows))


if __name__ == "__main__":
    main()
