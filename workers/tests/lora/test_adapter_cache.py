"""The device-slot LRU of the adapter host tier: eviction order, protection of needed/kept adapters, counters."""

import pytest
from inlaid_worker.lora.adapter_cache import AdapterCache, AdapterSlotsFull


def cache_with(names: list[str], capacity: int) -> AdapterCache:
    cache = AdapterCache(capacity)
    for n in names:
        cache.register(n)
    return cache


def test_least_recently_used_is_evicted_first() -> None:
    cache = cache_with(["a", "b", "c", "d", "e"], capacity=3)
    cache.acquire(["a"])
    cache.acquire(["b"])
    cache.acquire(["c"])
    cache.acquire(["a"])  # b is now the least recently used
    res = cache.acquire(["d"])
    assert res.evictions == (("b", 1),) and res.loads == (("d", 1),)
    assert cache.lru_order() == ["c", "a", "d"]
    res = cache.acquire(["e", "b"])  # two misses evict c then a, the two oldest
    assert [n for n, _ in res.evictions] == ["c", "a"]
    assert sorted(res.slots.values()) == [0, 2] and set(cache.slots) == {"d", "e", "b"}


def test_kept_and_requested_adapters_are_never_evicted() -> None:
    cache = cache_with(["a", "b", "c", "d"], capacity=3)
    cache.acquire(["a", "b", "c"])
    res = cache.acquire(["d"], keep=["a", "b"])  # a is the oldest but kept: c goes
    assert res.evictions == (("c", 2),)
    with pytest.raises(AdapterSlotsFull):
        cache.acquire(["c"], keep=["a", "b", "d"])
    assert set(cache.slots) == {"a", "b", "d"}  # a refused acquire changes nothing
    with pytest.raises(AdapterSlotsFull):
        cache.acquire(["a", "b", "c", "d"])


def test_counters_and_hit_rate() -> None:
    cache = cache_with(["a", "b", "c"], capacity=2)
    assert cache.place_if_free("a") == 0  # eager load at registration is not a miss
    cache.acquire(["a", "b"])  # hit a, miss b
    cache.acquire(["c"], keep=["b"])  # miss c, evicts a
    cache.acquire(["b", "b"])  # duplicates count once: hit
    s = cache.stats()
    assert (s.registered, s.resident, s.capacity, s.hits, s.misses, s.evictions) == (3, 2, 2, 2, 2, 1)
    assert s.hit_rate == 0.5
    assert cache.place_if_free("a") is None


def test_unregister_frees_the_slot_and_unknown_names_raise() -> None:
    cache = cache_with(["a", "b"], capacity=1)
    cache.acquire(["a"])
    assert cache.unregister("a") == 0
    assert cache.unregister("b") is None
    with pytest.raises(KeyError):
        cache.acquire(["a"])
    with pytest.raises(ValueError, match="already registered"):
        cache_with(["x"], 1).register("x")
    with pytest.raises(ValueError):
        AdapterCache(0)
