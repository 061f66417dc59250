"""Aggregation: element-wise max (exact, associative, PSD-projected), pooled, single; MLGPTQ vs pooled."""

from __future__ import annotations

import pytest
import torch

from inlaid_worker.quant import QuantSpec, aggregate, gptq_quantize, max_aggregate, pooled_aggregate
from inlaid_worker.quant.aggregate import project_psd


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


def test_pooled_and_single() -> None:
    a, b = _h(0), _h(1)
    torch.testing.assert_close(pooled_aggregate({"a": a, "b": b}, {"a": 10, "b": 30}), 0.25 * a + 0.75 * b)
    assert torch.equal(aggregate("single", {"a": a}, {}), a)
    with pytest.raises(ValueError, match="exactly one"):
        aggregate("single", {"a": a, "b": b}, {})
    with pytest.raises(ValueError, match="token counts"):
        pooled_aggregate({"a": a}, {})


def test_mlgptq_beats_pooled_on_disjoint_channels() -> None:
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
    ml = gptq_quantize(w, aggregate("max", {"a": hess(xa), "b": hess(xb)}, {}), spec).dequant
    pooled_h = pooled_aggregate({"a": hess(xa_base), "b": hess(xb_base)}, {"a": tokens, "b": tokens})
    pooled = gptq_quantize(w, pooled_h, spec).dequant
    for x in (xa, xb):
        err_ml, err_pooled = ((x @ (w - ml).t()) ** 2).sum(), ((x @ (w - pooled).t()) ** 2).sum()
        assert err_ml < 0.9 * err_pooled
