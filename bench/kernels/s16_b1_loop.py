"""Session 16 (issue 4): what the engine's async decode loop does on the GPU outside the decode graph, at batch 1.

The engine and runner of bench/engine/s11_async.py (random Llama-2-7B int4, fp16, triton, CUDA graphs, shipped
tuner table with INLAID_QMM_TUNED=1): --batch requests of --prompt random tokens (prefix-cached), greedy, ignore_eos,
async scheduling (s11_async.one_run: a fresh request a run, --warm steps, then --steps timed engine.step() calls).
(1) A/B of decode_row options in the engine loop: each --opts value's decode graph is captured under it
(INLAID_DECODE_ROW_OPTS; "proto=1": s16_b1_merge's kernel, as s16_b1.py), then --rounds rounds in which the values take turns (alternating order; the graph swapped
into the runner's table). (2) --prof steps of the first value under torch.profiler (CPU + CUDA activity). From the
trace: every GPU op (kernel, memcpy, memset) with the host API call that launched it (correlation id): ops launched
by cudaGraphLaunch are the decode graph's; a replay is the span of one launch's ops. Per step (replay start to the
next replay's start): the ops outside the graph between two replays (name, duration, launching API), the GPU time
in that interval not covered by any op, and the lead of the next replay's launch over this replay's end (positive:
queued ahead; negative: the GPU waited for the host).

Usage (device): INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels python3 bench/kernels/s16_b1_loop.py --out DIR
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))

from host_overhead import word_tokenizer  # noqa: E402
from inlaid_worker.engine.engine import EngineLimits, LLMEngine  # noqa: E402
from inlaid_worker.engine.sampling_params import SamplingParams  # noqa: E402
from inlaid_worker.engine.tokenizer import PromptTokenizer  # noqa: E402
from llama_shapes import SHAPES  # noqa: E402
from random_model import make_runner, write_config  # noqa: E402
from s11_async import compare, one_run, warm_cache  # noqa: E402
from s16_b1 import variant  # noqa: E402
from steps import BLOCK  # noqa: E402

GPU_CATS = ("kernel", "gpu_memcpy", "gpu_memset")


def analyse(trace: dict) -> dict:
    """Replays, the ops between them and the idle GPU time per step (module docstring)."""
    ev = trace["traceEvents"]
    api = {
        e["args"]["correlation"]: e
        for e in ev
        if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})
    }
    ops = sorted((e for e in ev if e.get("cat") in GPU_CATS), key=lambda e: e["ts"])
    for o in ops:
        call = api.get(o.get("args", {}).get("correlation"))
        o["_api"] = call["name"] if call else "?"
        o["_api_ts"] = call["ts"] if call else None
    replays: dict[int, list] = defaultdict(list)
    for o in ops:
        if o["_api"] == "cudaGraphLaunch":
            replays[o["args"]["correlation"]].append(o)
    spans = sorted((min(o["ts"] for o in v), max(o["ts"] + o["dur"] for o in v), len(v), api[c]["ts"], c)
                   for c, v in replays.items())  # fmt: skip
    steps = []
    for (s0, e0, n0, _, _), (s1, _, _, launch1, _) in zip(spans, spans[1:], strict=False):
        between = [o for o in ops if o["_api"] != "cudaGraphLaunch" and e0 - 1e-3 <= o["ts"] < s1]
        covered, cur = 0.0, e0
        for o in between:  # the idle time of [e0, s1): not covered by any op
            a, b = max(o["ts"], cur), min(o["ts"] + o["dur"], s1)
            if b > a:
                covered += b - a
                cur = b
        steps.append(dict(replay_us=e0 - s0, kernels=n0, gap_us=s1 - e0, busy_in_gap_us=covered,
                          period_us=s1 - s0, launch_lead_us=e0 - launch1,  # > 0: next replay launched before this end
                          ops=[(o["name"][:60], o["_api"], round(o["dur"], 2), round(o["ts"] - e0, 2))
                               for o in between]))  # fmt: skip
    # ops outside the graph over the whole window, by (name, api)
    outside = Counter()
    dur: dict = defaultdict(float)
    for o in ops:
        if o["_api"] != "cudaGraphLaunch":
            k = f"{o['name'][:60]} | {o['_api']}"
            outside[k] += 1
            dur[k] += o["dur"]
    med = lambda k: statistics.median(s[k] for s in steps) if steps else float("nan")  # noqa: E731
    return dict(replays=len(spans), steps=steps[:12], median=dict(
        replay_us=med("replay_us"), gap_us=med("gap_us"), busy_in_gap_us=med("busy_in_gap_us"),
        period_us=med("period_us"), launch_lead_us=med("launch_lead_us")),
        outside={k: dict(n=n, mean_us=dur[k] / n) for k, n in outside.most_common()})  # fmt: skip


def mode_switches(mode: str, engine: LLMEngine) -> str:
    """Sets the engine's greedy mode (engine.greedy_copy, async_step.GREEDY_COPY's values; the engine reads its default
    once, when built) from a mode's "greedy=N" (default: 0, the old path) and returns the rest (row options,
    s16_b1.variant's "@opts" form)."""
    parts = [p for p in mode.split(",") if p]
    engine.greedy_copy = next((int(p.split("=")[1]) for p in parts if p.startswith("greedy=")), 0)
    return "/".join(p for p in parts if not p.startswith("greedy="))


