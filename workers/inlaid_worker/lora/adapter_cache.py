"""Which registered adapters are resident in the device's slots: an LRU over names and slot ids (pure Python).

Adapters are registered without a slot (their weights live in host memory, see model/adapter_tier.py); a
step `acquire`s the adapters it uses, which loads the missing ones into free slots or into the slots of the
least recently used residents that no running sequence needs (`keep`). The caller applies the returned
evictions and loads to the device tensors. Counters (per distinct adapter per acquire): a hit is an adapter
already resident, a miss one that had to be loaded.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass


class AdapterSlotsFull(RuntimeError):
    """More distinct adapters are needed at once than there are device slots."""


@dataclass(frozen=True)
class AdapterCacheStats:
    registered: int
    resident: int
    capacity: int
    hits: int
    misses: int
    evictions: int

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 1.0


@dataclass(frozen=True)
class Residency:
    """What the caller must do on the device, in this order: free the evicted slots, then fill the loads."""

    evictions: tuple[tuple[str, int], ...]  # (name, slot it held)
    loads: tuple[tuple[str, int], ...]  # (name, slot to fill)
    slots: dict[str, int]  # every acquired name -> its slot


class AdapterCache:
    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity (device adapter slots) must be positive, got {capacity}")
        self.capacity = capacity
        self._registered: set[str] = set()
        self._resident: OrderedDict[str, int] = OrderedDict()  # least recently used first
        self._hits = self._misses = self._evictions = 0

    def register(self, name: str) -> None:
        if name in self._registered:
            raise ValueError(f"adapter {name!r} is already registered")
        self._registered.add(name)

    def unregister(self, name: str) -> int | None:
        """Forget `name`; returns the slot it held (the caller clears it) or None if it was not resident."""
        if name not in self._registered:
            raise KeyError(f"adapter {name!r} is not registered")
        self._registered.remove(name)
        return self._resident.pop(name, None)

    def evict(self, name: str) -> int | None:
        """Drop `name`'s residency but keep it registered (its load failed); returns the slot it held, or None."""
        if name not in self._registered:
            raise KeyError(f"adapter {name!r} is not registered")
        return self._resident.pop(name, None)

    def __contains__(self, name: str) -> bool:
        return name in self._registered

    @property
    def slots(self) -> dict[str, int]:
        return dict(self._resident)

    def lru_order(self) -> list[str]:
        """Resident names, least recently used first (the next eviction candidates)."""
        return list(self._resident)

    def place_if_free(self, name: str) -> int | None:
        """Load `name` into a free slot without evicting anyone (eager load at registration); None if full."""
        if name not in self._registered:
            raise KeyError(f"adapter {name!r} is not registered")
        if name in self._resident:
            return self._resident[name]
        free = self._free_slots()
        if not free:
            return None
        self._resident[name] = free[0]
        return free[0]

    def acquire(self, names: Iterable[str], keep: Iterable[str] = ()) -> Residency:
        """Make every name resident and most recently used; never evicts `names` or `keep`.

        Raises AdapterSlotsFull (changing nothing) when the misses outnumber free plus evictable slots.
        """
        wanted = list(dict.fromkeys(names))
        unknown = [n for n in wanted if n not in self._registered]
        if unknown:
            raise KeyError(f"adapter(s) {unknown} are not registered")
        protected = set(wanted) | set(keep)
        misses = [n for n in wanted if n not in self._resident]
        free = self._free_slots()
        victims = [n for n in self._resident if n not in protected][: max(0, len(misses) - len(free))]
        if len(free) + len(victims) < len(misses):
            raise AdapterSlotsFull(
                f"{len(wanted)} adapters needed now and {len(protected) - len(wanted)} more kept for running "
                f"sequences exceed the {self.capacity} device adapter slots"
            )
        evictions = tuple((v, self._resident.pop(v)) for v in victims)
        slots = sorted(free + [slot for _, slot in evictions])
        loads = tuple(zip(misses, slots, strict=False))
        self._resident.update(loads)
        for n in wanted:
            self._resident.move_to_end(n)
        self._hits += len(wanted) - len(misses)
        self._misses += len(misses)
        self._evictions += len(evictions)
        return Residency(evictions, loads, {n: self._resident[n] for n in wanted})

    def stats(self) -> AdapterCacheStats:
        return AdapterCacheStats(
            len(self._registered), len(self._resident), self.capacity, self._hits, self._misses, self._evictions
        )

    def _free_slots(self) -> list[int]:
        used = set(self._resident.values())
        return [s for s in range(self.capacity) if s not in used]
