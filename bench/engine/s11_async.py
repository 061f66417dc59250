"""Async scheduling (engine/async_step.py) against the synchronous engine step, on one runner in one process.

An LLMEngine on the random Llama-2-7B int4 runner (random_model.py, fp16, triton, CUDA graphs; INLAID_QMM_TUNED=1)
runs B greedy requests (ignore_eos) with --prompt-token prompts in decode, B = --batches. Per batch size, --rounds
rounds; each round runs the same B prompts once synchronously and once with async scheduling, in alternating order
(sync first in even rounds): prefill (synchronous, prefix-cache hits after the first round), --warm decode steps in
the mode, then --steps timed engine.step() calls (each launches one decode step in both modes: ms/step = wall /
steps, tokens/s = B * steps / wall; the table: the rounds' median ms/step and B / it). In async mode the time the host waits for a step's tokens (PendingCopy.read)
is summed too: wait ~ wall means the GPU set the pace. Then the requests are aborted and drained.

Exactness: every request's greedy tokens of the sync run and the async run of a round are compared (the common
prefix must be everything one of them produced: the async run's last token is still in flight at the abort), and
as a control each round's sync tokens with the first round's (the int4 split-K GEMVs add partial sums with float
atomics, quant_common.py: two synchronous runs need not be bit-identical; on a random model, whose logits are nearly
flat, one flipped argmax changes the rest of the stream). The prompts are prefilled once before the rounds so that
every timed run takes the same cached prefix (before this, round 0's first run prefilled cold, the second warm).

Runner floor: per batch size, --steps back-to-back execute_device calls of one decode step (no sampling, no engine;
the queue stays ahead of the GPU), then one sync: the GPU's time a step, what an engine step can at best reach.

  H200: source bench/kernels/device_env.sh; INLAID_QMM_TUNED=1 python3 bench/engine/s11_async.py --out $OUT
  CPU smoke: nice -n 10 .venv/bin/python bench/engine/s11_async.py --out /tmp/s11 --device cpu --shape tiny \
      --batches 1,2 --prompt 40 --steps 10 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import inlaid_worker.engine.async_step as async_step  # noqa: E402
from host_overhead import word_tokenizer  # noqa: E402
from inlaid_worker.engine.engine import EngineLimits, LLMEngine  # noqa: E402
from inlaid_worker.engine.sampling_params import SamplingParams  # noqa: E402
from inlaid_worker.engine.scheduler import ScheduledChunk  # noqa: E402
from inlaid_worker.engine.step_builder import build_step_input  # noqa: E402
from inlaid_worker.engine.tokenizer import PromptTokenizer  # noqa: E402
from llama_shapes import SHAPES  # noqa: E402
from random_model import make_runner, write_config  # noqa: E402
from steps import BLOCK  # noqa: E402

clock = time.perf_counter
WAIT = [0.0]  # seconds the async engine waited for a step's tokens (PendingCopy.read), reset per timed run


def timed_read(read: Any) -> Any:
    def wrapped(self: Any) -> Any:
        t0 = clock()
        try:
            return read(self)
        finally:
            WAIT[0] += clock() - t0

    return wrapped


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def one_run(engine: LLMEngine, prompts: list[list[int]], tag: str, async_on: bool, warm: int, steps: int,
            dev: torch.device) -> dict[str, Any]:  # fmt: skip
    params = SamplingParams(temperature=0, max_tokens=warm + steps + 64, ignore_eos=True)
    rids = [f"{tag}-{i}" for i in range(len(prompts))]
    toks: dict[str, list[int]] = {r: [] for r in rids}

    def step() -> None:
        for o in engine.step():
            toks[o.request_id] += o.token_ids

    engine.async_scheduling = False
    for rid, p in zip(rids, prompts, strict=True):
        engine.add_request(rid, p, params, "")
    while engine.scheduler.waiting or any(
        s.num_computed_tokens < len(s.prompt_token_ids) for s in engine.scheduler.running
    ):
        step()
    engine.async_scheduling = async_on
    for _ in range(warm):
        step()
    before = engine.num_async_steps
    sync(dev)
    WAIT[0] = 0.0
    t0 = clock()
    for _ in range(steps):
        step()
    wall = clock() - t0
    wait = WAIT[0]
    ahead = engine.num_async_steps - before
    for rid in rids:
        engine.abort_request(rid)
    engine.async_scheduling = False
    while engine.has_work:
        step()
    b = len(prompts)
    return {"mode": "async" if async_on else "sync", "ms_per_step": 1e3 * wall / steps,
            "tokens_per_s": b * steps / wall, "wait_ms_per_step": 1e3 * wait / steps,
            "steps_ahead": ahead, "tokens": [toks[r] for r in rids]}  # fmt: skip


def runner_floor(engine: LLMEngine, prompts: list[list[int]], steps: int, dev: torch.device) -> float:
    """ms a step of back-to-back execute_device calls of one B-row decode step (the GPU's pace)."""
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    engine.async_scheduling = False
    rids = [f"floor-{i}" for i in range(len(prompts))]
    for rid, p in zip(rids, prompts, strict=True):
        engine.add_request(rid, p, params, "")
    while not all(len(s.output_token_ids) >= 1 for s in engine.scheduler.running) or engine.scheduler.waiting:
        engine.step()
    for s in engine.scheduler.running:  # the decode position's block (schedule() would add it)
        engine.block_manager.allocate(s.block_table, s.num_computed_tokens + 1)
    chunks = [ScheduledChunk(s, s.num_computed_tokens, 1, True) for s in engine.scheduler.running]
    step = build_step_input(chunks, BLOCK, "cpu")
    runner: Any = engine.runner
    for _ in range(3):
        runner.execute_device(step)
    sync(dev)
    t0 = clock()
    for _ in range(steps):
        runner.execute_device(step)
    sync(dev)
    ms = 1e3 * (clock() - t0) / steps
    for rid in rids:
        engine.abort_request(rid)
    while engine.has_work:
        engine.step()
    return ms


def compare(a: list[list[int]], b: list[list[int]]) -> dict[str, Any]:
    """Per request: the common prefix must cover the shorter stream; the first differing index of each request
    (-1: none)."""
    first = []
    for x, y in zip(a, b, strict=True):
        n = min(len(x), len(y))
        first.append(next((i for i in range(n) if x[i] != y[i]), -1))
    return {"equal": all(f < 0 for f in first), "first_diff": first,
            "compared_tokens": sum(min(len(x), len(y)) for x, y in zip(a, b, strict=True))}  # fmt: skip


def warm_cache(engine: LLMEngine, prompts: list[list[int]]) -> None:
    """Prefills the prompts once (then aborts): every timed run after it takes the same cached prefix and prefills
    the same last block, so sync and async runs start from the same prefill numerics."""
    params = SamplingParams(temperature=0, max_tokens=2, ignore_eos=True)
    engine.async_scheduling = False
    for i, p in enumerate(prompts):
        engine.add_request(f"warm-{i}", p, params, "")
    while engine.has_work:
        engine.step()


def table(results: dict[str, Any]) -> str:
    lines = ["| batch | sync ms/step | async ms/step | speedup | sync tok/s | async tok/s | async wait ms/step "
             "| runner floor ms | steps ahead | sync = async tokens | sync = sync (control) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for b, r in results["batches"].items():
        s, a = r["sync_ms"], r["async_ms"]
        lines.append(f"| {b} | {s:.3f} | {a:.3f} | {s / a:.3f}x | {r['sync_tok_s']:.0f} | {r['async_tok_s']:.0f} | "
                     f"{r['async_wait_ms']:.3f} | {r['floor_ms']:.3f} | {r['steps_ahead']} | "
                     f"{r['equal']} ({r['compared_tokens']}) | {r.get('sync_vs_sync_equal', '-')} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shape", default="7b", choices=sorted(SHAPES))
    ap.add_argument("--quant", default="int4")
    ap.add_argument("--batches", default="1,4,16,32")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--warm", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--blocks", type=int, default=2048)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(args.device)
    async_step.PendingCopy.read = timed_read(async_step.PendingCopy.read)  # type: ignore[method-assign]
    cfg = write_config(SHAPES[args.shape], Path(tempfile.mkdtemp()) / args.shape)
    on_gpu = dev.type == "cuda"
    dtype = torch.float16 if on_gpu else torch.float32
    runner = make_runner(cfg, args.quant if on_gpu else "fp16", dev, dtype, args.blocks, BLOCK, 4,
                         "triton" if on_gpu else "torch", on_gpu)  # fmt: skip
    vocab = runner.config.vocab_size
    batches = [int(x) for x in args.batches.split(",")]
    limits = EngineLimits(BLOCK, args.blocks, max(batches), 2048, 4096, 0, True)
    engine = LLMEngine(runner, PromptTokenizer(word_tokenizer(vocab)), limits, base_model_id="base",
                       eos_token_ids=set())  # fmt: skip
    rng = np.random.default_rng(0)
    results: dict[str, Any] = {
        "command": " ".join(sys.argv), "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "device": torch.cuda.get_device_name() if on_gpu else "cpu", "torch": torch.__version__,
        "shape": args.shape, "quant": args.quant if on_gpu else "fp16", "prompt": args.prompt, "steps": args.steps,
        "warm": args.warm, "rounds": args.rounds, "batches": {},
    }  # fmt: skip

    def save() -> None:
        (args.out / "engine-async.json").write_text(json.dumps(results, indent=1))
        (args.out / "engine-async.md").write_text(table(results) + "\n")

    for b in batches:
        prompts = [[int(x) for x in rng.integers(3, vocab, args.prompt)] for _ in range(b)]
        runs: dict[str, list[dict[str, Any]]] = {"sync": [], "async": []}
        equal, compared = True, 0
        checks: list[dict[str, Any]] = []
        warm_cache(engine, prompts)
        first_sync: list[list[int]] | None = None
        for r in range(args.rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            got = {}
            for mode in order:
                res = one_run(engine, prompts, f"b{b}-r{r}-{int(mode)}", mode, args.warm, args.steps, dev)
                got[res["mode"]] = res["tokens"]
                runs[res["mode"]].append({k: v for k, v in res.items() if k != "tokens"})
            c = compare(got["sync"], got["async"])
            equal, compared = equal and c["equal"], compared + c["compared_tokens"]
            # control: this round's sync tokens against the first round's (GPU run-to-run determinism)
            control = compare(first_sync, got["sync"]) if first_sync is not None else None
            first_sync = first_sync or got["sync"]
            checks.append({"round": r, "sync_vs_async": c, "sync_vs_sync_round0": control})
        try:
            floor = runner_floor(engine, prompts, args.steps, dev)
        except Exception as exc:  # the floor is a reference only: keep the A/B
            print(f"batch {b}: runner floor failed: {exc!r}", flush=True)
            floor = float("nan")

        def med(mode: str, key: str, runs: dict[str, list[dict[str, Any]]] = runs) -> float:
            return statistics.median(x[key] for x in runs[mode])

        results["batches"][str(b)] = {
            "sync_ms": med("sync", "ms_per_step"), "async_ms": med("async", "ms_per_step"),
            "sync_tok_s": 1e3 * b / med("sync", "ms_per_step"), "async_tok_s": 1e3 * b / med("async", "ms_per_step"),
            "async_wait_ms": med("async", "wait_ms_per_step"), "floor_ms": floor,
            "steps_ahead": min(x["steps_ahead"] for x in runs["async"]), "equal": equal, "compared_tokens": compared,
            "rounds": runs, "checks": checks,
            "sync_vs_sync_equal": all(c["sync_vs_sync_round0"]["equal"] for c in checks[1:]),
        }  # fmt: skip
        results["finished_utc"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        save()
        print(f"batch {b}: {json.dumps({k: v for k, v in results['batches'][str(b)].items() if k != 'rounds'})}",
              flush=True)  # fmt: skip
    print(table(results))


if __name__ == "__main__":
    main()