def engine_7b(dev: torch.device) -> LLMEngine:
    """The loop's engine: a random 7B int4 runner (Triton kernels, decode graphs) behind an LLMEngine of 4 rows."""
    cfg = write_config(SHAPES["7b"], Path(tempfile.mkdtemp()) / "7b")
    runner = make_runner(cfg, "int4", dev, torch.float16, 2048, BLOCK, 4, "triton", True)
    tok = PromptTokenizer(word_tokenizer(runner.config.vocab_size))
    return LLMEngine(runner, tok, EngineLimits(BLOCK, 2048, 4, 2048, 4096, 0, True), base_model_id="base",
                     eos_token_ids=set())  # fmt: skip


def profile(engine: LLMEngine, prompts: list[list[int]], args: argparse.Namespace, tag: str) -> dict[str, Any]:
    params = SamplingParams(temperature=0, max_tokens=args.warm + args.prof + 64, ignore_eos=True)
    engine.async_scheduling = False
    rids = [f"prof-{tag}-{i}" for i in range(len(prompts))]
    for rid, p in zip(rids, prompts, strict=True):
        engine.add_request(rid, p, params, "")
    while engine.scheduler.waiting or any(s.num_computed_tokens < len(s.prompt_token_ids)
                                          for s in engine.scheduler.running):  # fmt: skip
        engine.step()
    engine.async_scheduling = True
    for _ in range(args.warm):
        engine.step()
    torch.cuda.synchronize()
    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(args.prof):
            engine.step()
        torch.cuda.synchronize()
    path = args.out / f"{args.tag}-trace.json"
    prof.export_chrome_trace(str(path))
    out = analyse(json.loads(path.read_text()))
    path.unlink()
    for rid in rids:
        engine.abort_request(rid)
    engine.async_scheduling = False
    while engine.has_work:
        engine.step()
    m = out["median"]
    print(f"profiled ({tag!r}) {out['replays']} replays: median replay {m['replay_us']:.1f} us, period "
          f"{m['period_us']:.1f}, gap {m['gap_us']:.1f} (ops busy {m['busy_in_gap_us']:.1f}), next launch lead "
          f"{m['launch_lead_us']:.1f} us", flush=True)  # fmt: skip
    for k, v in out["outside"].items():
        print(f"  outside the graph: {v['n']:4d} x {v['mean_us']:7.2f} us  {k}", flush=True)
    for st in out["steps"][:2]:
        print(f"  step: replay {st['replay_us']:.1f} gap {st['gap_us']:.1f} lead {st['launch_lead_us']:.1f} ops "
              f"{st['ops']}", flush=True)  # fmt: skip
    return out


