"""Session 18 (issue 4): the decode graph's step input inside the graph (model.decode_graphs GRAPH_INPUT 2) at the
buckets session 17 did not measure (8 and 16), against the staging copy (mode 0), in the engine's async loop.

Mode 2 ships at buckets up to IN_GRAPH_COPY_MAX_BUCKET (4); here the runner's DecodeGraphs.in_graph_max_bucket is
raised to the largest --batches value for the whole run, so a bucket's mode 0 and mode 2 graphs are both captured
(the mode is part of the graph's key; the cap only ever turns mode 2 into 0) and the runner's mode setting picks one.
Protocol: s17_b1_loop's (session 16's s16_b1_loop / s11_async.one_run: random Llama-2-7B int4, fp16, triton, CUDA
graphs, INLAID_QMM_TUNED=1; --batch requests of --prompt random tokens, prefix-cached, greedy, ignore_eos, async
scheduling, a fresh request a run, --warm steps then --steps timed engine.step() calls), with an engine of 16 rows
(s16_b1_loop.engine_7b has 4): each mode's graph captured first, then --rounds rounds in which the modes take turns
(order reversed every other round; token streams compared with mode 0's of the same round and, as a same-mode control
of run-to-run nondeterminism, with the mode's own first round); then --prof steps of each --profile-modes mode under torch.profiler
(s16_b1_loop.analyse: the GPU ops between two replays, the idle GPU time). All --batches in one process.

Usage (device): INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels python3 bench/kernels/s18_input_loop.py --out DIR
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))

from host_overhead import word_tokenizer  # noqa: E402
from inlaid_worker.engine.engine import EngineLimits, LLMEngine  # noqa: E402
from inlaid_worker.engine.tokenizer import PromptTokenizer  # noqa: E402
from llama_shapes import SHAPES  # noqa: E402
from random_model import make_runner, write_config  # noqa: E402
from s11_async import compare, one_run, warm_cache  # noqa: E402
from s16_b1_loop import profile  # noqa: E402
from steps import BLOCK  # noqa: E402

ROWS = 16  # the engine's max_num_seqs: batches up to 16


def engine_7b_rows(dev: torch.device, rows: int) -> LLMEngine:
    """s16_b1_loop.engine_7b with `rows` sequences a step instead of 4 (the same runner: 2048 KV blocks, 4 adapters)."""
    cfg = write_config(SHAPES["7b"], Path(tempfile.mkdtemp()) / "7b")
    runner = make_runner(cfg, "int4", dev, torch.float16, 2048, BLOCK, 4, "triton", True)
    tok = PromptTokenizer(word_tokenizer(runner.config.vocab_size))
    return LLMEngine(runner, tok, EngineLimits(BLOCK, 2048, rows, 2048, 4096, 0, True), base_model_id="base",
                     eos_token_ids=set())  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--batches", default="8,16")
    ap.add_argument("--warm", type=int, default=8)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--prof", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--opts", default="input=0;input=2")
    ap.add_argument("--profile-modes", default="")
    ap.add_argument("--tag", default="s18-input-mid")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    batches = [int(x) for x in args.batches.split(",")]
    if max(batches) > ROWS:
        raise SystemExit(f"--batches: at most {ROWS}")
    dev = torch.device("cuda")
    t0 = time.time()
    engine = engine_7b_rows(dev, ROWS)
    engine.greedy_copy = 2  # the shipped greedy path in every mode (async_step.GREEDY_COPY)
    dg = engine.runner._graphs
    dg.in_graph_max_bucket = max(batches)  # mode 2 allowed at the measured buckets (module docstring)
    modes = args.opts.split(";")
    mode_of = {m: int(m.split("=")[1]) for m in modes}
    vocab = engine.runner.config.vocab_size
    base: dict[str, Any] = dict(date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                                device=torch.cuda.get_device_name(), torch=torch.__version__, argv=sys.argv,
                                in_graph_max_bucket=dg.in_graph_max_bucket)  # fmt: skip
    rng = np.random.default_rng(0)
    base_tag = args.tag
    for batch in batches:
        tb = time.time()
        prompts = [[int(x) for x in rng.integers(3, vocab, args.prompt)] for _ in range(batch)]
        warm_cache(engine, prompts)
        out: dict[str, Any] = dict(base, batch=batch)
        for m in modes:  # each mode's graph captured (kept in the runner's table under its own key)
            dg.graph_input = mode_of[m]
            one_run(engine, prompts, f"cap-{m}", True, args.warm, 4, dev)
        bucket = min(k[0] for k in dg._graphs if k[0] >= batch)
        ran = sorted(k[4] for k in dg._graphs if k[0] == bucket)
        keys = sorted(str(k) for k in dg._graphs if k[0] == bucket)
        print(f"batch {batch}: bucket {bucket} graphs {keys}", flush=True)
        if ran != sorted(mode_of.values()):  # the A/B would compare a graph with itself
            raise SystemExit(f"batch {batch}: graphs of modes {ran}, wanted {sorted(mode_of.values())}")
        runs: dict = {m: [] for m in modes}
        toks: dict = {m: [] for m in modes}
        for r in range(args.rounds):
            for m in modes if r % 2 == 0 else modes[::-1]:
                dg.graph_input = mode_of[m]
                res = one_run(engine, prompts, f"b{batch}-r{r}-{m}", True, args.warm, args.steps, dev)
                runs[m].append(round(res["ms_per_step"], 4))
                toks[m].append(res["tokens"])
        medians = {m: statistics.median(v) for m, v in runs.items()}
        out.update(bucket=bucket, graphs=keys, runs=runs, ms_per_step=medians)
        out["tokens_vs_first"] = {m: [compare(a, b) for a, b in zip(toks[modes[0]], toks[m], strict=True)]
                                  for m in modes}  # fmt: skip
        # the same-mode control: each round's streams against the mode's own first round (run-to-run nondeterminism)
        out["tokens_vs_own_first"] = {m: [compare(toks[m][0], b) for b in toks[m]] for m in modes}
        out["ratios"] = {}
        for m in modes:
            ratios = [y / x for x, y in zip(runs[modes[0]], runs[m], strict=True)]
            same = sum(c["equal"] for c in out["tokens_vs_first"][m])
            own = sum(c["equal"] for c in out["tokens_vs_own_first"][m])
            lower = sum(x < 1 for x in ratios)
            out["ratios"][m] = dict(per_round=[round(x, 5) for x in ratios], median=statistics.median(ratios),
                                    lower=lower, rounds=len(ratios))  # fmt: skip
            print(f"engine async batch {batch} mode {m!r}: {out['ms_per_step'][m]:.4f} ms/step (rounds {runs[m]}); "
                  f"vs {modes[0]!r} {statistics.median(ratios):.4f} lower {lower}/{len(ratios)}; "
                  f"tokens equal in {same}/{len(ratios)} rounds (to its own round 0: {own})", flush=True)  # fmt: skip
        out["profiles"] = {}
        args.tag = f"{base_tag}-b{batch}"
        for m in [p for p in args.profile_modes.split(";") if p in mode_of]:
            dg.graph_input = mode_of[m]
            out["profiles"][m] = profile(engine, prompts, args, f"b{batch}-{m}")
        out["wall_s"] = time.time() - tb
        (args.out / f"{args.tag}.json").write_text(json.dumps(out, indent=1))
        print(f"batch {batch} wall {out['wall_s']:.0f} s (total {time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
