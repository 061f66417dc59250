"""GPTQ core: against a slow unblocked reference, never worse than RTN, dead columns, act-order, damping."""

from __future__ import annotations

import pytest
import torch
from inlaid_worker.quant import QuantSpec, gptq_quantize, prepare_hessian, rtn_quantize
from inlaid_worker.quant.spec import dequantize


def _correlated(k: int, n_tokens: int, seed: int) -> torch.Tensor:
    """x: [n_tokens, K] with strongly correlated, unevenly scaled channels."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(k, k, generator=g) * (torch.rand(k, generator=g) * 3)[None, :]
    return torch.randn(n_tokens, k // 4, generator=g) @ torch.randn(k // 4, k, generator=g) + 0.1 * (
        torch.randn(n_tokens, k, generator=g) @ mix
    )


def _err(w: torch.Tensor, q: torch.Tensor, x: torch.Tensor) -> float:
    return float(((x @ (w - q).t()) ** 2).sum())


def _slow_gptq(w: torch.Tensor, h: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    """Unblocked GPTQ in fp64 with its own min/max grid (sym): update every later column at each step."""
    w = w.double().clone()
    k = w.shape[1]
    hd = h.double() + 0.01 * torch.diag(h).mean().double() * torch.eye(k, dtype=torch.float64)
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(hd)), upper=True)
    maxq = 2**bits - 1
    q = torch.zeros_like(w)
    for c in range(k):
        if c % group == 0:
            amax = w[:, c : c + group].abs().amax(dim=1).clamp(min=1e-12)
            scale = (2 * amax / maxq).half().double()
            zero = (maxq + 1) / 2
        q[:, c] = scale * (torch.clamp(torch.round(w[:, c] / scale) + zero, 0, maxq) - zero)
        e = (w[:, c] - q[:, c]) / u[c, c]
        w[:, c:] -= e[:, None] * u[c, c:][None, :]
    return q


def test_matches_slow_reference() -> None:
    x = _correlated(64, 512, 0)
    h = 2 * x.t() @ x / x.shape[0]
    w = torch.randn(16, 64, generator=torch.Generator().manual_seed(3))
    qw = gptq_quantize(w, h, QuantSpec(bits=4, group_size=32, blocksize=16, static_groups=False))
    ref = _slow_gptq(w, h, 4, 32).float()
    same = torch.isclose(qw.dequant, ref, rtol=1e-4, atol=1e-6).float().mean().item()
    assert same > 0.99
    assert abs(_err(w, qw.dequant, x) - _err(w, ref, x)) <= 1e-3 * _err(w, ref, x)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("act_order", [False, True])
def test_beats_rtn_on_correlated_inputs(bits: int, act_order: bool) -> None:
    x = _correlated(64, 512, bits)
    h = 2 * x.t() @ x / x.shape[0]
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(bits))
    spec = QuantSpec(bits=bits, group_size=32, act_order=act_order)
    g, r = gptq_quantize(w, h, spec), rtn_quantize(w, spec)
    assert _err(w, g.dequant, x) < _err(w, r.dequant, x)
    assert torch.equal(dequantize(g.codes, g.scales, g.zeros, g.g_idx), g.dequant)


def test_dead_columns_are_zeroed() -> None:
    x = _correlated(32, 256, 1)
    x[:, [3, 17]] = 0
    h = x.t() @ x
    qw = gptq_quantize(torch.randn(8, 32), h, QuantSpec(bits=4, group_size=-1))
    assert bool((qw.dequant[:, [3, 17]] == 0).all())
    assert qw.scales.shape == (8, 1) and bool((qw.g_idx == 0).all())


def test_act_order_static_groups_keep_natural_g_idx() -> None:
    x = _correlated(64, 256, 2)
    h = x.t() @ x
    qw = gptq_quantize(torch.randn(8, 64), h, QuantSpec(bits=4, group_size=16, act_order=True, static_groups=True))
    assert torch.equal(qw.g_idx, (torch.arange(64) // 16).to(torch.int32))
    assert torch.equal(dequantize(qw.codes, qw.scales, qw.zeros, qw.g_idx), qw.dequant)


def test_act_order_dynamic_groups_follow_the_permutation() -> None:
    x = _correlated(64, 256, 2)
    h = x.t() @ x
    spec = QuantSpec(bits=4, group_size=16, act_order=True, static_groups=False)
    qw = gptq_quantize(torch.randn(8, 64), h, spec)
    perm = torch.argsort(torch.diag(h), descending=True, stable=True)
    assert torch.equal(qw.g_idx[perm], (torch.arange(64) // 16).to(torch.int32))
    assert spec.desc_act and torch.equal(dequantize(qw.codes, qw.scales, qw.zeros, qw.g_idx), qw.dequant)


def test_cholesky_failure_raises_damping() -> None:
    h = torch.tensor([[1.0, 1.05], [1.05, 1.0]])  # eigenvalues 2.05 and -0.05: needs damping > 5%
    prep = prepare_hessian(h, QuantSpec(percdamp=0.01, damp_increment=0.01))
    assert prep.percdamp == pytest.approx(0.06)
    assert prepare_hessian(torch.eye(2), QuantSpec(percdamp=0.01)).percdamp == 0.01
    with pytest.raises(ValueError, match="not positive definite"):
        prepare_hessian(-torch.eye(8), QuantSpec())


def test_asym_grid_and_bad_shapes() -> None:
    w = torch.randn(8, 64)
    qw = gptq_quantize(w, torch.eye(64), QuantSpec(bits=3, group_size=32, sym=False))
    assert int(qw.codes.min()) >= 0 and int(qw.codes.max()) <= 7 and int(qw.zeros.max()) <= 7
    with pytest.raises(ValueError, match="does not match"):
        gptq_quantize(w, torch.eye(32), QuantSpec())
    with pytest.raises(ValueError, match="multiple of group_size"):
        gptq_quantize(torch.randn(8, 48), torch.eye(48), QuantSpec(group_size=32))
    with pytest.raises(ValueError, match="bits"):
        QuantSpec(bits=5)
