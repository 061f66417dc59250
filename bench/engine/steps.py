"""Step inputs and timing for the engine benchmarks (random tokens; speed does not depend on values).

Sequences get disjoint block tables, wrapped modulo the runner's KV pool when the grid needs more KV than the
pool holds (shared blocks are then read by several sequences, far apart in time: no cache reuse on a
pool of gigabytes; writes may collide, which changes values, not speed).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from inlaid_worker.model.step_input import StepInput

BLOCK = 16


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_all(fn: Callable[[], object], device: torch.device, warmup: int, reps: int) -> list[float]:
    """Wall times of `reps` synchronised calls of fn(), after `warmup` untimed ones (every time kept)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def timed(fn: Callable[[], object], device: torch.device, warmup: int, reps: int) -> float:
    """Median wall time of fn() (synchronised), after `warmup` untimed calls."""
    times = timed_all(fn, device, warmup, reps)
    return sorted(times)[len(times) // 2]


def make_seqs_step(seqs: Sequence[tuple[int, int, int]], vocab: int, pool_blocks: int) -> StepInput:
    """seqs: (new tokens, context after the step, adapter slot or -1) per sequence, in row order."""
    width = max(-(-ctx // BLOCK) for _, ctx, _ in seqs)
    tables = torch.zeros(len(seqs), width, dtype=torch.int64)
    tok, pos, ids, slot_map, starts, lens, next_block = [], [], [], [], [0], [], 0
    for s, (query, ctx, slot) in enumerate(seqs):
        if not 0 < query <= ctx:
            raise ValueError(f"sequence {s}: need 0 < new tokens ({query}) <= context ({ctx})")
        n = -(-ctx // BLOCK)
        tables[s, :n] = (torch.arange(next_block, next_block + n)) % pool_blocks
        next_block += n
        p = torch.arange(ctx - query, ctx)
        pos.append(p)
        slot_map.append(tables[s, p // BLOCK] * BLOCK + p % BLOCK)
        ids.append(torch.full((query,), slot, dtype=torch.int64))
        starts.append(starts[-1] + query)
        lens.append(ctx)
    t = starts[-1]
    tok = torch.randint(3, vocab, (t,))
    return StepInput(
        token_ids=tok, positions=torch.cat(pos), adapter_ids=torch.cat(ids), slot_mapping=torch.cat(slot_map),
        query_start_loc=torch.tensor(starts), context_lens=torch.tensor(lens), block_tables=tables,
        logits_indices=torch.tensor(starts[1:]) - 1,
    )  # fmt: skip


def make_step(batch: int, query: int, context: int, slots: list[int], vocab: int, pool_blocks: int) -> StepInput:
    """`batch` sequences, each with `query` new tokens ending at position context-1."""
    return make_seqs_step([(query, context, slots[i]) for i in range(batch)], vocab, pool_blocks)


def load_adapters(runner, rank: int, targets: tuple[str, ...], count: int, tag: str) -> list[int]:  # type: ignore[no-untyped-def]
    """Replace the runner's adapters with `count` random ones of `rank` on `targets`; returns their slots."""
    from random_model import random_adapter

    for name in list(runner.adapter_slots):
        runner.remove_adapter(name)
    adapter = random_adapter(runner.config, rank, targets)
    return [runner.add_adapter(f"{tag}-r{rank}-{i}", adapter) for i in range(count)]
