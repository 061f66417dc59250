"""Prefix caching, pure: hash chains, matching, ref counts, LRU eviction, adapter / base keys, invalidation."""

from __future__ import annotations

import random

import pytest
from inlaid_worker.engine.block_manager import BlockManager
from inlaid_worker.engine.prefix_cache import block_hash, chain, extend_chain, max_cached_blocks, root_hash
from inlaid_worker.engine.sampling_params import SamplingParams
from inlaid_worker.engine.scheduler import Scheduler, SchedulerOutput
from inlaid_worker.engine.sequence import FinishReason, Sequence
from scheduler_helpers import check_ref_counts, run_step

BS = 4


def seq(rid: str, tokens: list[int], max_tokens: int = 3, cache_key: int = 0) -> Sequence:
    return Sequence(rid, tokens, SamplingParams(max_tokens=max_tokens, temperature=0), cache_key=cache_key)


def drain(s: Scheduler) -> list[SchedulerOutput]:
    outs = []
    while s.has_work:
        outs.append(run_step(s))
        assert len(outs) < 1000
    return outs


def check_invariants(bm: BlockManager, tables: list[list[int]]) -> None:
    check_ref_counts(bm, tables)
    held = {b for t in tables for b in t}
    free = list(bm._free) + list(bm._evictable)
    assert len(set(free)) == len(free) == bm.num_free_blocks and not set(free) & set(held)
    assert set(bm._evictable) <= set(bm._hash_of)  # evictable = cached and unreferenced
    assert not set(bm._free) & set(bm._hash_of)
    assert {bm._block_of[h] for h in bm._hash_of.values()} == set(bm._hash_of)  # maps are inverse


# ---- hashes ------------------------------------------------------------------------------------------------
def test_hash_chain_covers_parent_tokens_and_root() -> None:
    root = root_hash(0, 0, BS)
    toks = list(range(1, 14))  # 3 full blocks + 1 token
    h = chain(root, toks, BS)
    assert len(h) == 3 and len(set(h)) == 3 and all(len(x) == 16 for x in h)
    assert h[0] == block_hash(root, toks[:4]) and h[1] == block_hash(h[0], toks[4:8])
    # same tokens in block 2, a different block 0: every later hash differs (the chain covers the prefix)
    other = chain(root, [99] + toks[1:], BS)
    assert all(a != b for a, b in zip(h, other, strict=True))
    # a change inside block 2 changes only block 2
    changed = chain(root, toks[:9] + [0] + toks[10:], BS)
    assert changed[:2] == h[:2] and changed[2] != h[2]
    # the adapter key, the base generation and the block size are in the root
    assert chain(root_hash(1, 0, BS), toks, BS)[0] != h[0]
    assert chain(root_hash(0, 1, BS), toks, BS)[0] != h[0]
    assert root_hash(0, 0, 8) != root
    # incremental extension gives the same chain
    partial = chain(root, toks[:5], BS)
    assert extend_chain(partial, root, toks, BS, 3) == h
    with pytest.raises(ValueError):
        extend_chain([], root, toks, BS, 4)


def test_max_cached_blocks_never_includes_the_last_token() -> None:
    assert [max_cached_blocks(n, 4) for n in (0, 1, 4, 5, 8, 9)] == [0, 0, 0, 1, 1, 2]


