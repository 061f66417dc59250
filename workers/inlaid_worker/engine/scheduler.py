"""Continuous batching: which sequences run in the next step, and how many of their tokens.

Each step first serves the running sequences, oldest first (one decode token each, or the next chunk of an
unfinished prefill), then admits waiting sequences in arrival order with (chunked) prefill, all under a
token budget and the KV block budget. When blocks run out, the newest running sequences are preempted by
recompute: their blocks are freed and they go back to the front of the waiting queue. Base-model and adapter
requests share the batch. With `max_loras` (the device's adapter slots; 0 = no limit) the running sequences
never use more distinct adapters than that: a waiting request whose adapter would exceed it is passed over
(it keeps its place in the queue) so that every running sequence's adapter stays resident.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from inlaid_worker.engine.block_manager import BlockManager
from inlaid_worker.engine.sequence import FinishReason, Sequence, SequenceStatus


@dataclass(frozen=True)
class ScheduledChunk:
    seq: Sequence
    start: int  # first token position computed in this step (= num_computed_tokens before it)
    num_tokens: int
    samples: bool  # the chunk reaches the sequence's last token, so its logits give the next token

    @property
    def end(self) -> int:
        return self.start + self.num_tokens


@dataclass
class SchedulerOutput:
    chunks: list[ScheduledChunk] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(c.num_tokens for c in self.chunks)

    @property
    def is_empty(self) -> bool:
        return not self.chunks


class Scheduler:
    def __init__(
        self, block_manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int, max_loras: int = 0
    ) -> None:
        if max_num_seqs <= 0 or max_num_batched_tokens <= 0 or max_loras < 0:
            raise ValueError("max_num_seqs and max_num_batched_tokens must be positive, max_loras >= 0")
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_loras = max_loras
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # oldest first

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        seq.status = SequenceStatus.WAITING
        self.waiting.append(seq)

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self._schedule_running(out, self.max_num_batched_tokens)
        if not out.preempted:
            self._admit_waiting(out, budget)
        return out

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
        adapters = {s.adapter for s in self.running if s.adapter is not None}
        passed_over: list[Sequence] = []
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            if self.max_loras and seq.adapter is not None and seq.adapter not in adapters:
                if len(adapters) >= self.max_loras:
                    passed_over.append(self.waiting.popleft())
                    continue
            n = min(seq.num_uncomputed_tokens, budget)
            if not self.block_manager.can_allocate(seq.block_table, seq.num_computed_tokens + n):
                break
            self.waiting.popleft()
            self.block_manager.allocate(seq.block_table, seq.num_computed_tokens + n)
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            out.chunks.append(self._chunk(seq, n))
            budget -= n
            if seq.adapter is not None:
                adapters.add(seq.adapter)
        self.waiting.extendleft(reversed(passed_over))

    @staticmethod
    def _chunk(seq: Sequence, n: int) -> ScheduledChunk:
        return ScheduledChunk(seq, seq.num_computed_tokens, n, seq.num_computed_tokens + n == seq.num_tokens)

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.block_manager.free(seq.block_table)
        seq.num_computed_tokens = 0
        seq.num_preemptions += 1
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)

    def commit(self, out: SchedulerOutput) -> None:
        """Marks the scheduled chunks as computed (their KV is now in the cache)."""
        for chunk in out.chunks:
            chunk.seq.num_computed_tokens = chunk.end

    def finish(self, seq: Sequence, reason: FinishReason) -> None:
        """Removes a sequence wherever it is and frees its blocks."""
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        elif seq.status is SequenceStatus.WAITING:
            self.waiting.remove(seq)
        self.block_manager.free(seq.block_table)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
