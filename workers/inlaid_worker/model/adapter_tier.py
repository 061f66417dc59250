"""The runner's adapters: every registered adapter in host memory (pinned on CUDA), at most `num_slots` of
them on the device, moved in and out by the LRU in lora/adapter_cache.py.

The device side is the backend's: per-slot weight dicts for the torch reference (LoraRegistry) or stacked
per-module pools for the Triton kernels (LoraPools). Registration loads an adapter at once when a slot is
free; otherwise it is loaded when a step needs it (`acquire`), evicting the least recently used resident
adapter that no running sequence needs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import torch

from inlaid_worker.lora.adapter import LoraAdapter
from inlaid_worker.lora.adapter_cache import AdapterCache, AdapterCacheStats
from inlaid_worker.lora.apply import LoraMapping
from inlaid_worker.lora.pools import LoraPools
from inlaid_worker.lora.registry import LoraRegistry
from inlaid_worker.model.config import ModelConfig
from inlaid_worker.model.kernel_lora import KernelLoraContext
from inlaid_worker.model.llama import LoraContext


def to_host(adapter: LoraAdapter, dtype: torch.dtype, pin: bool) -> LoraAdapter:
    """The adapter's weights in the serving dtype on the CPU, page-locked when `pin` (fast async copies)."""

    def host(t: torch.Tensor) -> torch.Tensor:
        t = t.to("cpu", dtype).contiguous()
        return t.pin_memory() if pin else t

    return replace(adapter, weights={k: (host(a), host(b)) for k, (a, b) in adapter.weights.items()})


class AdapterTier:
    def __init__(
        self, config: ModelConfig, device: torch.device, dtype: torch.dtype, num_slots: int, backend: str
    ) -> None:
        self.cache = AdapterCache(num_slots)
        self._device, self._dtype = device, dtype
        self._pin = device.type == "cuda"
        self._host: dict[str, LoraAdapter] = {}
        self._registry = LoraRegistry(device, dtype, num_slots) if backend == "torch" else None
        self._pools = LoraPools(config, num_slots, device, dtype) if backend == "triton" else None

    @property
    def slots(self) -> dict[str, int]:
        return self.cache.slots

    @property
    def pools(self) -> LoraPools | None:
        """The stacked device pools (triton backend), else None."""
        return self._pools

    def stats(self) -> AdapterCacheStats:
        return self.cache.stats()

    def add(self, name: str, adapter: LoraAdapter) -> int:
        """Register `name`; returns its device slot, or -1 when every slot is taken (loaded on demand)."""
        host = to_host(adapter, self._dtype, self._pin)  # before registering: a failure leaves no trace
        self.cache.register(name)
        self._host[name] = host
        slot = self.cache.place_if_free(name)
        if slot is None:
            return -1
        try:
            self._load(name, slot)
        except BaseException:  # e.g. out of device memory: forget the name so that a retry starts clean
            self.cache.unregister(name)
            del self._host[name]
            self._discard(name, slot)
            raise
        return slot

    def remove(self, name: str) -> None:
        slot = self.cache.unregister(name)
        del self._host[name]
        if slot is not None:
            self._unload(name, slot)

    def acquire(self, names: Iterable[str], keep: Iterable[str] = ()) -> dict[str, int]:
        """Make `names` resident (evicting LRU adapters outside names and keep); returns their slots."""
        res = self.cache.acquire(names, keep)
        for name, slot in res.evictions:
            self._unload(name, slot)
        for i, (name, slot) in enumerate(res.loads):
            try:
                self._load(name, slot)
            except BaseException:  # this and the loads not done yet are not resident; they stay registered
                for undone, undone_slot in res.loads[i:]:
                    self.cache.evict(undone)
                    self._discard(undone, undone_slot)
                raise
        return res.slots

    def context(self, adapter_ids: torch.Tensor) -> LoraContext | KernelLoraContext | None:
        """The step's LoRA context for adapter_ids [T] (slots, -1 = base; host or device); None if no row has one."""
        if self._pools is not None:
            ids = adapter_ids.tolist()  # the step input lives on the host: no device sync
            self._check_slots(ids)
            return None if max(ids, default=-1) < 0 else KernelLoraContext.build(ids, self._pools, self._device)
        mapping = LoraMapping.build(adapter_ids.to(self._device))
        self._check_slots([slot for slot, _ in mapping.groups])
        return None if mapping.empty or self._registry is None else LoraContext(mapping, self._registry)

    def check_slots(self, adapter_ids: torch.Tensor | list[int]) -> None:
        """Raise if a step row names a slot with no resident adapter (ids as a tensor or a host list)."""
        self._check_slots(adapter_ids.tolist() if isinstance(adapter_ids, torch.Tensor) else adapter_ids)

    def _check_slots(self, slots: list[int]) -> None:
        if not slots or max(slots) < 0:  # base-model rows only: one max (a decode step's usual case)
            return
        live = set(self.cache.slots.values())
        unknown = sorted({s for s in slots if s >= 0 and s not in live})
        if unknown:
            raise ValueError(f"StepInput.adapter_ids refers to unloaded adapter slot(s) {unknown}")

    def _load(self, name: str, slot: int) -> None:
        adapter = self._host[name]
        if self._registry is not None:
            self._registry.add(name, adapter, slot)
        if self._pools is not None:
            self._pools.write(slot, adapter)

    def _discard(self, name: str, slot: int) -> None:
        """Clear `slot` after a load of `name` into it failed part way (or never started)."""
        if self._registry is not None and name in self._registry.slots:  # (a failed LoraRegistry.add leaves nothing)
            self._registry.remove(name)
        if self._pools is not None:
            self._pools.clear(slot)

    def _unload(self, name: str, slot: int) -> None:
        if self._registry is not None:
            self._registry.remove(name)
        if self._pools is not None:
            self._pools.clear(slot)
