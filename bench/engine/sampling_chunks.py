"""CPU step time of sample_batch for a mixed top-p batch (not a test): 128 rows x 32k vocab, temperature 0.8, half
the rows top_p 0.9 and half top_p 1, fp16-valued logits; nucleus "sort" (the GPU's default) and "topk" (the
CPU's), alternating rep by rep on the same logits. Prints the median and min ms per call. --rss NUCLEUS instead
makes one call and prints how far it raised the process's peak resident memory (a CPU stand-in for the scratch a
GPU would allocate; run it in a fresh process per configuration):

    PYTHONPATH=workers nice -n 10 python3 bench/engine/sampling_chunks.py [--rows 128] [--vocab 32000] [--reps 5] \
        [--rss sort|topk]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch
from inlaid_worker.engine.device_sampler import sample_batch
from inlaid_worker.engine.sampler import make_generator
from inlaid_worker.engine.sampling_params import SamplingParams


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rss", choices=("sort", "topk"))
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(args.rows, args.vocab, generator=gen) * 2.0).half().float()
    params = [SamplingParams(temperature=0.8, top_p=0.9 if i % 2 else 1.0, seed=i) for i in range(args.rows)]
    if args.rss:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        gens = [make_generator(p.seed or 0) for p in params]
        sample_batch(logits, params, gens, nucleus=args.rss)  # type: ignore[arg-type]
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(f"{args.rss}, {args.rows} rows x {args.vocab} vocab: peak RSS +{grown / 1024:.0f} MiB in one call")
        return
    times: dict[str, list[float]] = {"sort": [], "topk": []}
    tokens: dict[str, list[int]] = {}
    for rep in range(args.reps + 1):  # rep 0: warm-up
        for nucleus in times:
            gens = [make_generator(p.seed or 0) for p in params]
            t0 = time.perf_counter()
            out = sample_batch(logits, params, gens, nucleus=nucleus)  # type: ignore[arg-type]
            dt = (time.perf_counter() - t0) * 1e3
            if rep:
                times[nucleus].append(dt)
            tokens[nucleus] = out.tokens
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.rows} rows x {args.vocab} vocab")
    for nucleus, ts in times.items():
        print(f"{nucleus}: median {statistics.median(ts):.1f} ms, min {min(ts):.1f} ms over {len(ts)} reps")
    print("tokens equal across strategies:", tokens["sort"] == tokens["topk"], "checksum", sum(tokens["sort"]))


if __name__ == "__main__":
    main()
