"""Per-step multi-LoRA through the Triton kernels (kernels.lora_fused: one shrink and one expand launch per
call): the step's LoraBatch (built once) over the stacked pools.

Same contract as llama.LoraContext: `add(y, x, layer, module)` adds each row's adapter delta to y in place;
`add_fused` does it for several projections that share x (q/k/v, gate/up) in one shrink and one expand.
Per-row batches (the decode graphs' block_m = 1 form, up to kernels.lora_grouped.MAX_ROWS rows) may go through
kernels.lora_grouped instead: the rows of one adapter are grouped on the device, so a shared adapter is read once per
16 rows rather than once per row. That pays only when the step's rows share adapters (batch 32, bench/results/
decode-2026-12-01-s18-lora-all.md: one shared rank-64 all-linear adapter 0.709x the BGMV step, but 32 distinct
adapters 1.056-1.117x), which the host knows when it stages the step: model.decode_graphs asks `pick_grouped` per
decode step and keeps a graph captured with each kind (the choice is part of the graph's key).

GROUPED: None (AUTO, the default since session 19) = that per-step rule in the decode graphs, BGMV / SGMV everywhere
else (eager steps, prefill graphs); False = never: the decode graphs are exactly the BGMV ones shipped before session
18; True = the grouped kernels for every per-row batch (benchmarks, tests). fp32 on CUDA always takes BGMV
(lora_grouped.grouped_ok).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from inlaid_worker.kernels import lora_early
from inlaid_worker.kernels.lora_batch import LoraBatch, LoraPool, choose_block_m, make_lora_batch
from inlaid_worker.kernels.lora_fused import lora_apply_fused
from inlaid_worker.kernels.lora_grouped import MAX_ROWS, grouped_ok, lora_apply_grouped
from inlaid_worker.lora.pools import LoraPools

AUTO = None
# Read when a decode graph is keyed and when a step is built or captured (bench/kernels/s18_lora*.py set it between
# captures). The rule's A/B against BGMV only (7B int4, batch 32, H200, 8 rounds; bench/results/
# decode-2026-12-01-s18-lora-auto.md): where it picks grouped 0.7090x (rank 64 all 7, one adapter) and 0.9866x (rank
# 16 q/k/v/o, 8 adapters x 4 rows), lower in 8/8 rounds each; where it picks BGMV (32 distinct) 1.0000x (0.9988-1.0021
# per round: the same kernels). On (AUTO) since session 19: session 18's 2 unnamed GPU failures were two bit-equality
# checks of test_lora_grouped that split-K atomics break on the GPU (now a tolerance there); the rule's GPU tests
# then passed on the H200 (bench/results/decode-2026-12-01-s19-lora.md).
GROUPED: bool | None = AUTO
# The per-step rule (pick_grouped), from the batch-32 A/B of session 18's lora-all run: a linear fit of the LoRA part
# of the step (grouped = fixed + per 16-row tile, BGMV = per row) puts the break-even near 13 tiles of 32 rows (rank 16,
# q/k/v/o and all 7 linears alike), i.e. ~2.5 rows per adapter; 4 leaves a margin (8 adapters of 4 rows: 8 tiles,
# measured 0.9866x).
MIN_ROWS_PER_ADAPTER = 4
# Measured at 32 rows only, where decode graphs run without PDL (decode_graphs.PDL_MAX_BUCKET 16): fewer LoRA rows keep
# BGMV, whose cost falls with the rows while the grouped kernels' fixed part (most of their time at 1 adapter) does not.
MIN_ROWS = 24


def pick_grouped(ids: Sequence[int], bucket: int) -> bool:
    """Whether a decode step whose rows carry adapter slots `ids` (-1 = base row) takes the grouped kernels in a graph
    of `bucket` rows, under the GROUPED setting: forced on / off, or (AUTO) the per-step rule: at least MIN_ROWS LoRA
    rows and at least MIN_ROWS_PER_ADAPTER of them per distinct adapter. Never for a step without LoRA rows, nor for a
    bucket over MAX_ROWS (lora_grouped.grouped_ok would refuse the batch: a second BGMV graph for nothing). (An fp32
    model on CUDA is refused there too, by dtype, which this rule does not see: such a step's "grouped" graph would
    run BGMV: a duplicate graph, not wrong results; served models run fp16 / bf16.)"""
    if GROUPED is False or bucket > MAX_ROWS:
        return False
    rows = len(ids) - ids.count(-1)  # (host lists of a few dozen ints: C-level counts, microseconds a step)
    if rows == 0 or GROUPED is True:
        return rows > 0
    if rows < MIN_ROWS:
        return False
    distinct = set(ids)
    distinct.discard(-1)
    return rows >= MIN_ROWS_PER_ADAPTER * len(distinct)


def _apply(y: torch.Tensor, x: torch.Tensor, pools: list[LoraPool], cols: list[int], batch: LoraBatch,
           grouped: bool) -> None:  # fmt: skip
    """The grouped kernels where asked for and they take the batch (per-row, at most MAX_ROWS blocks, not fp32 on
    CUDA: lora_grouped.grouped_ok), else the BGMV / SGMV ones."""
    if grouped and grouped_ok(batch, x):
        lora_apply_grouped(y, x, pools, cols, batch)
    else:
        lora_apply_fused(y, x, pools, cols, batch)


@dataclass(frozen=True)
class KernelLoraContext:
    batch: LoraBatch
    pools: LoraPools
    grouped: bool = False  # the grouped kernels for this step (a decode graph's pick_grouped); GROUPED True forces them

    @staticmethod
    def build(adapter_ids: list[int], pools: LoraPools, device: torch.device) -> KernelLoraContext:
        """adapter_ids: the step's slot per row (-1 = base model)."""
        batch = make_lora_batch(adapter_ids, pools.slot_ranks, choose_block_m(adapter_ids), device)
        return KernelLoraContext(batch, pools)

    def _grouped(self) -> bool:
        return self.grouped or GROUPED is True

    def add(self, y: torch.Tensor, x: torch.Tensor, layer: int, module: str) -> None:
        """y: [T, out] (may be a column slice of a fused output); x: [T, in]."""
        pool = self.pools.active(layer, module)
        if pool is not None:
            _apply(y, x, [pool], [0], self.batch, self._grouped())

    def add_fused(self, y: torch.Tensor, x: torch.Tensor, layer: int, modules: Sequence[tuple[str, int]]) -> None:
        """y: the fused output [T, sum N]; modules: (module, first column in y) of projections sharing x."""
        found = self._found(layer, modules)
        if found:
            _apply(y, x, [p for p, _ in found], [c for _, c in found], self.batch, self._grouped())

    def _found(self, layer: int, modules: Sequence[tuple[str, int]]) -> list[tuple[LoraPool, int]]:
        return [(pool, col) for m, col in modules if (pool := self.pools.active(layer, m)) is not None]

    def shrink_ahead(self, x: torch.Tensor, layer: int, modules: Sequence[tuple[str, int]]) -> PendingLora | None:
        """Before the GEMV on x: the shrink of `modules` (add_fused's) launched now where kernels.lora_early.EARLY
        places it (BGMV batches of at most lora_fused.PARTIALS_MAX_ROWS rows), to be finished by `finish` on the GEMV's
        output; None: apply the LoRA after the GEMV as before (add_fused). Decided first (lora_early.early_mode: "off"
        for every eager step under the shipped policy), so such a step pays for the pools and the plan once, in
        add_fused."""
        if self._grouped() or (mode := lora_early.early_mode(x, self.batch)) == "off":
            return None
        found = self._found(layer, modules)
        if not found:
            return None
        shrunk = lora_early.shrink_ahead(x, [p for p, _ in found], self.batch, mode)
        return None if shrunk is None else PendingLora(shrunk, [c for _, c in found])

    @staticmethod
    def finish(y: torch.Tensor, pending: PendingLora) -> None:
        """y (the GEMV's output) += the pending shrink's LoRA (its expand)."""
        lora_early.finish(y, pending.shrunk, pending.cols)


@dataclass(frozen=True)
class PendingLora:
    shrunk: lora_early.Shrunk
    cols: list[int]  # each pool's first column in the GEMV's output
