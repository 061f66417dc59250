"""Async scheduling under load (engine/async_step.py): sync vs decode-only async vs async with admissions ahead.

An LLMEngine on the random Llama-2-7B int4 runner (random_model.py, fp16, triton, CUDA graphs; INLAID_QMM_TUNED=1)
serves --requests greedy requests (ignore_eos) with prompt lengths uniform in [--min-prompt, --max-prompt] and
max_tokens uniform in [--min-out, --max-out] (one seeded draw, the same requests in every run), max_num_seqs
--max-seqs, token budget --budget. Arrivals: "burst" (all queued before the first step) or "poisson" (rate --rate a
second, wall clock: a request is added before the first step() call at or after its arrival time). The engine runs
engine.step() until done. Modes, in rotating order per round, same process:
  sync        async_scheduling off
  async       async on, async_admit off (session 11's first version: only decode steps with nothing waiting go ahead)
  admit       async on, async_admit on (admissions and prefill chunks in the steps launched ahead)
  admit-eager admit, with mixed steps that carry a token feed run eagerly (runner.feed_prefill_graphs False)
Per run: wall seconds from the first step() to the last output, output tokens/s, all tokens (prompt + output)/s,
steps, steps launched ahead, of those with prefill chunks, mean time to first token and mean request latency (from
the arrival). Between runs the prefix cache is reset (every run prefills its prompts cold).

Feed check (first): one mixed step (two decode rows, then a prefill chunk) through the prefill graphs with its decode
rows' ids given on the host, the same step with those ids fed on the device (model.token_feed), and the fed step run
eagerly: the two replays must give identical logits; the eager step's gap is printed.

Exactness is the CPU tests' (workers/tests/engine/test_async_admit.py); on the GPU sync does not reproduce itself on
random models (split-K float atomics), so tokens are compared only as a count of requests whose streams agree with
the round's sync run.

  H200: source bench/kernels/device_env.sh; INLAID_QMM_TUNED=1 python3 bench/engine/s11_async_load.py --out $OUT
  CPU smoke: nice -n 10 .venv/bin/python bench/engine/s11_async_load.py --out /tmp/s11l --device cpu --shape tiny \
      --requests 12 --max-seqs 4 --min-prompt 8 --max-prompt 40 --min-out 4 --max-out 12 --rounds 1
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

from host_overhead import word_tokenizer  # noqa: E402
from inlaid_worker.engine.engine import EngineLimits, LLMEngine  # noqa: E402
from inlaid_worker.engine.sampling_params import SamplingParams  # noqa: E402
from inlaid_worker.engine.scheduler import ScheduledChunk  # noqa: E402
from inlaid_worker.engine.sequence import Sequence  # noqa: E402
from inlaid_worker.engine.step_builder import build_step_input  # noqa: E402
from inlaid_worker.engine.tokenizer import PromptTokenizer  # noqa: E402
from inlaid_worker.model.token_feed import make_feed  # noqa: E402
from llama_shapes import SHAPES  # noqa: E402
from random_model import make_runner, write_config  # noqa: E402
from steps import BLOCK  # noqa: E402

clock = time.perf_counter
MODES = ("sync", "async", "admit", "admit-eager")


def sync_dev(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def set_mode(engine: LLMEngine, mode: str) -> None:
    engine.async_scheduling = mode != "sync"
    engine.async_admit = mode.startswith("admit")
    engine.runner.feed_prefill_graphs = mode != "admit-eager"  # type: ignore[attr-defined]


def one_run(engine: LLMEngine, reqs: list[tuple[list[int], int]], arrivals: list[float], mode: str, tag: str,
            dev: torch.device) -> dict[str, Any]:  # fmt: skip
    set_mode(engine, mode)
    rids = [f"{tag}-{i}" for i in range(len(reqs))]
    toks: dict[str, list[int]] = {r: [] for r in rids}
    first: dict[str, float] = {}
    done: dict[str, float] = {}
    steps0, ahead0, admit0 = engine.num_steps, engine.num_async_steps, engine.num_async_admit_steps
    order = sorted(range(len(reqs)), key=arrivals.__getitem__)
    nxt = 0
    sync_dev(dev)
    t0 = clock()
    while nxt < len(order) or engine.has_work:
        now = clock() - t0
        while nxt < len(order) and arrivals[order[nxt]] <= now:
            i = order[nxt]
            prompt, max_tokens = reqs[i]
            engine.add_request(rids[i], prompt, SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True))
            nxt += 1
        if not engine.has_work:
            time.sleep(max(0.0, arrivals[order[nxt]] - now))
            continue
        outs = engine.step()
        t = clock() - t0
        for o in outs:
            toks[o.request_id] += o.token_ids
            if o.token_ids and o.request_id not in first:
                first[o.request_id] = t
            if o.finish_reason is not None:
                done[o.request_id] = t
    wall = clock() - t0
    out_tokens = sum(len(v) for v in toks.values())
    prompt_tokens = sum(len(p) for p, _ in reqs)
    steps = engine.num_steps - steps0
    ahead = engine.num_async_steps - ahead0
    engine.block_manager.reset_cache()  # the next run prefills cold too
    return {"mode": mode, "wall_s": wall, "out_tok_s": out_tokens / wall, "all_tok_s": (out_tokens + prompt_tokens) / wall,
            "steps": steps, "ahead": ahead, "ahead_with_prefill": engine.num_async_admit_steps - admit0,
            "ahead_frac": ahead / max(steps, 1), "out_tokens": out_tokens,
            "ttft_ms": 1e3 * statistics.mean(first[r] - arrivals[i] for i, r in enumerate(rids)),
            "latency_ms": 1e3 * statistics.mean(done[r] - arrivals[i] for i, r in enumerate(rids)),
            "tokens": [toks[r] for r in rids]}  # fmt: skip


def feed_check(engine: LLMEngine, vocab: int, dev: torch.device) -> dict[str, Any]:
    """A mixed step's logits: host ids vs fed ids through the prefill graphs (identical), fed eagerly (close)."""
    runner: Any = engine.runner
    bm = engine.block_manager
    g = np.random.default_rng(5)
    seqs = [Sequence(f"fc{i}", [int(x) for x in g.integers(3, vocab, n)], SamplingParams(temperature=0))
            for i, n in enumerate((40, 70, 100))]  # fmt: skip
    for s in seqs:
        bm.allocate(s.block_table, s.num_tokens)
    # the decode rows compute their sequence's last prompt token (as if it had been sampled), after the rest
    pre = [ScheduledChunk(s, 0, s.num_tokens - 1, False) for s in seqs[:2]]
    runner.execute_device(build_step_input(pre, BLOCK, "cpu"))
    chunks = [ScheduledChunk(s, s.num_tokens - 1, 1, True) for s in seqs[:2]] + [ScheduledChunk(seqs[2], 0, 100, True)]
    host = build_step_input(chunks, BLOCK, "cpu")
    device_tokens = torch.tensor([s.prompt_token_ids[-1] for s in seqs[:2]], dtype=torch.int64, device=dev)
    fed = build_step_input(chunks, BLOCK, "cpu", make_feed(device_tokens, [0, 1]))
    fed.token_ids[:2] = 0  # placeholders: the feed must supply them
    wrong = build_step_input(chunks, BLOCK, "cpu", make_feed(device_tokens + 1, [0, 1]))  # a feed of other ids
    out: dict[str, Any] = {}

    def gap(x: torch.Tensor, y: torch.Tensor) -> float:
        return float((x - y).norm() / y.norm())

    runner.feed_prefill_graphs = True
    a = runner.execute_device(host).clone()
    a2 = runner.execute_device(host).clone()  # control: the replay's own run-to-run gap (split-K float atomics)
    b = runner.execute_device(fed).clone()
    w = runner.execute_device(wrong).clone()
    runner.feed_prefill_graphs = False
    c = runner.execute_device(fed).clone()
    runner.feed_prefill_graphs = True
    out["graph_fed_equal"] = bool(torch.equal(a, b))
    out["graph_rerun_rel_gap"], out["graph_fed_rel_gap"] = gap(a2, a), gap(b, a)
    out["graph_fed_rows_rel_gap"] = [gap(b[i], a[i]) for i in range(3)]
    out["wrong_feed_rows_rel_gap"] = [gap(w[i], a[i]) for i in range(3)]  # what a broken feed would look like
    out["eager_fed_rel_gap"] = gap(c, a)
    out["prefill_graph_stats"] = runner.prefill_graph_stats
    for s in seqs:
        bm.free(s.block_table)
    return out


