"""Deterministic, disjoint train / calib / test splits (pure).

Examples are de-duplicated by a key (the text the model sees), ordered by that key, shuffled with a seeded
`random.Random`, and cut into consecutive slices: no key can land in two splits, and the same input and seed
always give the same splits, whatever order the input came in.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def dedupe(items: Sequence[T], key: Callable[[T], str]) -> list[T]:
    """Keep the first item of each key, then sort by key so input order does not matter."""
    seen: dict[str, T] = {}
    for it in items:
        seen.setdefault(key(it), it)
    return [seen[k] for k in sorted(seen)]


def split(
    items: Sequence[T], key: Callable[[T], str], sizes: tuple[int, int, int], seed: int
) -> tuple[list[T], list[T], list[T]]:
    """(train, calib, test) of the requested sizes; raises if there are too few distinct items."""
    if any(s < 0 for s in sizes):
        raise ValueError(f"split sizes must be >= 0, got {sizes}")
    pool = dedupe(items, key)
    need = sum(sizes)
    if len(pool) < need:
        raise ValueError(f"need {need} distinct examples for splits {sizes}, have {len(pool)}")
    random.Random(seed).shuffle(pool)
    _, n_calib, n_test = sizes
    # test is cut first so that growing the train size never changes the test split
    test = pool[:n_test]
    calib = pool[n_test : n_test + n_calib]
    train = pool[n_test + n_calib : need]
    return train, calib, test
