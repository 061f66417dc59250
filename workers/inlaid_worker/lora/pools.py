"""Device-resident adapters stacked per (layer, target module) for the multi-LoRA kernels.

Each (layer, module) that some resident adapter targets has one `LoraPool` with a row per device slot:
A [slots, R_MAX, in], B [slots, R_MAX, out]; a slot whose adapter does not target that module has rank 0
there (the kernels read nothing for it). Loading an adapter writes its slot's rows in place; R_MAX of a
pool grows (reallocating that pool) when a larger rank arrives. Unloading sets the slot's ranks to 0.
"""

from __future__ import annotations

import torch

from inlaid_worker.kernels.lora_batch import LoraPool
from inlaid_worker.lora.adapter import LoraAdapter
from inlaid_worker.model.config import ModelConfig


class LoraPools:
    def __init__(self, config: ModelConfig, num_slots: int, device: torch.device, dtype: torch.dtype) -> None:
        if num_slots <= 0:
            raise ValueError(f"num_slots must be positive, got {num_slots}")
        self._config, self.num_slots, self._device, self._dtype = config, num_slots, device, dtype
        self._pools: dict[tuple[int, str], LoraPool] = {}
        self.slot_ranks = [0] * num_slots  # the adapter's rank per slot (0 = empty), for LoraBatch
        self.version = 0  # bumped when a pool is (re)allocated or gains/loses its last adapter (graphs go stale)
        self._live: dict[tuple[int, str], set[int]] = {}  # slots whose adapter targets each (layer, module)

    def get(self, layer: int, module: str) -> LoraPool | None:
        return self._pools.get((layer, module))

    def active(self, layer: int, module: str) -> LoraPool | None:
        """The pool of (layer, module), or None when no resident adapter targets it (nothing to compute)."""
        key = (layer, module)
        return self._pools.get(key) if self._live.get(key) else None

    def write(self, slot: int, adapter: LoraAdapter) -> None:
        """Load `adapter` into `slot` of every pool (rank 0 where it has no weights)."""
        self._check_slot(slot)
        self.clear(slot)
        for key, (a, b) in adapter.weights.items():  # a [r, in], b [out, r]
            pool = self._pool_for(key, a.shape[0])
            r = a.shape[0]
            pool.a[slot].zero_()
            pool.b[slot].zero_()
            pool.a[slot, :r].copy_(a, non_blocking=True)
            pool.b[slot, :r].copy_(b.t(), non_blocking=True)
            pool.ranks[slot] = r
            pool.scalings[slot] = adapter.scale
            live = self._live.setdefault(key, set())
            self.version += not live
            live.add(slot)
        self.slot_ranks[slot] = adapter.rank

    def clear(self, slot: int) -> None:
        self._check_slot(slot)
        for pool in self._pools.values():
            pool.ranks[slot] = 0
        for live in self._live.values():
            if slot in live:
                live.discard(slot)
                self.version += not live
        self.slot_ranks[slot] = 0

    @property
    def r_max(self) -> int:
        """The largest rank any pool has room for (0 when there is none)."""
        return max((p.a.shape[1] for p in self._pools.values()), default=0)

    def nbytes(self) -> int:
        return sum(p.a.nbytes + p.b.nbytes for p in self._pools.values())

    def _pool_for(self, key: tuple[int, str], rank: int) -> LoraPool:
        pool = self._pools.get(key)
        if pool is not None and pool.a.shape[1] >= rank:
            return pool
        out_f, in_f = self._config.linear_shape(key[1])
        r_max = max(rank, 0 if pool is None else pool.a.shape[1])
        new = LoraPool(
            a=torch.zeros(self.num_slots, r_max, in_f, device=self._device, dtype=self._dtype),
            b=torch.zeros(self.num_slots, r_max, out_f, device=self._device, dtype=self._dtype),
            ranks=torch.zeros(self.num_slots, dtype=torch.int32, device=self._device),
            scalings=torch.zeros(self.num_slots, dtype=torch.float32, device=self._device),
        )
        if pool is not None:  # keep the slots already loaded
            old_r = pool.a.shape[1]
            new.a[:, :old_r].copy_(pool.a)
            new.b[:, :old_r].copy_(pool.b)
            new.ranks.copy_(pool.ranks)
            new.scalings.copy_(pool.scalings)
        self._pools[key] = new
        self.version += 1
        return new

    def _check_slot(self, slot: int) -> None:
        if not 0 <= slot < self.num_slots:
            raise ValueError(f"slot {slot} outside [0, {self.num_slots})")
