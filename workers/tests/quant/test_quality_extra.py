"""bench/quality's enlarged test splits stay disjoint from the shipped splits and keep the shipped test first."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
from inlaid_worker.tasks.example import Example
from inlaid_worker.tasks.splits import split

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench" / "quality"))
from extra_test import extended_test  # noqa: E402


def _ex(i: int) -> Example:
    return Example(f"id-{i:04d}", f"q{i}", f"a{i}", [f"a{i}"])


def test_extended_test_is_disjoint_and_starts_with_shipped() -> None:
    items = [_ex(i) for i in range(100)]
    random.Random(5).shuffle(items)
    sizes = (30, 10, 20)
    train, calib, test = split(items, key=lambda e: e.id, sizes=sizes, seed=0)
    out = extended_test(items, {"train": train, "calib": calib, "test": test}, sizes, seed=0, n=50)
    assert len(out) == 50 and out[:20] == test
    assert not {e.id for e in out[20:]} & {e.id for e in train + calib + test}
    assert len({e.id for e in out}) == 50


def test_extended_test_refuses_other_splits_and_too_many() -> None:
    items = [_ex(i) for i in range(100)]
    sizes = (30, 10, 20)
    train, calib, test = split(items, key=lambda e: e.id, sizes=sizes, seed=0)
    with pytest.raises(ValueError, match="differs"):
        extended_test(items, {"train": train, "calib": calib, "test": test}, sizes, seed=1, n=50)
    with pytest.raises(ValueError, match="unused"):
        extended_test(items, {"train": train, "calib": calib, "test": test}, sizes, seed=0, n=81)