def kernel_check(dev: torch.device, vocab: int) -> dict[str, Any]:
    """engine.greedy's kernel against torch.argmax on random float32 logits (ties, -inf rows, NaN; 1-8 rows; with
    and without the pinned host write and a row selection)."""
    from inlaid_worker.engine.greedy import greedy_tokens

    bad = []
    for r in (1, 2, 3, 8):
        x = torch.randn(r, vocab, device=dev)
        x[0, 5] = x[0, vocab - 7] = 1e9  # a tie: the first
        if r > 1:
            x[1] = float("-inf")
        if r > 2:
            x[2, 9] = float("inf")
            x[2, vocab - 2] = float("nan")
        host = torch.full((2 * r,), -1, dtype=torch.int64, pin_memory=True)
        ref = x.argmax(dim=-1)
        tok = greedy_tokens(x, host=host)
        torch.cuda.synchronize()
        sel = torch.arange(r - 1, -1, -1, device=dev)
        tok2 = greedy_tokens(x, sel)
        ok = (torch.equal(tok, ref) and host[:r].tolist() == ref.tolist() and host[r:].tolist() == [0] * r
              and torch.equal(tok2, ref[sel]))  # fmt: skip
        if not ok:
            bad.append(dict(rows=r, ref=ref.tolist(), tok=tok.tolist(), host=host.tolist(), sel=tok2.tolist()))
    print(f"greedy kernel vs torch.argmax (vocab {vocab}): {'equal' if not bad else bad}", flush=True)
    return dict(equal=not bad, bad=bad)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--warm", type=int, default=8)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--prof", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--opts", default="greedy=0;greedy=2", help="modes to alternate, ';'-separated, each "
                    "','-separated greedy=N (engine.greedy_copy) and decode_row options (merge=1, proto=1, ...); "
                    "the first and the last are profiled")  # fmt: skip
    ap.add_argument("--tag", default="s16-b1-loop")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda")
    t0 = time.time()
    engine = engine_7b(dev)
    runner = engine.runner
    vocab = runner.config.vocab_size
    out: dict[str, Any] = dict(date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                               device=torch.cuda.get_device_name(), torch=torch.__version__, argv=sys.argv,
                               batch=args.batch, kernel_check=kernel_check(dev, vocab))  # fmt: skip
    rng = np.random.default_rng(0)
    prompts = [[int(x) for x in rng.integers(3, vocab, args.prompt)] for _ in range(args.batch)]
    warm_cache(engine, prompts)
    modes = args.opts.split(";")
    dg = runner._graphs
    store: dict = {}
    for m in modes:  # each mode's decode graph captured under its options, then kept aside
        variant("x@" + mode_switches(m, engine))  # s16_b1.variant: the env; "proto=1" swaps the ordered-merge kernel in
        one_run(engine, prompts, f"cap-{m}", True, args.warm, 4, dev)
        key = next(k for k in dg._graphs if k[0] == args.batch and not k[1])
        store[m] = (key, dg._graphs.pop(key))
    variant("none")
    runs: dict = {m: [] for m in modes}
    toks: dict = {m: [] for m in modes}
    for r in range(args.rounds):  # alternating order; a fresh request each run (same cached prompt)
        for m in modes if r % 2 == 0 else modes[::-1]:
            mode_switches(m, engine)
            key, g = store[m]
            dg._graphs[key] = g
            res = one_run(engine, prompts, f"r{r}-{m}", True, args.warm, args.steps, dev)
            runs[m].append(round(res["ms_per_step"], 4))
            toks[m].append(res["tokens"])
            del dg._graphs[key]
    out.update(runs=runs, ms_per_step={m: statistics.median(v) for m, v in runs.items()})
    out["tokens_vs_first"] = {m: [compare(a, b) for a, b in zip(toks[modes[0]], toks[m], strict=True)] for m in modes}
    for m in modes:
        ratios = [y / x for x, y in zip(runs[modes[0]], runs[m], strict=True)]
        same = sum(c["equal"] for c in out["tokens_vs_first"][m])
        print(f"engine async batch {args.batch} mode {m!r}: {out['ms_per_step'][m]:.4f} ms/step (rounds {runs[m]}); "
              f"vs {modes[0]!r} {statistics.median(ratios):.4f} lower {sum(x < 1 for x in ratios)}/{len(ratios)}; "
              f"tokens equal to {modes[0]!r}'s in {same}/{len(ratios)} rounds", flush=True)  # fmt: skip
    out["profiles"] = {}
    for m in dict.fromkeys([modes[0], modes[-1]]):
        mode_switches(m, engine)
        key, g = store[m]
        dg._graphs[key] = g
        out["profiles"][m] = profile(engine, prompts, args, m)
        del dg._graphs[key]
    engine.greedy_copy = 2
    out["wall_s"] = time.time() - t0
    (args.out / f"{args.tag}.json").write_text(json.dumps(out, indent=1))
    print(f"wall {out['wall_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
