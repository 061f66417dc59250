"""prefill_layout.plan_lora_blocks (2026-11-30: adapter runs found from the sorted ids instead of np.unique, and an
early return for base-only steps) gives exactly what the np.unique version gave: rows, blocks, dtypes, shapes."""

from __future__ import annotations

import numpy as np
from inlaid_worker.model.prefill_layout import plan_lora_blocks


def _unique_version(adapter_ids: np.ndarray, block_m: int) -> tuple[np.ndarray, np.ndarray]:
    rows = np.flatnonzero(adapter_ids >= 0)
    rows = rows[np.argsort(adapter_ids[rows], kind="stable")]
    adapters, first, counts = np.unique(adapter_ids[rows], return_index=True, return_counts=True)
    per = -(-counts // block_m)
    k = np.arange(int(per.sum())) - np.repeat(np.cumsum(per) - per, per)
    starts = np.repeat(first, per) + k * block_m
    lens = np.minimum(block_m, np.repeat(counts, per) - k * block_m)
    return rows, np.stack((np.repeat(adapters, per), starts, lens))


def test_same_blocks_as_the_unique_version() -> None:
    rng = np.random.default_rng(0)
    for _ in range(500):
        n = int(rng.integers(0, 40))
        ids = rng.integers(-1, int(rng.integers(0, 5)) + 1, n).astype(rng.choice([np.int64, np.int32]))
        block_m = int(rng.choice([1, 4, 16]))
        got, want = plan_lora_blocks(ids, block_m), _unique_version(ids, block_m)
        for g, w in zip(got, want, strict=True):
            assert g.dtype == w.dtype and g.shape == w.shape and np.array_equal(g, w), (ids, block_m)
