"""The decode benchmark's plan: which decode points, in which order, and the wall-time budget that cuts it.

Points are (rank, targets, batch, distinct); rank 0 = base only. The plan runs in two phases so that a run cut
by `--max-seconds` still has the rows that matter for every shape and quant: phase 1 = the base-only batches,
then the rank-16 q/k/v/o points at the LoRA batch (32 distinct adapters first), then prefill; phase 2 = the
rest of the grid (other ranks and targets, per-batch LoRA).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

Point = tuple[int, str, int, int]  # rank, targets, batch, distinct
KEY_RANK, KEY_TARGETS, KEY_DISTINCT = 16, "qkvo", 32


def decode_points(batches: list[int], ranks: list[int], targets: list[str], distinct: list[int], lora_batch: int,
                  per_batch_lora: bool) -> list[Point]:  # fmt: skip
    """Every decode point of the grid, grouped by adapter config (each config's adapters are loaded once)."""
    plan = [(0, "-", b, 0) for b in batches]
    for rank in ranks:
        for t in targets:
            plan += [(rank, t, lora_batch, d) for d in distinct if d <= lora_batch]
    if per_batch_lora:
        plan += [(KEY_RANK, KEY_TARGETS, b, d) for b in batches for d in distinct if d <= b and b != lora_batch]
    return sorted(set(plan), key=lambda p: (p[0], p[1], p[2], p[3]))


def is_key(p: Point, lora_batch: int) -> bool:
    """Phase-1 point: base only, or rank-16 q/k/v/o adapters at the LoRA batch."""
    return p[0] == 0 or (p[0], p[1], p[2]) == (KEY_RANK, KEY_TARGETS, lora_batch)


def phases(points: list[Point], lora_batch: int) -> tuple[list[Point], list[Point]]:
    """(phase 1, phase 2); phase 1 = base batches ascending, then the key LoRA points, 32 adapters first."""
    first = sorted((p for p in points if is_key(p, lora_batch)), key=lambda p: (p[0], p[3] != KEY_DISTINCT, p[3]))
    return first, [p for p in points if not is_key(p, lora_batch)]


@dataclass
class Budget:
    """Stops new measurements once `max_s` seconds have passed since `t0` (0 = no limit); counts what it refused."""

    max_s: float
    t0: float = field(default_factory=time.time)
    skipped: int = 0

    def elapsed(self) -> float:
        return time.time() - self.t0

    def allows(self, count: int = 1) -> bool:
        """May a measurement start now? If not, `count` measurements are recorded as skipped."""
        if self.max_s and self.elapsed() >= self.max_s:
            self.skipped += count
            return False
        return True
