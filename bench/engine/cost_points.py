"""Step-time grid for the scheduling simulator's H200 cost model (bench/sim/calibrate_h200.py reads it).

Each point: {"prefill_tokens", "decode_seqs", "distinct_adapters", "rank", "kv_tokens", "step_s"} where
kv_tokens = KV tokens the step attends over (decode: sequences x context; prefill: each chunk's context).
Grid: decode batches x distinct adapters (rank 16, q/k/v/o) x contexts; prefill chunks (one sequence with
no adapter, or 8 sequences with 8 adapters); a few mixed prefill + decode steps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from random_model import ATTN
from steps import load_adapters, make_seqs_step, timed

DECODE_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
DISTINCT = (0, 1, 8, 32)
CONTEXTS = (256, 1024)
PREFILL_CHUNKS = (128, 512, 2048)
MIXED = ((512, 32, 1024), (128, 128, 256), (2048, 8, 1024), (512, 64, 256))  # (prefill, decode seqs, context)


def cost_grid(tiny: bool) -> dict[str, tuple]:
    if tiny:
        return dict(batches=(1, 4), distinct=(0, 2), contexts=(32,), chunks=(16, 32), mixed=((16, 2, 32),))
    return dict(batches=DECODE_BATCHES, distinct=DISTINCT, contexts=CONTEXTS, chunks=PREFILL_CHUNKS, mixed=MIXED)


def measure_cost_points(runner, pool_blocks: int, device: torch.device, warmup: int, reps: int, tiny: bool,
                        log: Callable[[dict], None]) -> list[dict]:  # type: ignore[no-untyped-def]  # fmt: skip
    grid = cost_grid(tiny)
    rank, vocab = 16, runner.config.vocab_size
    max_d = max(grid["distinct"])
    slots = load_adapters(runner, rank, ATTN, max_d, "cost") if max_d else []
    points: list[dict] = []

    def point(seqs: list[tuple[int, int, int]], prefill: int, decode: int, distinct: int) -> None:
        step = make_seqs_step(seqs, vocab, pool_blocks)
        t = timed(lambda: runner.execute(step), device, warmup, reps)
        kv = sum(ctx for _, ctx, _ in seqs)
        p = dict(prefill_tokens=prefill, decode_seqs=decode, distinct_adapters=distinct,
                 rank=rank if distinct else 0, kv_tokens=kv, step_s=t)  # fmt: skip
        points.append(p)
        log(dict(kind="cost", **p))

    def ids(n: int, distinct: int) -> list[int]:
        return [slots[i % distinct] if distinct else -1 for i in range(n)]

    for ctx in grid["contexts"]:
        for b in grid["batches"]:
            for d in grid["distinct"]:
                if d <= b:
                    point([(1, ctx, a) for a in ids(b, d)], 0, b, d)
    for n in grid["chunks"]:
        point([(n, n, -1)], n, 0, 0)
        d = min(8, max_d)
        if d and n % d == 0:
            point([(n // d, n // d, a) for a in ids(d, d)], n, 0, d)
    for prefill, b, ctx in grid["mixed"]:
        for d in sorted({0, min(8, max_d)}):
            seqs = [(prefill, prefill, ids(1, d)[0])] + [(1, ctx, a) for a in ids(b, d)]
            point(seqs, prefill, b, d)
    return points
