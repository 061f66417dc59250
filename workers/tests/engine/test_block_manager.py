"""BlockManager: free list and ref-count invariants."""

import random

import pytest
from inlaid_worker.engine.block_manager import BlockManager
from scheduler_helpers import check_ref_counts


def test_allocate_grows_tables_to_hold_tokens() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    t: list[int] = []
    bm.allocate(t, 1)
    assert len(t) == 1
    bm.allocate(t, 4)
    assert len(t) == 1
    assert bm.may_append(t, 5)
    assert len(t) == 2 and bm.num_free_blocks == 6
    assert bm.num_missing(t, 16) == 2 and bm.can_allocate(t, 32) and not bm.can_allocate(t, 33)


def test_allocate_beyond_free_raises_and_changes_nothing() -> None:
    bm = BlockManager(num_blocks=2, block_size=4)
    t: list[int] = []
    with pytest.raises(RuntimeError, match="need 3 KV blocks, 2 free"):
        bm.allocate(t, 12)
    assert t == [] and bm.num_free_blocks == 2
    assert not bm.may_append(t, 9)


def test_share_and_free_keep_blocks_until_last_reference() -> None:
    bm = BlockManager(num_blocks=4, block_size=2)
    a: list[int] = []
    bm.allocate(a, 4)
    b = bm.share(a)
    assert all(bm.ref_count(x) == 2 for x in a)
    bm.free(a)
    assert a == [] and bm.num_free_blocks == 2
    check_ref_counts(bm, [b])
    bm.free(b)
    assert bm.num_free_blocks == 4
    with pytest.raises(RuntimeError, match="freed twice"):
        bm.free([b for b in range(1)])


def test_random_workload_keeps_invariants() -> None:
    rng = random.Random(0)
    bm = BlockManager(num_blocks=32, block_size=4)
    tables: list[list[int]] = []
    for _ in range(500):
        op = rng.random()
        if op < 0.5:
            t = rng.choice(tables) if tables and rng.random() < 0.5 else []
            n = len(t) * 4 + rng.randint(1, 12)
            if bm.may_append(t, n) and t not in tables:
                tables.append(t)
        elif op < 0.6 and tables:
            tables.append(bm.share(rng.choice(tables)))
        elif tables:
            t = tables.pop(rng.randrange(len(tables)))
            bm.free(t)
        check_ref_counts(bm, tables)
        assert len(set(bm._free)) == bm.num_free_blocks  # no block twice on the free list