# ---- block manager -----------------------------------------------------------------------------------------
def test_match_acquire_register_and_ref_counts() -> None:
    bm = BlockManager(8, BS, enable_caching=True)
    root = root_hash(0, 0, BS)
    hashes = chain(root, list(range(12)), BS)
    a: list[int] = []
    bm.allocate(a, 12)
    assert bm.match(hashes) == []
    assert bm.register(a[0], hashes[0]) and bm.register(a[1], hashes[1])
    assert not bm.register(a[1], hashes[1])  # already cached
    assert bm.match(hashes) == a[:2]  # stops at the first miss
    assert bm.match(hashes[1:]) == [a[1]]  # (a chain is matched from its start by the scheduler)
    b: list[int] = []
    bm.acquire(b, bm.match(hashes))
    assert b == a[:2] and bm.ref_count(a[0]) == 2 and bm.ref_count(a[2]) == 1
    check_invariants(bm, [a, b])
    with pytest.raises(RuntimeError):
        bm.acquire(b, [a[0]])  # only into an empty table
    bm.free(a)
    check_invariants(bm, [b])
    assert bm.num_free_blocks == 6 and bm.is_cached(b[0])
    shared = list(b)
    bm.free(b)  # the two cached blocks become evictable, still matchable, counted as free
    check_invariants(bm, [])
    assert bm.num_free_blocks == 8 and bm.match(hashes) == shared
    c: list[int] = []
    assert bm.num_taken_from_free(bm.match(hashes)) == 2
    bm.acquire(c, bm.match(hashes))  # a hit on evictable blocks takes them out of the free pool
    assert bm.num_free_blocks == 6
    check_invariants(bm, [c])
    bm.free(c)
    assert bm.num_free_blocks == 8


def test_duplicate_hash_stays_private_and_register_needs_a_reference() -> None:
    bm = BlockManager(4, BS, enable_caching=True)
    h = chain(root_hash(0, 0, BS), [1, 2, 3, 4], BS)[0]
    a: list[int] = []
    b: list[int] = []
    bm.allocate(a, 4)
    bm.allocate(b, 4)
    assert bm.register(a[0], h) and not bm.register(b[0], h)
    bm.free(b)
    assert b == [] and not bm._evictable  # the duplicate went back to the plain free list
    assert not bm.register(3, h) and not bm.is_cached(3)  # free blocks are never registered


def test_eviction_is_lru_only_when_no_plain_block_is_left_and_never_touches_referenced_blocks() -> None:
    bm = BlockManager(6, BS, enable_caching=True)
    root = root_hash(0, 0, BS)
    tables, hashes = [], []
    for k in range(3):
        toks = [100 * k + i for i in range(8)]
        t: list[int] = []
        bm.allocate(t, 8)
        hs = chain(root, toks, BS)
        for blk, h in zip(t, hs, strict=True):
            assert bm.register(blk, h)
        tables.append(t)
        hashes.append(hs)
    held, t0, t1 = tables[2], list(tables[0]), list(tables[1])
    bm.free(tables[0])  # freed first: least recently used
    bm.free(tables[1])
    assert bm.num_free_blocks == 4 and not bm._free
    x: list[int] = []
    bm.allocate(x, 4)  # evicts the tail of the oldest chain first (a table is freed last block first)
    assert x == [t0[1]] and bm.evictions == 1
    assert bm.match(hashes[0]) == [t0[0]]  # its head is still cached
    assert bm.match(hashes[1]) == t1
    bm.allocate(x, 16)  # takes everything free: the rest of the cache is evicted
    assert bm.evictions == 4 and bm.match(hashes[0]) == [] and bm.match(hashes[1]) == []
    assert bm.match(hashes[2]) == held  # referenced blocks are never evicted
    assert sorted(x + held) == list(range(6))
    with pytest.raises(RuntimeError):
        bm.allocate(x, 20)
    check_invariants(bm, [x, held])


def test_plain_free_blocks_are_used_before_cached_ones() -> None:
    bm = BlockManager(4, BS, enable_caching=True)
    a: list[int] = []
    bm.allocate(a, 4)
    h = chain(root_hash(0, 0, BS), [1, 2, 3, 4], BS)
    bm.register(a[0], h[0])
    bm.free(a)
    b: list[int] = []
    bm.allocate(b, 12)
    assert a == [] and bm.evictions == 0 and bm.match(h) != [] and bm.num_free_blocks == 1


