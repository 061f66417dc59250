"""The scheduler's admission and running-sequence passes as they were before the host-overhead work (a deque
waiting queue scanned front to back, can_allocate / allocate for every running sequence), kept verbatim as the
reference that test_scheduler_equivalence.py compares today's Scheduler with, decision by decision."""

from __future__ import annotations

from collections import deque

from inlaid_worker.engine.block_manager import BlockManager
from inlaid_worker.engine.scheduler import Scheduler, SchedulerOutput
from inlaid_worker.engine.sequence import Sequence, SequenceStatus


class DequeScheduler(Scheduler):
    def __init__(
        self, block_manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int, max_loras: int = 0
    ) -> None:
        super().__init__(block_manager, max_num_seqs, max_num_batched_tokens, max_loras)
        self.waiting: deque[Sequence] = deque()  # type: ignore[assignment]

    def _schedule_running(self, out: SchedulerOutput, budget: int) -> int:
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            n = min(seq.num_uncomputed_tokens, budget)
            while not self.block_manager.can_allocate(seq.block_table, seq.num_computed_tokens + n):
                victim = self.running[-1]
                self._preempt(victim)
                out.preempted.append(victim)
                if victim is seq:
                    break
            if seq.status is not SequenceStatus.RUNNING:
                break  # seq preempted itself: nothing newer is left running
            self.block_manager.allocate(seq.block_table, seq.num_computed_tokens + n)
            out.chunks.append(self._chunk(seq, n))
            budget -= n
            i += 1
        return budget

    def _admit_waiting(self, out: SchedulerOutput, budget: int) -> None:
        bm = self.block_manager
        adapters = {s.adapter for s in self.running if s.adapter is not None}
        pending: set[bytes] = set()
        if bm.enable_caching and self.wait_for_shared_prefix and self.waiting:
            pending = self._pending_hashes()
        passed_over: list[Sequence] = []
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            if self.max_loras and seq.adapter is not None and seq.adapter not in adapters:
                if len(adapters) >= self.max_loras:
                    passed_over.append(self.waiting.popleft())
                    continue
            cached = self._match_prefix(seq)
            if pending and self._next_block_pending(seq, len(cached), pending):
                passed_over.append(self.waiting.popleft())  # its prefix is being computed: take it next step
                continue
            hit = len(cached) * bm.block_size
            n = min(seq.num_tokens - hit, budget)
            need = bm.blocks_for(hit + n) - len(cached) + bm.num_taken_from_free(cached)
            if need > bm.num_free_blocks:
                break
            self.waiting.popleft()
            if seq.prompt_cached_tokens is None:  # a resumed run's generated tail is not prompt
                seq.prompt_cached_tokens = min(hit, seq.num_prompt_tokens - seq.resumed_output_tokens)
            if bm.enable_caching:
                bm.record_lookup(seq.num_tokens, hit)
                bm.acquire(seq.block_table, cached)
                seq.num_computed_tokens = seq.num_cached_tokens = hit
                seq.num_registered_blocks = len(cached)
                if self.wait_for_shared_prefix:
                    pending.update(seq.block_hashes[len(cached) :])
            bm.allocate(seq.block_table, hit + n)
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            out.chunks.append(self._chunk(seq, n))
            budget -= n
            if seq.adapter is not None:
                adapters.add(seq.adapter)
        self.waiting.extendleft(reversed(passed_over))
