"""Host time of one device_sampler._Batch.launch on CPU tensors with a tiny vocabulary, where the per-row Python work
(classifying rows, per-row numbers, uploads) dominates: the launch's host overhead. Alternates the modules given
(device_sampler.py files: e.g. HEAD's from `git show HEAD:workers/inlaid_worker/engine/device_sampler.py > /tmp/a.py`)
with the working tree's, --rounds rounds of --seconds each, and prints each one's best time and whether the tokens
and overflow flags agree.

    PYTHONPATH=workers nice -n 10 .venv/bin/python bench/engine/sampler_launch_overhead.py --module head=/tmp/a.py
"""

from __future__ import annotations

import argparse
import time

import torch
from _modules import load_module
from inlaid_worker.engine import device_sampler
from inlaid_worker.engine.sampler import make_generator
from inlaid_worker.engine.sampling_params import SamplingParams


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--module", action="append", default=[], help="NAME=PATH of another device_sampler.py")
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=0.6)
    args = ap.parse_args()
    torch.set_num_threads(1)
    mods = {name: load_module(f"ds_{name}", path) for name, path in (m.split("=", 1) for m in args.module)}
    mods["tree"] = device_sampler
    r = args.rows
    logits = torch.randn(r, args.vocab, generator=torch.Generator().manual_seed(0))
    cases = {
        "sampled": [SamplingParams(temperature=0.8, top_p=0.9, seed=i) for i in range(r)],
        "mixed": [SamplingParams(temperature=0.8 if i % 2 else 0.0, seed=i) for i in range(r)],
        "greedy": [SamplingParams(temperature=0.0) for _ in range(r)],
        "biased": [SamplingParams(temperature=0.8 if i % 2 else 0.0, seed=i,
                                  logit_bias=((1, 2.0),) if i % 8 == 0 else ()) for i in range(r)],  # fmt: skip
    }
    for label, params in cases.items():
        best: dict[str, float] = {}
        outs: dict[str, tuple[list[int], list[bool]]] = {}
        for _ in range(args.rounds):
            for name, mod in mods.items():
                start = time.perf_counter()
                while time.perf_counter() - start < args.seconds:
                    gens = [make_generator(i) for i in range(r)]
                    t0 = time.perf_counter()
                    tokens, overflow, _ = mod._Batch(logits, params, gens, None, "sort").launch()
                    best[name] = min(best.get(name, 1e9), time.perf_counter() - t0)
                outs[name] = (tokens.tolist(), overflow.tolist())
        same = all(o == outs["tree"] for o in outs.values())
        times = ", ".join(f"{name} {1e3 * t:.3f} ms" for name, t in best.items())
        print(f"{label} ({r} rows x {args.vocab}): {times}; same tokens: {same}", flush=True)


if __name__ == "__main__":
    main()
