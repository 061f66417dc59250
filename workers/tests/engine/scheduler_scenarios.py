"""Randomized scheduler workloads (adapter limits, shared prompt prefixes, KV pressure, aborts, base-weight
resets) and a compact record of what a scheduler decides on them, step by step. test_scheduler_equivalence.py
runs today's Scheduler through them and compares with scheduler_decisions.json, which
record_scheduler_decisions.py wrote from the scheduler as it was before session 7.

A step is recorded as one string, `chunks|preempted|state`:
- chunks: the step's chunks in order, `id:start+num_tokens`, with `*` when the chunk samples (request `r12` is 12);
- preempted: the ids preempted in the step, in order;
- state: 8 hex digits of a hash of the state after the step (commit, finishes): the waiting and running order, each
  running sequence's block table, computed and registered counts, the free blocks and the prefix cache stats.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Callable, Iterator
from typing import Any

from inlaid_worker.engine.block_manager import BlockManager
from inlaid_worker.engine.sampling_params import SamplingParams
from inlaid_worker.engine.sequence import FinishReason, Sequence

ADAPTERS = [None, "a", "b", "c", "d", "e", "f"]
SEEDS = range(12)
STEPS = 150

MakeScheduler = Callable[..., Any]  # (block_manager, max_num_seqs=, max_num_batched_tokens=, max_loras=) -> scheduler


@dataclasses.dataclass
class Coverage:
    """What a run went through (so that a recording that stops covering something shows)."""

    admitted: int = 0  # sequences taken from the waiting queue
    preempted: int = 0
    prefill_chunks: int = 0  # chunks of a prefill that does not reach the last token (chunked prefill)
    adapter_passed_over: int = 0  # waiting sequences passed over for the adapter limit while a later one was admitted
    prefix_hit_tokens: int = 0
    aborts: int = 0
    resets: int = 0


def new_sequence(rng: random.Random, rid: str, prefixes: list[list[int]]) -> Sequence:
    head = rng.choice(prefixes) if rng.random() < 0.6 else []
    prompt = head + [rng.randrange(1, 50) for _ in range(rng.randint(1, 30))]
    adapter = rng.choice(ADAPTERS)
    params = SamplingParams(max_tokens=rng.randint(1, 12), temperature=0)
    key = 0 if adapter is None else ADAPTERS.index(adapter)
    return Sequence(rid, prompt, params, adapter=adapter, cache_key=key)


def state_hash(s: Any) -> str:
    state = (
        [q.request_id for q in s.waiting],
        [(q.request_id, tuple(q.block_table), q.num_computed_tokens, q.num_registered_blocks) for q in s.running],
        s.block_manager.num_free_blocks,
        dataclasses.astuple(s.block_manager.cache_stats()),
    )
    return hashlib.blake2b(repr(state).encode(), digest_size=4).hexdigest()


def run(seed: int, make: MakeScheduler, cov: Coverage) -> Iterator[str]:
    """Yields the record of each of the STEPS steps of workload `seed` on the scheduler `make` builds."""
    rng = random.Random(seed)
    blocks, size = rng.choice([(24, 4), (40, 4), (64, 2), (200, 8)])
    limits = dict(max_num_seqs=rng.choice([3, 6, 16]), max_num_batched_tokens=rng.choice([8, 24, 64]),
                  max_loras=rng.choice([0, 1, 2, 3]))  # fmt: skip
    s = make(BlockManager(blocks, size, rng.random() < 0.8), **limits)
    live: dict[str, Sequence] = {}
    prefixes = [[rng.randrange(1, 50) for _ in range(rng.randint(4, 24))] for _ in range(3)]
    n = 0
    for _ in range(STEPS):
        for _ in range(rng.choice([0, 0, 1, 1, 2, 6])):
            seq = new_sequence(rng, f"r{n}", prefixes)
            n += 1
            s.add(seq)
            live[seq.request_id] = seq
        if live and rng.random() < 0.1:  # an abort, waiting or running
            s.finish(live.pop(rng.choice(sorted(live))), FinishReason.ABORT)
            cov.aborts += 1
        if rng.random() < 0.03:
            s.block_manager.reset_cache()
            cov.resets += 1
        waiting = list(s.waiting)
        out = s.schedule()
        record = " ".join(f"{c.seq.request_id[1:]}:{c.start}+{c.num_tokens}{'*' if c.samples else ''}"
                          for c in out.chunks)  # fmt: skip
        record += "|" + " ".join(q.request_id[1:] for q in out.preempted)
        _count(cov, s, out, waiting)
        s.commit(out)
        for c in out.chunks:
            if c.samples:
                q = c.seq
                q.output_token_ids.append(sum(q.token_ids) % 47 + 1)
                if len(q.output_token_ids) >= q.sampling.max_tokens:
                    s.finish(q, FinishReason.LENGTH)
                    del live[q.request_id]
        yield record + "|" + state_hash(s)
    cov.prefix_hit_tokens = s.block_manager.cache_stats().hit_tokens


def _count(cov: Coverage, s: Any, out: Any, waiting: list[Sequence]) -> None:
    admitted = {id(c.seq) for c in out.chunks} & {id(q) for q in waiting}
    cov.admitted += len(admitted)
    cov.preempted += len(out.preempted)
    cov.prefill_chunks += sum(not c.samples for c in out.chunks)
    if s.max_loras and admitted:
        adapters = {q.adapter for q in s.running if q.adapter is not None}
        last = max(i for i, q in enumerate(waiting) if id(q) in admitted)
        cov.adapter_passed_over += sum(
            id(q) not in admitted and q.adapter is not None and q.adapter not in adapters
            and len(adapters) >= s.max_loras
            for q in waiting[:last]
        )  # fmt: skip
