"""Scheduler: mixed prefill + decode, token budget, KV admission, preemption newest-first and resume."""

from inlaid_worker.engine.block_manager import BlockManager
from inlaid_worker.engine.sampling_params import SamplingParams
from inlaid_worker.engine.scheduler import Scheduler
from inlaid_worker.engine.sequence import FinishReason, Sequence, SequenceStatus
from scheduler_helpers import run_step


def make_seq(rid: str, prompt_len: int, max_tokens: int = 4) -> Sequence:
    return Sequence(rid, list(range(1, prompt_len + 1)), SamplingParams(max_tokens=max_tokens, temperature=0))


def test_decode_and_chunked_prefill_share_a_step_under_the_token_budget() -> None:
    s = Scheduler(BlockManager(64, 4), max_num_seqs=8, max_num_batched_tokens=10)
    a = make_seq("a", 6)
    s.add(a)
    out = run_step(s)
    assert [(c.seq.request_id, c.start, c.num_tokens, c.samples) for c in out.chunks] == [("a", 0, 6, True)]
    b = make_seq("b", 20)
    s.add(b)
    out = run_step(s)  # a decodes one token; b gets the remaining 9 of the budget
    assert [(c.seq.request_id, c.start, c.num_tokens, c.samples) for c in out.chunks] == [
        ("a", 6, 1, True),
        ("b", 0, 9, False),
    ]
    out = run_step(s)
    assert [(c.seq.request_id, c.num_tokens) for c in out.chunks] == [("a", 1), ("b", 9)]
    out = run_step(s)
    assert [(c.seq.request_id, c.start, c.num_tokens, c.samples) for c in out.chunks] == [
        ("a", 8, 1, True),
        ("b", 18, 2, True),
    ]
    assert out.num_tokens == 3 and b.output_token_ids


def test_admission_respects_max_num_seqs_and_kv_blocks() -> None:
    s = Scheduler(BlockManager(4, 4), max_num_seqs=2, max_num_batched_tokens=100)
    seqs = [make_seq(str(i), 4) for i in range(3)]
    for q in seqs:
        s.add(q)
    out = run_step(s)
    assert [c.seq.request_id for c in out.chunks] == ["0", "1"]
    assert [q.status for q in seqs] == [
        SequenceStatus.RUNNING,
        SequenceStatus.RUNNING,
        SequenceStatus.WAITING,
    ]
    s2 = Scheduler(BlockManager(3, 4), max_num_seqs=8, max_num_batched_tokens=100)
    big, small = make_seq("big", 12), make_seq("small", 1)
    s2.add(big)
    s2.add(small)
    out = run_step(s2)  # big takes all 3 blocks; small waits (FIFO, no overtaking)
    assert [c.seq.request_id for c in out.chunks] == ["big"] and small.status is SequenceStatus.WAITING


def test_preemption_takes_the_newest_and_resumes_it_by_recompute() -> None:
    s = Scheduler(BlockManager(4, 4), max_num_seqs=8, max_num_batched_tokens=100)
    a, b = make_seq("a", 4, max_tokens=6), make_seq("b", 4, max_tokens=6)
    s.add(a)
    s.add(b)
    run_step(s)  # both prefilled: one full block each
    run_step(s)  # both need a 2nd block: 4 blocks used
    assert s.block_manager.num_free_blocks == 0
    for _ in range(3):
        run_step(s)
    out = run_step(s)  # a needs a 3rd block -> b (newest) is preempted
    assert b in out.preempted and b.status is SequenceStatus.WAITING and b.num_computed_tokens == 0
    assert b.num_preemptions == 1 and s.waiting[0] is b
    while s.has_work:
        run_step(s)
    assert s.block_manager.num_free_blocks == 4
    # Without memory pressure the same sequences produce the same tokens.
    s3 = Scheduler(BlockManager(64, 4), max_num_seqs=8, max_num_batched_tokens=100)
    a2, b2 = make_seq("a", 4, max_tokens=6), make_seq("b", 4, max_tokens=6)
    s3.add(a2)
    s3.add(b2)
    while s3.has_work:
        run_step(s3)
    assert (a.output_token_ids, b.output_token_ids) == (a2.output_token_ids, b2.output_token_ids)
    assert b2.num_preemptions == 0


def test_a_lone_sequence_that_outgrows_memory_preempts_itself() -> None:
    s = Scheduler(BlockManager(2, 2), max_num_seqs=8, max_num_batched_tokens=100)
    a = make_seq("a", 4, max_tokens=10)
    s.add(a)
    run_step(s)
    out = run_step(s)
    assert out.preempted == [a] and out.chunks == [] and a.status is SequenceStatus.WAITING


def test_finish_frees_blocks_from_either_queue() -> None:
    bm = BlockManager(8, 4)
    s = Scheduler(bm, max_num_seqs=8, max_num_batched_tokens=100)
    a, b = make_seq("a", 8), make_seq("b", 8)
    s.add(a)
    run_step(s)
    s.add(b)
    s.finish(a, FinishReason.ABORT)
    s.finish(b, FinishReason.ABORT)
    assert not s.has_work and bm.num_free_blocks == 8 and a.finish_reason is FinishReason.ABORT
