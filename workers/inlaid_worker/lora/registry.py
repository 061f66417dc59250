"""Adapters resident on the device: name -> slot, and per (layer, projection) the weights of every slot.

Slots are small integers reused after removal (the lowest free one first); `adapter_ids` in a StepInput refer
to them. `max_adapters` bounds how many are resident at once.
"""

from __future__ import annotations

import torch

from inlaid_worker.lora.adapter import LoraAdapter
from inlaid_worker.lora.adapter_cache import AdapterSlotsFull
from inlaid_worker.lora.apply import LoraWeights

__all__ = ["AdapterSlotsFull", "LoraRegistry"]


class LoraRegistry:
    def __init__(self, device: torch.device | str, dtype: torch.dtype, max_adapters: int = 64) -> None:
        if max_adapters <= 0:
            raise ValueError(f"max_adapters must be positive, got {max_adapters}")
        self._device, self._dtype, self._max = device, dtype, max_adapters
        self._slots: dict[str, int] = {}
        self._by_module: dict[tuple[int, str], dict[int, LoraWeights]] = {}

    @property
    def slots(self) -> dict[str, int]:
        return dict(self._slots)

    def add(self, name: str, adapter: LoraAdapter, slot: int | None = None) -> int:
        """Load into `slot` (which must be free), or the lowest free slot when None."""
        if name in self._slots:
            raise ValueError(f"adapter {name!r} is already loaded (slot {self._slots[name]})")
        used = set(self._slots.values())
        if slot is not None and (slot in used or not 0 <= slot < self._max):
            raise ValueError(f"slot {slot} is taken or outside [0, {self._max})")
        free = slot if slot is not None else next((s for s in range(self._max) if s not in used), None)
        if free is None:
            raise AdapterSlotsFull(f"all {self._max} adapter slots are in use")
        loaded = {}  # every module's weights on the device first: a failed copy (out of memory) leaves no trace
        for key, (a, b) in adapter.weights.items():
            a, b = (t.to(self._device, self._dtype, non_blocking=True) for t in (a, b))
            loaded[key] = LoraWeights(a, b, adapter.scale)
        for key, w in loaded.items():
            self._by_module.setdefault(key, {})[free] = w
        self._slots[name] = free
        return free

    def remove(self, name: str) -> int:
        if name not in self._slots:
            raise KeyError(f"adapter {name!r} is not loaded")
        slot = self._slots.pop(name)
        for per_slot in self._by_module.values():
            per_slot.pop(slot, None)
        return slot

    def weights(self, layer: int, module: str) -> dict[int, LoraWeights]:
        return self._by_module.get((layer, module), {})