def table(results: dict[str, Any]) -> str:
    if not all("summary" in w for w in results["workloads"].values()):
        return "(partial: see the JSON's runs)"
    lines = [
        "| workload | mode | wall s (median) | out tok/s | all tok/s | steps | ahead | ahead w/ prefill | "
        "ahead frac | mean TTFT ms | mean latency ms | vs sync |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, w in results["workloads"].items():
        base = w["summary"]["sync"]["wall_s"]
        for mode, s in w["summary"].items():
            lines.append(f"| {name} | {mode} | {s['wall_s']:.3f} | {s['out_tok_s']:.0f} | {s['all_tok_s']:.0f} | "
                         f"{s['steps']} | {s['ahead']} | {s['ahead_with_prefill']} | {s['ahead_frac']:.3f} | "
                         f"{s['ttft_ms']:.0f} | {s['latency_ms']:.0f} | {base / s['wall_s']:.3f}x |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shape", default="7b", choices=sorted(SHAPES))
    ap.add_argument("--quant", default="int4")
    ap.add_argument("--requests", type=int, default=96)
    ap.add_argument("--max-seqs", type=int, default=32)
    ap.add_argument("--budget", default="2048", help="token budgets (max_num_batched_tokens), comma-separated")
    ap.add_argument("--min-prompt", type=int, default=128)
    ap.add_argument("--max-prompt", type=int, default=1024)
    ap.add_argument("--min-out", type=int, default=32)
    ap.add_argument("--max-out", type=int, default=256)
    ap.add_argument("--arrivals", default="burst", help="burst,poisson")
    ap.add_argument("--rate", type=float, default=40.0, help="poisson arrivals a second")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--blocks", type=int, default=4096)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(args.device)
    cfg = write_config(SHAPES[args.shape], Path(tempfile.mkdtemp()) / args.shape)
    on_gpu = dev.type == "cuda"
    dtype = torch.float16 if on_gpu else torch.float32
    runner = make_runner(cfg, args.quant if on_gpu else "fp16", dev, dtype, args.blocks, BLOCK, 4,
                         "triton" if on_gpu else "torch", on_gpu)  # fmt: skip
    if not hasattr(runner, "feed_prefill_graphs"):
        runner.feed_prefill_graphs = True  # type: ignore[attr-defined]
    vocab = runner.config.vocab_size
    modes = args.modes.split(",")
    rng = np.random.default_rng(0)
    reqs = [([int(x) for x in rng.integers(3, vocab, int(rng.integers(args.min_prompt, args.max_prompt + 1)))],
             int(rng.integers(args.min_out, args.max_out + 1))) for _ in range(args.requests)]  # fmt: skip
    gaps = rng.exponential(1.0 / args.rate, args.requests)
    results: dict[str, Any] = {
        "command": " ".join(sys.argv), "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "device": torch.cuda.get_device_name() if on_gpu else "cpu", "torch": torch.__version__,
        "shape": args.shape, "quant": args.quant if on_gpu else "fp16", "requests": args.requests,
        "max_num_seqs": args.max_seqs, "prompt_tokens": sum(len(p) for p, _ in reqs),
        "max_tokens_total": sum(m for _, m in reqs), "rounds": args.rounds, "workloads": {},
    }  # fmt: skip

    def save() -> None:
        (args.out / "engine-async-load.json").write_text(json.dumps(results, indent=1))
        (args.out / "engine-async-load.md").write_text(table(results) + "\n")

    for budget in [int(x) for x in args.budget.split(",")]:
        limits = EngineLimits(BLOCK, args.blocks, args.max_seqs, budget, 4096, 0, True)
        engine = LLMEngine(runner, PromptTokenizer(word_tokenizer(vocab)), limits, base_model_id="base",
                           eos_token_ids=set())  # fmt: skip
        if "feed_check" not in results:
            try:
                results["feed_check"] = feed_check(engine, vocab, dev)
            except Exception as exc:  # a reference: keep the A/B
                results["feed_check"] = {"error": repr(exc)}
            print(f"feed check: {results['feed_check']}", flush=True)
        # warm-up, untimed: every request with at most 8 output tokens in every mode (the prefill and mixed step
        # shapes' graph captures and quant_matmul tuning; the first timed run absorbed them in call 1)
        warm = [(p, min(m, 8)) for p, m in reqs]
        for mode in modes:
            one_run(engine, warm, [0.0] * len(warm), mode, f"warm-{budget}-{mode}", dev)
        for kind in args.arrivals.split(","):
            arrivals = [0.0] * len(reqs) if kind == "burst" else list(np.cumsum(gaps))
            name = f"{kind}-budget{budget}"
            runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
            agree: list[int] = []
            for r in range(args.rounds):
                order = modes[r % len(modes) :] + modes[: r % len(modes)]
                got = {}
                for mode in order:
                    res = one_run(engine, reqs, arrivals, mode, f"{name}-r{r}-{mode}", dev)
                    got[mode] = res.pop("tokens")
                    runs[mode].append(res)
                    print(f"{name} r{r} {mode}: {json.dumps(res)}", flush=True)
                    results["workloads"][name] = {"runs": runs}  # partial: kept if a timeout ends the bench
                    save()
                if "sync" in got:
                    agree += [
                        sum(a == b for a, b in zip(got["sync"], got[m], strict=True)) for m in modes if m != "sync"
                    ]
            summary = {m: {k: statistics.median(x[k] for x in v) for k in v[0] if k != "mode"} for m, v in runs.items()}
            results["workloads"][name] = {"summary": summary, "runs": runs, "streams_equal_to_sync": agree}
            results["finished_utc"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
            save()
    print(table(results))


if __name__ == "__main__":
    main()