def test_reset_cache_flushes_and_bumps_generation() -> None:
    bm = BlockManager(4, BS, enable_caching=True)
    h = chain(root_hash(0, 0, BS), list(range(8)), BS)
    a: list[int] = []
    b: list[int] = []
    bm.allocate(a, 4)
    bm.allocate(b, 4)
    bm.register(a[0], h[0])
    bm.register(b[0], h[1])
    bm.free(b)  # evictable
    bm.reset_cache()
    assert bm.generation == 1 and bm.match(h) == [] and not bm._evictable and bm.num_free_blocks == 3
    bm.free(a)  # a held block that was cached goes back as a plain free block
    check_invariants(bm, [])
    assert bm.num_free_blocks == 4 and bm.cache_stats().cached_blocks == 0


def test_caching_off_never_matches_or_registers() -> None:
    bm = BlockManager(4, BS)
    h = chain(root_hash(0, 0, BS), list(range(4)), BS)
    a: list[int] = []
    bm.allocate(a, 4)
    assert not bm.register(a[0], h[0]) and bm.match(h) == []


def test_random_workload_with_caching_keeps_invariants() -> None:
    rng = random.Random(0)
    bm = BlockManager(num_blocks=24, block_size=BS, enable_caching=True)
    root = root_hash(0, 0, BS)
    prefixes = [[rng.randrange(50) for _ in range(16)] for _ in range(3)]
    tables: list[list[int]] = []
    for _ in range(600):
        op = rng.random()
        if op < 0.5:
            toks = rng.choice(prefixes)[: rng.randint(1, 16)] + [rng.randrange(50) for _ in range(rng.randint(0, 8))]
            hs = chain(root, toks, BS)[: max_cached_blocks(len(toks), BS)]
            cached = bm.match(hs)
            need = bm.blocks_for(len(toks)) - len(cached) + bm.num_taken_from_free(cached)
            if need > bm.num_free_blocks:
                continue
            t: list[int] = []
            bm.acquire(t, cached)
            bm.allocate(t, len(toks))
            for i, h in enumerate(chain(root, toks, BS)):
                bm.register(t[i], h)
            tables.append(t)
        elif op < 0.55:
            bm.reset_cache()
        elif tables:
            bm.free(tables.pop(rng.randrange(len(tables))))
        check_invariants(bm, tables)
    for t in tables:
        bm.free(t)
    assert bm.num_free_blocks == 24


# ---- scheduler -------------------------------------------------------------------------------------------
def test_shared_prefix_is_matched_at_admission_and_never_the_last_token() -> None:
    bm = BlockManager(32, BS, enable_caching=True)
    s = Scheduler(bm, max_num_seqs=8, max_num_batched_tokens=64)
    system = list(range(1, 11))  # 10 tokens: 2 full blocks
    a = seq("a", system + [20, 21])
    s.add(a)
    drain(s)
    assert bm.num_free_blocks == 32 and bm.cache_stats().cached_blocks >= 2
    b = seq("b", system + [30])
    s.add(b)
    out = s.schedule()
    assert [(c.start, c.num_tokens) for c in out.chunks] == [(8, 3)]  # 2 blocks from the cache
    assert b.num_cached_tokens == 8 and b.block_table[:2] == bm.match(b.block_hashes[:2])
    s.commit(out)
    s.finish(b, FinishReason.ABORT)
    # the whole prompt is cached (a's 12 tokens = 3 full blocks): still compute its last block's last token
    c = seq("c", system + [20, 21])
    s.add(c)
    out = s.schedule()
    assert [(ch.start, ch.num_tokens, ch.samples) for ch in out.chunks] == [(8, 4, True)]
    stats = bm.cache_stats()
    assert (stats.queried_tokens, stats.hit_tokens) == (12 + 11 + 12, 0 + 8 + 8)
    s.commit(out)
    s.finish(c, FinishReason.ABORT)
    assert bm.num_free_blocks == 32


def test_different_cache_keys_never_share() -> None:
    bm = BlockManager(32, BS, enable_caching=True)
    s = Scheduler(bm, max_num_seqs=8, max_num_batched_tokens=64)
    prompt = list(range(1, 14))
    s.add(seq("base", prompt))
    drain(s)
    s.add(seq("lora", prompt, cache_key=7))
    out = s.schedule()
    assert out.chunks[0].start == 0
    s.commit(out)
    s.finish(out.chunks[0].seq, FinishReason.ABORT)
    s.add(seq("lora2", prompt, cache_key=7))
    assert s.schedule().chunks[0].start == 12


