"""Today's Scheduler (adapter-indexed waiting queue, allocation only when a row needs a block) makes the same
decisions as the reference (scheduler_reference.py: the deque scan as it was) on randomized workloads: every
step's chunks and preemptions, the waiting and running order, block tables and free blocks, finishes and aborts,
with adapter limits, prefix sharing (cache hits and shared prefixes being computed), KV pressure (preemption) and
base-weight resets. The WaitingQueue against a deque model, op by op."""

from __future__ import annotations

import random
from collections import deque

import pytest
from inlaid_worker.engine.block_manager import BlockManager
from inlaid_worker.engine.sampling_params import SamplingParams
from inlaid_worker.engine.scheduler import Scheduler
from inlaid_worker.engine.sequence import FinishReason, Sequence, SequenceStatus
from inlaid_worker.engine.waiting_queue import WaitingQueue
from scheduler_reference import DequeScheduler

ADAPTERS = [None, "a", "b", "c", "d", "e", "f"]


def seqs_for(rng: random.Random, rid: str, prefixes: list[list[int]]) -> tuple[Sequence, Sequence]:
    """The same request twice (one per scheduler)."""
    head = rng.choice(prefixes) if rng.random() < 0.6 else []
    prompt = head + [rng.randrange(1, 50) for _ in range(rng.randint(1, 30))]
    adapter = rng.choice(ADAPTERS)
    params = SamplingParams(max_tokens=rng.randint(1, 12), temperature=0)
    key = 0 if adapter is None else ADAPTERS.index(adapter)
    return tuple(Sequence(rid, prompt, params, adapter=adapter, cache_key=key) for _ in range(2))  # type: ignore[return-value]


def state(s: Scheduler) -> tuple:
    return (
        [q.request_id for q in s.waiting],
        [q.request_id for q in s.running],
        [(q.request_id, tuple(q.block_table), q.num_computed_tokens, q.num_registered_blocks) for q in s.running],
        s.block_manager.num_free_blocks,
        s.block_manager.cache_stats(),
    )


def step(s: Scheduler, seqs: dict[str, Sequence]) -> tuple:
    out = s.schedule()
    decisions = ([(c.seq.request_id, c.start, c.num_tokens, c.samples) for c in out.chunks],
                 [q.request_id for q in out.preempted])  # fmt: skip
    s.commit(out)
    for c in out.chunks:
        if c.samples:
            q = c.seq
            q.output_token_ids.append(sum(q.token_ids) % 47 + 1)
            if len(q.output_token_ids) >= q.sampling.max_tokens:
                s.finish(q, FinishReason.LENGTH)
                del seqs[q.request_id]
    return decisions


@pytest.mark.parametrize("seed", range(12))
def test_decisions_match_the_reference_scheduler(seed: int) -> None:
    rng = random.Random(seed)
    blocks, size = rng.choice([(24, 4), (40, 4), (64, 2), (200, 8)])
    limits = dict(max_num_seqs=rng.choice([3, 6, 16]), max_num_batched_tokens=rng.choice([8, 24, 64]),
                  max_loras=rng.choice([0, 1, 2, 3]))  # fmt: skip
    caching = rng.random() < 0.8
    new, ref = (Scheduler(BlockManager(blocks, size, caching), **limits),
                DequeScheduler(BlockManager(blocks, size, caching), **limits))  # fmt: skip
    live: tuple[dict[str, Sequence], dict[str, Sequence]] = ({}, {})
    prefixes = [[rng.randrange(1, 50) for _ in range(rng.randint(4, 24))] for _ in range(3)]
    n = 0
    for _ in range(150):
        for _ in range(rng.choice([0, 0, 1, 1, 2, 6])):
            a, b = seqs_for(rng, f"r{n}", prefixes)
            n += 1
            new.add(a)
            ref.add(b)
            live[0][a.request_id], live[1][b.request_id] = a, b
        if live[0] and rng.random() < 0.1:  # an abort, waiting or running
            rid = rng.choice(sorted(live[0]))
            for s, seqs in zip((new, ref), live, strict=True):
                s.finish(seqs.pop(rid), FinishReason.ABORT)
        if rng.random() < 0.03:
            new.block_manager.reset_cache()
            ref.block_manager.reset_cache()
        assert step(new, live[0]) == step(ref, live[1])
        assert state(new) == state(ref)
        assert sorted(live[0]) == sorted(live[1])
    assert n > 100


def test_a_long_queue_of_other_adapters_is_passed_over_in_order() -> None:
    s = Scheduler(BlockManager(256, 4), max_num_seqs=8, max_num_batched_tokens=64, max_loras=2)
    params = SamplingParams(max_tokens=50, temperature=0)
    for i, adapter in enumerate(["a", "b"]):
        s.add(Sequence(f"run{i}", [1, 2, 3], params, adapter=adapter))
    s.commit(s.schedule())
    queued = [Sequence(f"w{i}", [1, 2, 3], params, adapter="xyz"[i % 3]) for i in range(300)]
    queued.insert(150, Sequence("base", [4, 5], params))
    queued.insert(250, Sequence("a2", [6, 7], params, adapter="a"))
    for q in queued:
        s.add(q)
    out = s.schedule()
    assert [c.seq.request_id for c in out.chunks] == ["run0", "run1", "base", "a2"]
    assert [q.request_id for q in s.waiting] == [q.request_id for q in queued if q.request_id not in ("base", "a2")]
    assert all(q.status is SequenceStatus.WAITING for q in s.waiting)


def test_waiting_queue_matches_a_deque() -> None:
    rng = random.Random(7)
    queue, model = WaitingQueue(), deque()
    made = 0
    for _ in range(2000):
        op = rng.random()
        if op < 0.35 or not model:
            q = Sequence(f"s{made}", [1], SamplingParams(), adapter=rng.choice(ADAPTERS[:4]))
            made += 1
            if rng.random() < 0.3:
                queue.appendleft(q)
                model.appendleft(q)
            else:
                queue.append(q)
                model.append(q)
        elif op < 0.5:
            q = rng.choice(list(model))
            queue.remove(q)
            model.remove(q)
        else:  # a scan: take, skip or restrict at random; the model passes over as the old loop did
            scan, passed, allowed = queue.scan(), [], None
            for _ in range(rng.randint(1, 12)):
                while model and allowed is not None and model[0].adapter not in allowed:
                    passed.append(model.popleft())
                seq = scan.peek()
                assert seq is (model[0] if model else None)
                if seq is None:
                    break
                r = rng.random()
                if r < 0.4:
                    assert scan.take() is model.popleft()
                elif r < 0.85:
                    scan.skip()
                    passed.append(model.popleft())
                elif allowed is None:
                    allowed = set(rng.sample(ADAPTERS[1:4], 1)) | {None}
                    scan.restrict({a for a in allowed if a is not None})
            model.extendleft(reversed(passed))
        assert list(queue) == list(model) and len(queue) == len(model)
        if model:
            assert queue[0] is model[0] and queue[len(model) - 1] is model[-1]
    with pytest.raises(ValueError):
        queue.remove(Sequence("never", [1], SamplingParams()))
