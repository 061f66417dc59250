"""Scheduler with max_loras: never more distinct adapters among running sequences than device slots."""

from inlaid_worker.engine.block_manager import BlockManager
from inlaid_worker.engine.sampling_params import SamplingParams
from inlaid_worker.engine.scheduler import Scheduler
from inlaid_worker.engine.sequence import FinishReason, Sequence


def seq(rid: str, adapter: str | None) -> Sequence:
    return Sequence(rid, [1, 2, 3], SamplingParams(max_tokens=2, temperature=0), adapter=adapter)


def running_adapters(s: Scheduler) -> set[str]:
    return {q.adapter for q in s.running if q.adapter is not None}


def test_requests_over_the_adapter_limit_wait_in_order_and_others_pass() -> None:
    s = Scheduler(BlockManager(64, 4), max_num_seqs=8, max_num_batched_tokens=100, max_loras=2)
    seqs = [seq("1", "a"), seq("2", "b"), seq("3", "c"), seq("4", None), seq("5", "a"), seq("6", "d")]
    for q in seqs:
        s.add(q)
    out = s.schedule()
    assert [c.seq.request_id for c in out.chunks] == ["1", "2", "4", "5"]  # c and d passed over
    assert [q.request_id for q in s.waiting] == ["3", "6"]  # kept their order at the queue's front
    s.commit(out)
    assert running_adapters(s) == {"a", "b"}
    s.finish(seqs[1], FinishReason.LENGTH)  # b leaves: one adapter slot frees up, c (the oldest) takes it
    out = s.schedule()
    assert [c.seq.request_id for c in out.chunks] == ["1", "4", "5", "3"]
    assert running_adapters(s) == {"a", "c"} and [q.request_id for q in s.waiting] == ["6"]


def test_zero_means_unlimited() -> None:
    s = Scheduler(BlockManager(64, 4), max_num_seqs=8, max_num_batched_tokens=100)
    for i, a in enumerate("abcde"):
        s.add(seq(str(i), a))
    assert len(s.schedule().chunks) == 5
