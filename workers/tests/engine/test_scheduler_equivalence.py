"""Today's Scheduler (adapter-indexed waiting queue, allocation only when a row needs a block) makes the same
decisions as the scheduler before session 7 (the deque scan) on randomized workloads: every step's chunks and
preemptions, and a hash of the waiting and running order, block tables, free blocks and cache stats after it,
with adapter limits, prefix sharing (cache hits and shared prefixes being computed), KV pressure (preemption),
aborts and base-weight resets. The old scheduler's decisions are recorded in scheduler_decisions.json
(record_scheduler_decisions.py; workloads and format in scheduler_scenarios.py). The WaitingQueue against a deque
model, op by op."""

from __future__ import annotations

import dataclasses
import json
import random
from collections import deque
from itertools import zip_longest
from pathlib import Path

import pytest
from inlaid_worker.engine.block_manager import BlockManager
from inlaid_worker.engine.sampling_params import SamplingParams
from inlaid_worker.engine.scheduler import Scheduler
from inlaid_worker.engine.sequence import Sequence, SequenceStatus
from inlaid_worker.engine.waiting_queue import WaitingQueue
from scheduler_scenarios import ADAPTERS, SEEDS, STEPS, Coverage, run

RECORDED = json.loads(Path(__file__).with_name("scheduler_decisions.json").read_text())


def test_the_recording_covers_every_workload_and_what_they_exercise() -> None:
    assert RECORDED["steps_per_seed"] == STEPS and list(RECORDED["seeds"]) == [str(s) for s in SEEDS]
    assert all(len(r["steps"]) == STEPS for r in RECORDED["seeds"].values())
    for name in Coverage.__dataclass_fields__:  # admission, preemption, chunked prefill, adapter limit, ...
        assert sum(r["covers"][name] for r in RECORDED["seeds"].values()) > 0, name


@pytest.mark.parametrize("seed", SEEDS)
def test_decisions_match_the_recorded_ones(seed: int) -> None:
    recorded = RECORDED["seeds"][str(seed)]
    cov = Coverage()
    for i, (got, want) in enumerate(zip_longest(run(seed, Scheduler, cov), recorded["steps"])):
        # 'chunks|preempted|state hash' (scheduler_scenarios.py); the same decisions with another hash: the
        # waiting/running order, a block table, the free blocks or the cache stats differ after the step
        assert got == want, f"seed {seed}, step {i}: today's scheduler decided {got!r}, the recording {want!r}"
    assert dataclasses.asdict(cov) == recorded["covers"]


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