def test_waiting_sequence_waits_for_a_prefix_being_computed() -> None:
    """n > 1 copies of one prompt: the first computes the prefix, the others take it from the cache."""
    bm = BlockManager(64, BS, enable_caching=True)
    s = Scheduler(bm, max_num_seqs=8, max_num_batched_tokens=8)  # the prompt takes 3 steps
    prompt = list(range(1, 22))  # 21 tokens: 5 full blocks
    copies = [seq(f"n{i}", prompt) for i in range(3)]
    other = seq("other", [90, 91, 92])
    for q in copies + [other]:
        s.add(q)
    outs = drain(s)
    computed = sum(o.num_tokens for o in outs)
    def first_step(q: Sequence) -> int:
        return min(i for i, o in enumerate(outs) for c in o.chunks if c.seq is q)

    first = [c for c in outs[first_step(copies[1])].chunks if c.seq is copies[1]][0]
    assert first.start == 20 and copies[1].num_cached_tokens == 20 and copies[2].num_cached_tokens == 20
    assert first_step(other) < first_step(copies[1])  # passed over while n0 computed the prefix, not blocking
    # n0: 21 prompt tokens + 2 decode rows; n1, n2: the last prompt token + 2 decode rows; other: 3 + 2
    assert computed == (21 + 2) + 2 * (1 + 2) + (3 + 2)
    assert bm.num_free_blocks == 64
    # without the wait, the copies admitted next to n0 compute the prefix again
    s.wait_for_shared_prefix = False
    copies = [seq(f"m{i}", [7] + prompt[1:]) for i in range(3)]
    for q in copies:
        s.add(q)
    assert sum(o.num_tokens for o in drain(s)) > (21 + 2) + 2 * (1 + 2)
    assert bm.num_free_blocks == 64


def test_preemption_and_abort_keep_ref_counts_and_resume_from_the_cache() -> None:
    bm = BlockManager(5, BS, enable_caching=True)
    s = Scheduler(bm, max_num_seqs=8, max_num_batched_tokens=64)
    a = seq("a", list(range(1, 10)), max_tokens=8)  # 9 + 8 tokens, 16 computed: 4 blocks each, 2 shared
    b = seq("b", list(range(1, 10)), max_tokens=8)
    s.add(a)
    run_step(s)
    s.add(b)
    preempted = False
    while s.has_work:
        out = run_step(s)
        preempted |= bool(out.preempted)
        tables = [q.block_table for q in s.running]
        check_invariants(bm, tables)
    assert preempted and bm.num_free_blocks == 5
    assert b.num_preemptions >= 1 and b.num_cached_tokens > 0  # resumed with cached blocks
    # abort while waiting, while prefilling, while decoding
    for when in range(4):
        q = seq(f"x{when}", list(range(1, 10)) + [when], max_tokens=5)
        s.add(q)
        for _ in range(when):
            run_step(s)
        if not q.is_finished:
            s.finish(q, FinishReason.ABORT)
        check_invariants(bm, [r.block_table for r in s.running])
        assert bm.num_free_blocks == 5


def test_base_generation_change_invalidates_and_in_flight_blocks_are_not_registered() -> None:
    bm = BlockManager(32, BS, enable_caching=True)
    s = Scheduler(bm, max_num_seqs=8, max_num_batched_tokens=4)
    prompt = list(range(1, 14))
    a = seq("a", prompt)
    s.add(a)
    run_step(s)  # first block computed and registered
    assert bm.cache_stats().cached_blocks == 1
    bm.reset_cache()  # a base layer swapped in
    drain(s)  # a's later blocks mix the old and new base: never registered
    assert bm.cache_stats().cached_blocks == 0 and bm.num_free_blocks == 32
    b = seq("b", prompt)
    s.add(b)
    assert s.schedule().chunks[0].start == 0
