"""Test helpers for the pure scheduler / block manager tests (no model, no torch)."""

from __future__ import annotations

from inlaid_worker.engine.block_manager import BlockManager
from inlaid_worker.engine.scheduler import Scheduler, SchedulerOutput
from inlaid_worker.engine.sequence import FinishReason


def run_step(s: Scheduler) -> SchedulerOutput:
    """Schedules, 'computes' and appends a token (a function of the tokens so far) to sampling sequences
    (finishing them at max_tokens)."""
    out = s.schedule()
    s.commit(out)
    for c in out.chunks:
        if c.samples:
            c.seq.output_token_ids.append(sum(c.seq.token_ids) % 97)
            if len(c.seq.output_token_ids) >= c.seq.sampling.max_tokens:
                s.finish(c.seq, FinishReason.LENGTH)
    return out


def check_ref_counts(bm: BlockManager, tables: list[list[int]]) -> None:
    """Every block's ref count is the number of tables holding it; the free count is the blocks no table holds."""
    held: dict[int, int] = {}
    for t in tables:
        for b in t:
            held[b] = held.get(b, 0) + 1
    for b in range(bm.num_blocks):
        assert bm.ref_count(b) == held.get(b, 0)
    assert bm.num_free_blocks == bm.num_blocks - len(held)
