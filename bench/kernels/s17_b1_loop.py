"""Historical (it ran at a4346b1; mode 3, engine.greedy.greedy_in_graph and engine.num_graph_greedy_steps were removed
in session 18, so `git checkout a4346b1` to rerun it; session 18's loop A/B is s18_input_loop.py).

Session 17 (issue 4): the engine's async decode loop with the step's input (and its greedy tokens) inside the
decode CUDA graph (model.decode_graphs GRAPH_INPUT), A/B in one process.

Modes ("input=N", ';'-separated in --opts): 0, the shipped path of session 16 (the staging copy, the fed ids'
gather and engine.greedy's kernel queued outside the graph); 1, the fed ids gathered by the graph's first kernel;
2, that kernel also reads the pinned staging buffer (no copy); 3, the graph also takes the all-greedy tokens at its
end. The engine and runner are s16_b1_loop's (bench/engine/s11_async.py: random Llama-2-7B int4, fp16, triton, CUDA
graphs, INLAID_QMM_TUNED=1): --batch requests of --prompt random tokens (prefix-cached), greedy, ignore_eos, async
scheduling (s11_async.one_run: a fresh request a run, --warm steps, then --steps timed engine.step() calls). Every
mode's decode graph is its own capture (the mode is part of the graph's key: all stay in the runner's table and the
runner's mode setting picks one), then --rounds rounds in which the modes take turns (order reversed every other
round). Then --prof steps of each mode under torch.profiler (s16_b1_loop.analyse: the GPU ops between two replays,
the idle GPU time, the next replay's launch lead). Several --batches run in one process (one model build).

Usage (device): INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels python3 bench/kernels/s17_b1_loop.py --out DIR
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))

from s11_async import compare, one_run, warm_cache  # noqa: E402
from s16_b1_loop import engine_7b, kernel_check, profile  # noqa: E402


def graph_greedy_check(dev: torch.device, vocab: int) -> dict[str, Any]:
    """engine.greedy.greedy_in_graph (eager) against torch.argmax on random float32 logits, rows 1-8, both slots."""
    from inlaid_worker.engine.greedy import greedy_in_graph

    bad = []
    for b in (1, 4, 8):
        x = torch.randn(b, vocab, device=dev)
        x[0, 5] = x[0, vocab - 7] = 1e9
        ref = x.argmax(dim=-1)
        for rows, slot in ((b, 0), (max(b - 1, 1), 1)):
            tok = torch.full((b,), -1, dtype=torch.int64, device=dev)
            host = torch.full((2, 2, b), -1, dtype=torch.int64, pin_memory=True)
            greedy_in_graph(x, torch.tensor([rows, slot], dtype=torch.int32, device=dev), tok, host)
            torch.cuda.synchronize()
            ok = tok[:rows].tolist() == ref[:rows].tolist() and host[slot, 0, :rows].tolist() == ref[:rows].tolist() \
                and host[1 - slot].eq(-1).all().item()  # fmt: skip
            if not ok:
                bad.append(dict(b=b, rows=rows, slot=slot, ref=ref.tolist(), tok=tok.tolist(), host=host.tolist()))
    print(f"greedy_in_graph vs torch.argmax (vocab {vocab}): {'equal' if not bad else bad}", flush=True)
    return dict(equal=not bad, bad=bad)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--warm", type=int, default=8)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--prof", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--opts", default="input=0;input=1;input=2;input=3")
    ap.add_argument("--profile-modes", default="input=0;input=3")
    ap.add_argument("--tag", default="s17-b1-loop")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda")
    t0 = time.time()
    engine = engine_7b(dev)
    runner = engine.runner
    vocab = runner.config.vocab_size
    engine.greedy_copy = 2  # the shipped greedy path in every mode (async_step.GREEDY_COPY)
    dg = runner._graphs
    modes = args.opts.split(";")
    mode_of = {m: int(m.split("=")[1]) for m in modes}
    base: dict[str, Any] = dict(date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                                device=torch.cuda.get_device_name(), torch=torch.__version__, argv=sys.argv,
                                kernel_check=kernel_check(dev, vocab),
                                graph_greedy_check=graph_greedy_check(dev, vocab))  # fmt: skip
    rng = np.random.default_rng(0)
    base_tag = args.tag
    for batch in [int(x) for x in args.batches.split(",")]:
        tb = time.time()
        prompts = [[int(x) for x in rng.integers(3, vocab, args.prompt)] for _ in range(batch)]
        warm_cache(engine, prompts)
        out: dict[str, Any] = dict(base, batch=batch)
        for m in modes:  # each mode's graph captured (kept in the runner's table under its own key)
            dg.graph_input = mode_of[m]
            one_run(engine, prompts, f"cap-{m}", True, args.warm, 4, dev)
        keys = sorted(str(k) for k in dg._graphs if k[0] == batch)
        print(f"batch {batch}: graphs {keys}", flush=True)
        runs: dict = {m: [] for m in modes}
        toks: dict = {m: [] for m in modes}
        graph_greedy: dict = {m: [] for m in modes}
        for r in range(args.rounds):
            for m in modes if r % 2 == 0 else modes[::-1]:
                dg.graph_input = mode_of[m]
                before = engine.num_graph_greedy_steps
                res = one_run(engine, prompts, f"b{batch}-r{r}-{m}", True, args.warm, args.steps, dev)
                runs[m].append(round(res["ms_per_step"], 4))
                toks[m].append(res["tokens"])
                graph_greedy[m].append(engine.num_graph_greedy_steps - before)
        out.update(runs=runs, ms_per_step={m: statistics.median(v) for m, v in runs.items()},
                   graph_greedy_steps=graph_greedy)  # fmt: skip
        out["tokens_vs_first"] = {m: [compare(a, b) for a, b in zip(toks[modes[0]], toks[m], strict=True)]
                                  for m in modes}  # fmt: skip
        for m in modes:
            ratios = [y / x for x, y in zip(runs[modes[0]], runs[m], strict=True)]
            same = sum(c["equal"] for c in out["tokens_vs_first"][m])
            print(f"engine async batch {batch} mode {m!r}: {out['ms_per_step'][m]:.4f} ms/step (rounds {runs[m]}); "
                  f"vs {modes[0]!r} {statistics.median(ratios):.4f} lower {sum(x < 1 for x in ratios)}/{len(ratios)}; "
                  f"tokens equal in {same}/{len(ratios)} rounds; graph-greedy steps {graph_greedy[m]}",
                  flush=True)  # fmt: skip
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
