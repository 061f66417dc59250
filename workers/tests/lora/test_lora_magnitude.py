"""The magnitude rule (lora.magnitude): an adapter whose tensors or module delta scaling * B @ A float16 cannot hold
is refused by load_adapter, naming the tensors; one at the limit is served; the delta bound is an upper bound on the
delta's largest entry, reached by rank-1 deltas."""

import re

import pytest
import torch
from adapter_edits import base_with_adapter, edited
from inlaid_worker.lora.adapter import AdapterError, load_adapter
from inlaid_worker.lora.magnitude import FP16_MAX, delta_bound, delta_problem

PREFIX = "base_model.model.model.layers.1.mlp.down_proj"
A_NAME, B_NAME = f"{PREFIX}.lora_A.weight", f"{PREFIX}.lora_B.weight"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    _, adapter, config = base_with_adapter(tmp_path_factory.mktemp("magnitude"), ["q_proj", "down_proj"])
    return adapter, config


@pytest.mark.parametrize(
    ("name", "value", "dtype", "shown"),
    [
        (A_NAME, 1e30, torch.float32, "1e+30"),
        (B_NAME, -float(torch.finfo(torch.float32).max), torch.float32, "3.4e+38"),
        (B_NAME, 1e30, torch.bfloat16, "1e+30"),
        (A_NAME, 65600.0, torch.float32, "6.56e+04"),  # just above float16's largest
    ],
)
def test_refuses_a_tensor_float16_cannot_hold(base, tmp_path, name, value, dtype, shown):
    adapter_dir, config = base

    def put(tensors):
        tensors[name] = tensors[name].to(dtype)
        tensors[name][0, 3] = value

    d = edited(adapter_dir, tmp_path / "a", put)
    message = rf"tensor '{re.escape(name)}' holds values up to {re.escape(shown)} in magnitude; LoRA weights above 65504"
    with pytest.raises(AdapterError, match=message):
        load_adapter(d, config)


def test_a_delta_at_float16s_limit_is_served_and_one_past_it_is_refused(base, tmp_path):
    """One component: delta[0, 0] = scaling * B[0, 0] * A[0, 0] = 2 * b * 65504 is the delta's largest entry."""
    adapter_dir, config = base

    def rank_one(b_value):
        def change(tensors):
            a, b = torch.zeros_like(tensors[A_NAME]), torch.zeros_like(tensors[B_NAME])
            a[0, 0], b[0, 0] = FP16_MAX, b_value
            tensors[A_NAME], tensors[B_NAME] = a, b

        return change

    at = load_adapter(edited(adapter_dir, tmp_path / "at", rank_one(0.5)), config)
    a, b = at.weights[(1, "down_proj")]
    delta = at.scale * (b @ a)
    assert float(delta.abs().max()) == FP16_MAX and bool(torch.isfinite(delta.half()).all())

    past = edited(adapter_dir, tmp_path / "past", rank_one(0.5002))
    with pytest.raises(AdapterError) as err:
        load_adapter(past, config)
    assert str(err.value) == (
        f"tensors '{A_NAME}' and '{B_NAME}': their LoRA delta scaling * lora_B @ lora_A (scaling 2) can reach "
        "6.55e+04 in magnitude; deltas above 65504 (float16's largest value) cannot be served"
    )
    assert bool(torch.isinf(torch.tensor(2 * 0.5002 * FP16_MAX).half()))  # that delta entry really overflows float16


@pytest.mark.parametrize(
    ("change", "scaling"), [({"lora_alpha": 1e9}, "2.5e+08"), ({"lora_alpha": 3e6, "use_rslora": True}, "1.5e+06")]
)
def test_the_scaling_counts(base, tmp_path, change, scaling):
    """Small weights with a huge lora_alpha (alpha / r, or alpha / sqrt(r) with rslora) are refused by the delta."""
    adapter_dir, config = base
    assert load_adapter(adapter_dir, config).scale == 2.0  # the same weights at scaling 2 are served
    d = edited(adapter_dir, tmp_path / "a", lambda _t: None, change)
    message = rf"lora_A\.weight' and '.*lora_B\.weight': .*\(scaling {re.escape(scaling)}\) can reach"
    with pytest.raises(AdapterError, match=message):
        load_adapter(d, config)


def test_negative_scaling_is_bounded_by_its_magnitude():
    a, b = torch.ones(1, 3), torch.ones(5, 1)
    assert delta_bound(a, b, -2.0) == 2.0


@pytest.mark.parametrize("seed", range(4))
def test_delta_bound_is_an_upper_bound_reached_at_rank_one(seed):
    gen = torch.Generator().manual_seed(seed)
    a, b = torch.randn(8, 96, generator=gen), torch.randn(64, 8, generator=gen)
    exact = float((1.5 * (b.double() @ a.double())).abs().max())
    bound = delta_bound(a, b, 1.5)
    assert exact <= bound <= 1.5 * 8 * float(a.abs().max()) * float(b.abs().max())  # never below the delta
    a1, b1 = a[:1], b[:, :1]
    assert delta_bound(a1, b1, 1.5) == pytest.approx(float((1.5 * (b1.double() @ a1.double())).abs().max()), rel=1e-12)


def test_huge_but_finite_float32_values_do_not_overflow_the_bound():
    big = float(torch.finfo(torch.float32).max)
    assert delta_bound(torch.full((2, 4), big), torch.full((3, 2), big), 1.0) == pytest.approx(2 * big * big)


def test_a_scale_below_one_does_not_hide_an_unscaled_product_float16_cannot_hold() -> None:
    # the eager path computes x A^T B^T in the serving dtype and scales afterwards: B @ A must fit on its own
    a = torch.full((1, 4), 300.0)
    b = torch.full((4, 1), 300.0)  # B @ A = 90,000 everywhere; scaled by 1/32: 2,812
    assert delta_problem("a", "b", a, b, 1 / 32) is not None
    assert delta_problem("a", "b", a / 2, b / 2, 1 / 32) is None  # 22,500: fits
