"""Running aggregates: exact triangles, a stored fold state continued by one task equals folding all tasks at
once (every aggregation), and the fold order is the task insertion order."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from inlaid_worker.quant.aggregate import AGGREGATIONS, aggregate
from inlaid_worker.quant.hessian_store import HessianStore
from inlaid_worker.quant.running import empty, finish, fold
from inlaid_worker.quant.triangle import (
    diag_index,
    from_triangle,
    pack_mask,
    pack_rows,
    scale_rows_cols,
    to_triangle,
    unpack_mask,
    unpack_rows,
)


def _h(seed: int, k: int, tokens: int = 8) -> torch.Tensor:
    x = torch.randn(tokens, k, generator=torch.Generator().manual_seed(seed))
    h = 2 * x.t() @ x / tokens
    return (h + h.t()) * 0.5


@pytest.mark.parametrize("k", [1, 5, 300])  # 300: several mirror blocks and a partial one
def test_triangle_round_trip_is_exact_and_matches_the_version1_layout(k: int) -> None:
    h = _h(k, k)
    r, c = torch.triu_indices(k, k)
    old = h[r, c]  # how version 1 stores were written
    for pack in (pack_rows, pack_mask):
        assert torch.equal(pack(h), old)
    for unpack in (unpack_rows, unpack_mask):
        assert torch.equal(unpack(old, k), h)
    assert torch.equal(to_triangle(h)[diag_index(k)], h.diagonal())
    v = torch.rand(k) + 0.5
    want = (h * v[:, None]) * v[None, :]
    assert torch.equal(scale_rows_cols(old, k, v), want[r, c])
    with pytest.raises(ValueError, match="expected"):
        from_triangle(old[:-1], k)


@pytest.mark.parametrize("how", [a for a in AGGREGATIONS if a != "single"])
def test_stored_state_plus_one_task_equals_folding_all(how: str, tmp_path: Path) -> None:
    dims = {"qkv": 12, "down": 20}
    hs = {t: {g: _h(10 * i + j, k) for j, (g, k) in enumerate(dims.items())} for i, t in enumerate("abc")}
    tokens = {"a": 8, "b": 24, "c": 16}

    def fold_all(names: str) -> dict:
        states = {g: empty(how, k) for g, k in dims.items()}
        for t in names:
            states = {g: fold(s, t, to_triangle(hs[t][g]), tokens[t]) for g, s in states.items()}
        return states

    store = HessianStore(tmp_path)
    store.write_running(3, fold_all("ab"))
    stored = store.read_running(3, how, dims, ["a", "b"])  # type: ignore[arg-type]
    assert stored is not None
    continued = {g: fold(s, "c", to_triangle(hs["c"][g]), tokens["c"]) for g, s in stored.items()}
    at_once = fold_all("abc")
    for g in dims:
        assert torch.equal(finish(continued[g]), finish(at_once[g])), g
    assert store.read_running(3, how, dims, ["b", "a"]) is None  # another order: refold, never reuse
    assert store.read_running(3, "mean" if how != "mean" else "max", dims, ["a", "b"]) is None
    assert store.read_running(4, how, dims, ["a", "b"]) is None  # absent


def test_fold_order_is_the_given_order_and_aggregate_is_a_set_function() -> None:
    hs = {t: _h(i, 16) for i, t in enumerate("dcba")}
    tokens = dict.fromkeys(hs, 8)
    names = list(hs)  # insertion order d, c, b, a
    state = empty("diagmax", 16)
    for n in names:
        state = fold(state, n, to_triangle(hs[n]), 8)
    assert state.tasks == names
    in_name_order = empty("diagmax", 16)
    for n in sorted(names):
        in_name_order = fold(in_name_order, n, to_triangle(hs[n]), 8)
    assert torch.equal(aggregate("diagmax", hs, tokens), finish(in_name_order))
    torch.testing.assert_close(finish(state), finish(in_name_order))  # same value up to rounding
    with pytest.raises(ValueError, match="already folded"):
        fold(state, "a", to_triangle(hs["a"]), 8)
    with pytest.raises(ValueError, match="exactly one"):
        fold(fold(empty("single", 16), "a", to_triangle(hs["a"]), 8), "b", to_triangle(hs["b"]), 8)


def test_a_damaged_running_state_is_refused(tmp_path: Path) -> None:
    store = HessianStore(tmp_path)
    state = fold(empty("diagmax", 6), "a", to_triangle(_h(0, 6)), 8)
    store.write_running(0, {"qkv": state})
    with pytest.raises(ValueError, match=r"qkv.sum has 21 values, expected 36"):
        store.read_running(0, "diagmax", {"qkv": 8}, ["a"])
