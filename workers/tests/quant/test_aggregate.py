"""Aggregation: element-wise max (exact, associative, PSD-projected), the PSD alternatives (mean, diagmax,
trace, corrmax), pooled, single; MLGPTQ vs pooled."""

from __future__ import annotations

import pytest
import torch
from inlaid_worker.quant import QuantSpec, aggregate, gptq_quantize, max_aggregate, pooled_aggregate
from inlaid_worker.quant.aggregate import AGGREGATIONS, project_psd

MULTI = [a for a in AGGREGATIONS if a not in ("pooled", "single")]


def _h(seed: int, k: int = 16, tokens: int = 8) -> torch.Tensor:
    x = torch.randn(tokens, k, generator=torch.Generator().manual_seed(seed))
    h = 2 * x.t() @ x / tokens
    return (h + h.t()) * 0.5


def test_max_is_elementwise_and_associative() -> None:
    a, b, c = _h(0), _h(1), _h(2)
    m = max_aggregate({"a": a, "b": b, "c": c})
    assert torch.equal(m, torch.maximum(torch.maximum(a, b), c))
    assert torch.equal(max_aggregate({"ab": max_aggregate({"a": a, "b": b}), "c": c}), m)


def test_max_is_projected_to_psd() -> None:
    hs = {str(i): _h(i) for i in range(4)}
    raw = max_aggregate(hs)
    assert float(torch.linalg.eigvalsh(raw.double()).min()) < 0  # why the projection exists
    p = aggregate("max", hs, {})
    assert float(torch.linalg.eigvalsh(p.double()).min()) > -1e-4 and torch.equal(p, p.t())
    assert torch.equal(project_psd(_h(0, tokens=64)), _h(0, tokens=64))  # PSD input unchanged


def _min_eig(h: torch.Tensor) -> float:
    return float(torch.linalg.eigvalsh(h.double()).min())


def test_diagmax_takes_max_diagonal_and_mean_correlations() -> None:
    a, b = _h(0), 3 * _h(1)
    d = aggregate("diagmax", {"a": a, "b": b}, {})
    off = ~torch.eye(16, dtype=torch.bool)
    torch.testing.assert_close(d[off], ((a + b) / 2)[off])
    assert torch.equal(d.diagonal(), torch.maximum(a.diagonal(), b.diagonal()))
    assert _min_eig(d) >= _min_eig((a + b) / 2) - 1e-5  # a non-negative diagonal added to a PSD mean


def test_trace_weighting_gives_every_task_the_largest_trace() -> None:
    a, b = _h(0), 100 * _h(1)  # b would drown a in a plain sum
    t = aggregate("trace", {"a": a, "b": b}, {})
    scale = float(b.trace() / a.trace())
    torch.testing.assert_close(t, (scale * a + b) / 2)
    torch.testing.assert_close(aggregate("mean", {"a": a, "b": b}, {}), (a + b) / 2)


def test_corrmax_keeps_the_max_diagonal() -> None:
    a, b = _h(0, tokens=64), 5 * _h(1, tokens=64)
    from inlaid_worker.quant.aggregate import corrmax_aggregate

    c = corrmax_aggregate({"a": a, "b": b})
    torch.testing.assert_close(c.diagonal(), torch.maximum(a.diagonal(), b.diagonal()))


@pytest.mark.parametrize("how", MULTI)
def test_multi_task_aggregations_are_psd_and_order_free(how: str) -> None:
    hs = {str(i): _h(i) for i in range(4)}
    tokens = {n: 8 for n in hs}
    out = aggregate(how, hs, tokens)  # type: ignore[arg-type]
    assert torch.equal(out, out.t()) and _min_eig(out) > -1e-4
    assert torch.equal(aggregate(how, dict(reversed(list(hs.items()))), tokens), out)  # type: ignore[arg-type]
    gptq_quantize(torch.randn(8, 16), out, QuantSpec(bits=3, group_size=8))  # Cholesky succeeds


def test_pooled_and_single() -> None:
    a, b = _h(0), _h(1)
    torch.testing.assert_close(pooled_aggregate({"a": a, "b": b}, {"a": 10, "b": 30}), 0.25 * a + 0.75 * b)
    assert torch.equal(aggregate("single", {"a": a}, {}), a)
    with pytest.raises(ValueError, match="exactly one"):
        aggregate("single", {"a": a, "b": b}, {})
    with pytest.raises(ValueError, match="token counts"):
        pooled_aggregate({"a": a}, {})


@pytest.mark.parametrize("how", ["max", "diagmax"])
def test_mlgptq_beats_pooled_on_disjoint_channels(how: str) -> None:
    """Tasks A and B read disjoint input channels; each adapter turns its task's i.i.d. base inputs into
    correlated ones. Pooled GPTQ only sees the base inputs, MLGPTQ the true ones: it wins on both tasks."""
    g = torch.Generator().manual_seed(0)
    k, n, tokens = 64, 32, 512

    def inputs(cols: slice, adapted: bool) -> torch.Tensor:
        x = torch.zeros(tokens, k)
        width = cols.stop - cols.start
        z = torch.randn(tokens, width, generator=g)
        if adapted:
            z = z @ (torch.randn(width, width, generator=g) * torch.rand(width, generator=g)[None, :] * 2)
        x[:, cols] = z
        return x

    def hess(x: torch.Tensor) -> torch.Tensor:
        return 2 * x.t() @ x / x.shape[0]

    xa, xa_base = inputs(slice(0, 32), True), inputs(slice(0, 32), False)
    xb, xb_base = inputs(slice(32, 64), True), inputs(slice(32, 64), False)
    w = torch.randn(n, k, generator=g)
    spec = QuantSpec(bits=3, group_size=32)
    ml = gptq_quantize(w, aggregate(how, {"a": hess(xa), "b": hess(xb)}, {}), spec).dequant  # type: ignore[arg-type]
    pooled_h = pooled_aggregate({"a": hess(xa_base), "b": hess(xb_base)}, {"a": tokens, "b": tokens})
    pooled = gptq_quantize(w, pooled_h, spec).dequant
    for x in (xa, xb):
        err_ml, err_pooled = ((x @ (w - ml).t()) ** 2).sum(), ((x @ (w - pooled).t()) ** 2).sum()
        assert err_ml < 0.9 * err_pooled
