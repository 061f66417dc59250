"""Per-step multi-LoRA through the Triton kernels: the step's LoraBatch (built once) over the stacked pools.

Same contract as llama.LoraContext: `add(y, x, layer, module)` adds each row's adapter delta to y in place.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from inlaid_worker.kernels.lora_batch import LoraBatch, choose_block_m, make_lora_batch
from inlaid_worker.kernels.lora_sgmv import lora_apply
from inlaid_worker.lora.pools import LoraPools


@dataclass(frozen=True)
class KernelLoraContext:
    batch: LoraBatch
    pools: LoraPools

    @staticmethod
    def build(adapter_ids: list[int], pools: LoraPools, device: torch.device) -> KernelLoraContext:
        """adapter_ids: the step's slot per row (-1 = base model)."""
        batch = make_lora_batch(adapter_ids, pools.slot_ranks, choose_block_m(adapter_ids), device)
        return KernelLoraContext(batch, pools)

    def add(self, y: torch.Tensor, x: torch.Tensor, layer: int, module: str) -> None:
        """y: [T, out] (may be a column slice of a fused output); x: [T, in]."""
        pool = self.pools.get(layer, module)
        if pool is not None:
            lora_apply(y, x, pool, self.batch)
