"""Per-step multi-LoRA through the Triton kernels (kernels.lora_fused: one shrink and one expand launch per
call): the step's LoraBatch (built once) over the stacked pools.

Same contract as llama.LoraContext: `add(y, x, layer, module)` adds each row's adapter delta to y in place;
`add_fused` does it for several projections that share x (q/k/v, gate/up) in one shrink and one expand.
Per-row batches (the decode graphs' block_m = 1 form, up to kernels.lora_grouped.MAX_ROWS rows) go through
kernels.lora_grouped when GROUPED is on: the rows of one adapter are grouped on the device, so a shared adapter is
read once per 16 rows rather than once per row. Off: at batch 32 it cuts one shared rank-64 all-linear adapter's
step 1.93x -> 1.37x the base step but makes 32 distinct adapters 6-12% slower (the issue's goal row among them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from inlaid_worker.kernels.lora_batch import LoraBatch, LoraPool, choose_block_m, make_lora_batch
from inlaid_worker.kernels.lora_fused import lora_apply_fused
from inlaid_worker.kernels.lora_grouped import grouped_ok, lora_apply_grouped
from inlaid_worker.lora.pools import LoraPools

GROUPED = False  # read when a step is built or captured (bench/kernels/s18_lora.py flips it between captures)


def _apply(y: torch.Tensor, x: torch.Tensor, pools: list[LoraPool], cols: list[int], batch: LoraBatch) -> None:
    """The grouped kernels where switched on and the batch is per-row, else the BGMV / SGMV ones."""
    if GROUPED and grouped_ok(batch):
        lora_apply_grouped(y, x, pools, cols, batch)
    else:
        lora_apply_fused(y, x, pools, cols, batch)


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
        pool = self.pools.active(layer, module)
        if pool is not None:
            _apply(y, x, [pool], [0], self.batch)

    def add_fused(self, y: torch.Tensor, x: torch.Tensor, layer: int, modules: Sequence[tuple[str, int]]) -> None:
        """y: the fused output [T, sum N]; modules: (module, first column in y) of projections sharing x."""
        found = [(pool, col) for m, col in modules if (pool := self.pools.active(layer, m)) is not None]
        if found:
            _apply(y, x, [p for p, _ in found], [c for _, c in found], self.batch)
