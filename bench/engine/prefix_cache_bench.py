"""Prefix caching on CPU: N chat requests sharing a long few-shot system prompt, prefix caching off vs on.

Same engine, same model (SmolLM2-135M-Instruct fp32 via the repo's loader, or --tiny for a tiny random Llama),
same prompts, greedy with EOS ignored; the outputs with caching on must equal those with caching off (checked).
Three scenarios per setting, each on a fresh engine:

- sequential: the requests arrive one after the other (each once the previous one finished): TTFT of each;
- burst: all N arrive at once (chunked prefill shares the token budget): TTFT of each, wall time;
- n-copies: one prompt `--copies` times at once (what the gateway sends for `n` > 1 choices): wall time;
  with caching on also without the scheduler's wait for a prefix being computed (`n-copies-nowait`).

Prefill tokens = prompt tokens the model actually computed (cached ones are not). Half of the requests go to
a shipped task adapter (its own cache chains: the base and an adapter never share KV).

Usage: .venv/bin/python bench/engine/prefix_cache_bench.py [--requests 8] [--shots 12] [--new-tokens 8]
       [--threads 1] [--tiny] [--out bench/results]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from inlaid_worker.engine.engine import LLMEngine
from inlaid_worker.engine.factory import EngineOptions, add_adapter_dir, create_engine
from inlaid_worker.engine.sampling_params import SamplingParams

ROOT = Path(__file__).resolve().parents[2]
TASK = "csqa"


def few_shot_system(shots: int) -> str:
    rows = [json.loads(line) for line in (ROOT / "assets/tasks" / TASK / "train.jsonl").open()][:shots]
    examples = "\n\n".join(f"{r['prompt']}\nAnswer: {r['refs'][0]}" for r in rows)
    return ("You are a careful assistant. Answer each multiple-choice question with the letter of the correct "
            "option only. Here are solved examples.\n\n" + examples)


def questions(n: int) -> list[str]:
    rows = [json.loads(line) for line in (ROOT / "assets/tasks" / TASK / "test.jsonl").open()][:n]
    return [r["prompt"] for r in rows]


class Counter:
    """Wraps the scheduler: counts prompt tokens the model computes per step."""

    def __init__(self, engine: LLMEngine) -> None:
        self.prefill_tokens = 0
        schedule = engine.scheduler.schedule

        def counted() -> Any:
            out = schedule()
            for c in out.chunks:
                self.prefill_tokens += max(0, min(c.end, c.seq.num_prompt_tokens) - c.start)
            return out

        engine.scheduler.schedule = counted  # type: ignore[method-assign]


def make_engine(model_dir: Path, adapter: tuple[str, Path] | None, caching: bool,
                wait: bool = True) -> tuple[LLMEngine, Counter]:
    engine = create_engine(model_dir, EngineOptions(kv_cache_bytes=256 << 20, enable_prefix_caching=caching))
    engine.scheduler.wait_for_shared_prefix = wait
    engine.async_scheduling = False  # Counter wraps schedule(): steps launched ahead (schedule_ahead) would go uncounted
    if adapter is not None:
        add_adapter_dir(engine, adapter[0], adapter[1], model_dir)
    return engine, Counter(engine)


def run(engine: LLMEngine, reqs: list[tuple[str, list[int], str]], params: SamplingParams,
        sequential: bool) -> dict[str, Any]:
    """Runs the requests (one after the other, or all at once); TTFT per request, wall time, tokens."""
    ttft: dict[str, float] = {}
    out_tokens: dict[str, list[int]] = {r: [] for r, _, _ in reqs}
    arrived: dict[str, float] = {}
    start = time.perf_counter()

    def step_until(done: Any) -> None:
        while engine.has_work and not done():
            for o in engine.step():
                if o.token_ids and o.request_id not in ttft:
                    ttft[o.request_id] = time.perf_counter() - arrived[o.request_id]
                out_tokens[o.request_id] += o.token_ids

    if sequential:
        for rid, ids, model in reqs:
            arrived[rid] = time.perf_counter()
            engine.add_request(rid, ids, params, model)
            step_until(lambda: False)
    else:
        for rid, ids, model in reqs:
            arrived[rid] = time.perf_counter()
            engine.add_request(rid, ids, params, model)
        step_until(lambda: False)
    wall = time.perf_counter() - start
    assert engine.block_manager.num_free_blocks == engine.limits.num_kv_blocks
    values = [ttft[r] for r, _, _ in reqs]
    return {"wall_s": wall, "ttft_ms_mean": 1000 * statistics.mean(values),
            "ttft_ms_p50": 1000 * statistics.median(values), "ttft_ms_max": 1000 * max(values),
            "ttft_ms": [round(1000 * v, 1) for v in values], "outputs": out_tokens}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--shots", type=int, default=12)
    ap.add_argument("--new-tokens", type=int, default=8)
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tiny", action="store_true", help="a tiny random Llama instead of SmolLM2-135M")
    ap.add_argument("--out", default=str(ROOT / "bench/results"))
    ap.add_argument("--stamp", default=dt.date.today().isoformat())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    adapter: tuple[str, Path] | None
    if args.tiny:
        sys.path.insert(0, str(ROOT / "workers/tests"))
        from factories import make_random_adapter, make_tiny_llama

        tmp = Path(tempfile.mkdtemp())
        model_dir = make_tiny_llama(tmp / "model", max_positions=4096)
        adapter = ("task", make_random_adapter(tmp / "a", model_dir, rank=8, alpha=16,
                                               targets=["q_proj", "k_proj", "v_proj"], seed=1))
        model_name = "tiny random Llama (2 layers, hidden 64)"
    else:
        from inlaid_worker.model.smollm2 import ensure_smollm2

        model_dir = ensure_smollm2()
        adapter = (TASK, ROOT / "assets/adapters" / TASK)
        model_name = "SmolLM2-135M-Instruct fp32"
    probe, _ = make_engine(model_dir, None, False)
    tok = probe.tokenizer
    system = few_shot_system(args.shots)
    qs = questions(args.requests)
    reqs = [(f"r{i}", tok.encode_chat([{"role": "system", "content": system}, {"role": "user", "content": q}]),
             adapter[0] if i % 2 else "") for i, q in enumerate(qs)]
    copies = [(f"n{i}", reqs[0][1], "") for i in range(args.copies)]
    system_tokens = len(tok.encode_chat([{"role": "system", "content": system}]))
    del probe
    params = SamplingParams(max_tokens=args.new_tokens, temperature=0.0, ignore_eos=True)

    results: dict[str, dict[str, Any]] = {}
    for caching in (False, True):
        key = "on" if caching else "off"
        results[key] = {}
        scenarios = [("sequential", reqs, True, True), ("burst", reqs, False, True), ("n-copies", copies, False, True)]
        if caching:
            scenarios.append(("n-copies-nowait", copies, False, False))
        for scenario, batch, sequential, wait in scenarios:
            engine, counter = make_engine(model_dir, adapter, caching, wait)
            r = run(engine, batch, params, sequential)
            stats = engine.prefix_cache_stats()
            r.update(prefill_tokens=counter.prefill_tokens, prompt_tokens=sum(len(ids) for _, ids, _ in batch),
                     hit_tokens=stats.hit_tokens, queried_tokens=stats.queried_tokens)
            results[key][scenario] = r
            print(f"caching {key:3} {scenario:10} wall {r['wall_s']:.2f}s  TTFT mean {r['ttft_ms_mean']:.0f} ms"
                  f"  prefill tokens {r['prefill_tokens']}/{r['prompt_tokens']}", flush=True)
    same = all(results["on"][s]["outputs"] == results["off"][s.replace("-nowait", "")]["outputs"]
               for s in results["on"])
    for key in results:
        for s in results[key]:
            results[key][s].pop("outputs")

    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    device = (f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s) on a "
              f"shared 2-core VM), torch {torch.__version__}")
    cmd = " ".join(["python", *sys.argv])
    mean_prompt = statistics.mean(len(ids) for _, ids, _ in reqs)
    lines = [
        f"# Prefix caching: {args.requests} requests sharing a {system_tokens}-token few-shot system prompt "
        f"({date})", "",
        f"- Command: `{cmd}`", f"- Device: {device}",
        f"- Model: {model_name}; half of the requests on the `{adapter[0]}` adapter (its own cache chains); "
        f"prompts: chat template, system = instructions + {args.shots} solved {TASK} train examples "
        f"({system_tokens} tokens), user = a {TASK} test question (prompt mean {mean_prompt:.0f} tokens); "
        f"{args.new_tokens} greedy tokens each, EOS ignored; block size 16, max_num_batched_tokens 2048; a fresh "
        f"engine per scenario.",
        f"- Greedy outputs with caching on identical to caching off: **{'yes' if same else 'NO'}**", "",
        "| scenario | caching | prefill tokens computed / prompt tokens | cache hit tokens / queried | TTFT mean / p50 / max (ms) | wall (s) |",
        "|---|---|---|---|---|---|",
    ]
    for s in ("sequential", "burst", "n-copies"):
        for key in ("off", "on"):
            r = results[key][s]
            lines.append(
                f"| {s} | {key} | {r['prefill_tokens']} / {r['prompt_tokens']} | {r['hit_tokens']} / "
                f"{r['queried_tokens']} | {r['ttft_ms_mean']:.0f} / {r['ttft_ms_p50']:.0f} / {r['ttft_ms_max']:.0f}"
                f" | {r['wall_s']:.2f} |")
    w = results["on"]["n-copies-nowait"]
    lines.append(
        f"| n-copies, without waiting for a prefix being computed | on | {w['prefill_tokens']} / "
        f"{w['prompt_tokens']} | {w['hit_tokens']} / {w['queried_tokens']} | {w['ttft_ms_mean']:.0f} / "
        f"{w['ttft_ms_p50']:.0f} / {w['ttft_ms_max']:.0f} | {w['wall_s']:.2f} |")
    lines.append("")
    for s in ("sequential", "burst", "n-copies"):
        off, on = results["off"][s], results["on"][s]
        lines.append(f"- {s}: TTFT mean {off['ttft_ms_mean'] / on['ttft_ms_mean']:.2f}x lower, wall "
                     f"{off['wall_s'] / on['wall_s']:.2f}x lower, prefill tokens "
                     f"{off['prefill_tokens'] / max(1, on['prefill_tokens']):.2f}x fewer with caching on")
    lines += ["", "Sequential: the first request fills the cache (base and adapter each), later ones reuse the "
              "system prompt. Burst: requests admitted in one step cannot share (nothing is computed yet); a "
              "waiting request whose prefix is being computed by a running one waits for it instead of computing "
              "it again. n-copies: one copy computes the prompt, the others compute only their last token.", ""]
    md = "\n".join(lines)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"prefix-cache-{args.stamp}" + ("-tiny" if args.tiny else "")
    (out / f"{name}.md").write_text(md)
    (out / f"{name}.json").write_text(json.dumps(
        {"date": date, "device": device, "command": cmd, "model": model_name, "system_tokens": system_tokens,
         "outputs_identical": same, "results": results}, indent=2))
    print(md)


if __name__ == "__main__":
    main()
