"""Continuous batching: which sequences run in the next step, and how many of their tokens.

Each step first serves the running sequences, oldest first (one decode token each, or the next chunk of an
unfinished prefill), then admits waiting sequences in arrival order with (chunked) prefill, all under a
token budget and the KV block budget. When blocks run out, the newest running sequences are preempted by
recompute: their blocks are freed and they go back to the front of the waiting queue. Base-model and adapter
requests share the batch. With `max_loras` (the device's adapter slots; 0 = no limit) the running sequences
never use more distinct adapters than that: a waiting request whose adapter would exceed it is passed over
(it keeps its place in the queue) so that every running sequence's adapter stays resident. The waiting queue
(waiting_queue.py) is indexed by adapter: passing over a long queue of other adapters' requests is not a scan.

Prefix caching (when the block manager has it on, see prefix_cache.py): a sequence being admitted takes the
longest chain of its full blocks that is cached (never its last token) by reference, starts with those tokens
computed, and prefills only the rest. Full blocks are registered in the cache at commit, once their KV is
computed. A waiting sequence whose next uncached block is being computed right now by a running sequence (the
same prompt prefix admitted a step earlier: `n` > 1 choices, a shared system prompt) is passed over, keeping
its place, until that block is cached, so that the prefix is computed once.

Prompt logprobs: a sequence that asks for them takes from the cache only the blocks whose positions it has scored
already (none on its first admission; after a preemption, what it scored before), so it computes every prompt
position itself once; it never waits for a pending shared prefix either.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from inlaid_worker.engine.block_manager import BlockManager
from inlaid_worker.engine.prefix_cache import extend_chain, max_cached_blocks, root_hash
from inlaid_worker.engine.sequence import FinishReason, Sequence, SequenceStatus
from inlaid_worker.engine.waiting_queue import WaitingQueue


@dataclass(frozen=True)
class ScheduledChunk:
    seq: Sequence
    start: int  # first token position computed in this step (= num_computed_tokens before it)
    num_tokens: int
    samples: bool  # the chunk reaches the sequence's last token, so its logits give the next token

    @property
    def end(self) -> int:
        return self.start + self.num_tokens


@dataclass(frozen=True)
class AheadPlan:
    """What Scheduler.schedule_ahead schedules (async scheduling, engine/async_step.py)."""

    fed: list[Sequence]  # running, in running order: a decode row each, its input token not read yet (fed)
    unread: Collection[Sequence]  # running sequences with an unread token (fed, or left out: it ends them)
    extend: bool = False  # also the other running sequences' next chunks and admissions
    held_adapters: frozenset[str] = frozenset()  # adapters of the step in flight (count as running)


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
        self.waiting = WaitingQueue()  # arrival order, preempted sequences at the front
        self.wait_for_shared_prefix = True  # prefix caching: pass over a sequence whose prefix is being computed
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
        bm = self.block_manager
        room = bm.block_size
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            # seq.num_tokens etc. inlined: this runs for every running sequence, every step
            computed, total = seq.num_computed_tokens, len(seq.prompt_token_ids) + len(seq.output_token_ids)
            n = min(total - computed, budget)
            reach = computed + n
            if len(seq.block_table) * room < reach:  # needs new blocks (most decode steps do not)
                while not bm.can_allocate(seq.block_table, reach):
                    victim = self.running[-1]
                    self._preempt(victim)
                    out.preempted.append(victim)
                    if victim is seq:
                        break
                if seq.status is not SequenceStatus.RUNNING:
                    break  # seq preempted itself: nothing newer is left running
                bm.allocate(seq.block_table, reach)
            out.chunks.append(ScheduledChunk(seq, computed, n, reach == total))  # self._chunk(seq, n)
            budget -= n
            i += 1
        return budget

    def schedule_ahead(self, plan: AheadPlan) -> SchedulerOutput | None:
        """Async scheduling (engine/async_step.py): the step launched before the host reads the previous step's
        sampled tokens. First plan.fed (running, in running order, each with one sampled token the host has not read
        yet): one chunk each at num_computed_tokens that computes that token, with a new block where the token starts
        one. With plan.extend also, under the rest of the token budget, the next chunk of every other running
        sequence that is not in plan.unread (prefill continuations; their tokens are on the host), in running order,
        then admissions as schedule() makes them: sequences of plan.unread stay counted (max_num_seqs, blocks) and
        the in-flight step's adapters (plan.held_adapters) count as running for max_loras. None, with nothing
        changed, when the budget does not cover the fed rows or the free blocks do not cover the running chunks
        (the engine then reads the tokens and calls schedule(), which may preempt); admissions stop where blocks
        run out, never preempting. The caller marks the chunks computed; commit() registers their blocks once the
        fed tokens are known."""
        bm = self.block_manager
        budget = self.max_num_batched_tokens - len(plan.fed)
        if budget < 0:
            return None
        chunks = [(seq, 1) for seq in plan.fed]
        if plan.extend:
            unread = plan.unread
            for seq in self.running:
                if budget <= 0:
                    break
                if seq in unread:
                    continue
                n = min(seq.num_tokens - seq.num_computed_tokens, budget)
                if n > 0:
                    chunks.append((seq, n))
                    budget -= n
        room = bm.block_size
        grow = [(seq, n) for seq, n in chunks if len(seq.block_table) * room < seq.num_computed_tokens + n]
        if sum(bm.num_missing(seq.block_table, seq.num_computed_tokens + n) for seq, n in grow) > bm.num_free_blocks:
            return None
        for seq, n in grow:
            bm.allocate(seq.block_table, seq.num_computed_tokens + n)
        out = SchedulerOutput()
        num_fed = len(plan.fed)
        for i, (seq, n) in enumerate(chunks):
            start = seq.num_computed_tokens
            out.chunks.append(ScheduledChunk(seq, start, n, i < num_fed or start + n == seq.num_tokens))
        if plan.extend:
            self._admit_waiting(out, budget, plan.held_adapters)
        return out if out.chunks else None

    def _admit_waiting(self, out: SchedulerOutput, budget: int, held: frozenset[str] = frozenset()) -> None:
        """held: adapters that count as running's (a step in flight still reads them: schedule_ahead)."""
        if not self.waiting or budget <= 0 or len(self.running) >= self.max_num_seqs:
            return
        bm = self.block_manager
        adapters = {s.adapter for s in self.running if s.adapter is not None} | held
        pending: set[bytes] = set()
        if bm.enable_caching and self.wait_for_shared_prefix:
            pending = self._pending_hashes()
        scan = self.waiting.scan()  # front to back; passed-over sequences keep their place
        while budget > 0 and len(self.running) < self.max_num_seqs:
            seq = scan.peek()
            if seq is None:
                break
            if self.max_loras and seq.adapter is not None and seq.adapter not in adapters:
                if len(adapters) >= self.max_loras:  # and so for every other adapter for the rest of the step
                    scan.restrict(adapters)
                    continue
            cached = self._match_prefix(seq)
            if pending and self._next_block_pending(seq, len(cached), pending):
                scan.skip()  # its prefix is being computed: take it next step
                continue
            hit = len(cached) * bm.block_size
            n = min(seq.num_tokens - hit, budget)
            need = bm.blocks_for(hit + n) - len(cached) + bm.num_taken_from_free(cached)
            if need > bm.num_free_blocks:
                break
            scan.take()
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

    # ---- prefix cache ------------------------------------------------------------------------------------
    def _chain(self, seq: Sequence, num_blocks: int) -> list[bytes]:
        """The hashes of seq's first `num_blocks` full blocks under the current base generation."""
        bm = self.block_manager
        if seq.hash_generation != bm.generation:  # new, or the base changed since its hashes were made
            seq.block_hashes = []
            seq.hash_generation = bm.generation
        if len(seq.block_hashes) < num_blocks:
            root = root_hash(seq.cache_key, bm.generation, bm.block_size)
            extend_chain(seq.block_hashes, root, seq.token_ids, bm.block_size, num_blocks)
        return seq.block_hashes[:num_blocks]

    def _match_prefix(self, seq: Sequence) -> list[int]:
        """The cached blocks a waiting sequence (nothing computed, no blocks) may start with."""
        bm = self.block_manager
        if not bm.enable_caching or seq.num_computed_tokens or seq.block_table:
            return []
        return bm.match(self._chain(seq, self._cache_limit(seq)))

    def _cache_limit(self, seq: Sequence) -> int:
        """Full blocks seq may take from the cache (prompt logprobs: only positions it has scored)."""
        bs = self.block_manager.block_size
        limit = max_cached_blocks(seq.num_tokens, bs)
        return min(limit, seq.prompt_logprobs_done // bs) if seq.prompt_logprobs_missing else limit

    def _pending_hashes(self) -> set[bytes]:
        """Hashes of blocks that running sequences hold but have not computed (and registered) yet."""
        gen = self.block_manager.generation
        return {h for s in self.running if s.hash_generation == gen for h in s.block_hashes[s.num_registered_blocks :]}

    def _next_block_pending(self, seq: Sequence, num_cached: int, pending: set[bytes]) -> bool:
        if seq.prompt_logprobs_missing:  # it computes its prompt itself
            return False
        limit = max_cached_blocks(seq.num_tokens, self.block_manager.block_size)
        return num_cached < limit and seq.block_hashes[num_cached] in pending

    def _register(self, seq: Sequence) -> None:
        """Registers seq's newly completed full blocks (KV computed) in the prefix cache."""
        bm = self.block_manager
        full = seq.num_computed_tokens // bm.block_size
        if full <= seq.num_registered_blocks or seq.hash_generation != bm.generation:
            return  # nothing new, or its KV was (partly) computed by an older base: never cached
        hashes = self._chain(seq, full)
        for i in range(seq.num_registered_blocks, full):
            bm.register(seq.block_table[i], hashes[i])
        seq.num_registered_blocks = full

    @staticmethod
    def _chunk(seq: Sequence, n: int) -> ScheduledChunk:
        return ScheduledChunk(seq, seq.num_computed_tokens, n, seq.num_computed_tokens + n == seq.num_tokens)

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.block_manager.free(seq.block_table)  # its registered blocks stay cached (evictable)
        seq.num_computed_tokens = 0
        seq.num_registered_blocks = 0
        seq.num_preemptions += 1
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)

    def commit(self, out: SchedulerOutput) -> None:
        """Marks the scheduled chunks as computed (their KV is now in the cache) and registers the full blocks
        they completed in the prefix cache."""
        caching = self.block_manager.enable_caching
        bs = self.block_manager.block_size
        for chunk in out.chunks:
            seq = chunk.seq
            seq.num_computed_tokens = end = chunk.start + chunk.num_tokens
            if caching and end // bs > seq.num_registered_blocks:  # _register's first test: a block completed
                self._register(seq)

    def finish(self, seq: Sequence, reason: FinishReason) -> None:
        """Removes a sequence wherever it is and frees its blocks."""
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        elif seq.status is SequenceStatus.WAITING:
            self.waiting.remove(seq)
        self.block_manager.free(seq.block_table)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
