"""Incremental = full: adding C to {A, B} is bit-identical to {A, B, C} at once; removing C restores {A, B}."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import Tiny
from inlaid_worker.quant import LayerResult, QuantSpec, quantize_checkpoint, read_checkpoint, update_checkpoint
from inlaid_worker.quant.incremental import plan_update, requantize_layers
from inlaid_worker.quant.quantize import load_fp_model

SPEC = QuantSpec(bits=4, group_size=32, act_order=True, static_groups=True)


def _same(a: Path, b: Path) -> bool:
    pa, pb = read_checkpoint(a)[0], read_checkpoint(b)[0]
    return pa.keys() == pb.keys() and all(
        torch.equal(pa[k].qweight, pb[k].qweight) and torch.equal(pa[k].qzeros, pb[k].qzeros)
        and torch.equal(pa[k].scales, pb[k].scales) and torch.equal(pa[k].g_idx, pb[k].g_idx) for k in pa
    )


@pytest.mark.parametrize(("method", "aggregation"), [("mlgptq", None), ("mlgptq", "max"), ("gptq", None)])
def test_add_then_remove(method: str, aggregation: str | None, tiny: Tiny, tmp_path: Path) -> None:
    adapters = method == "mlgptq"
    quantize_checkpoint(tiny.base, tmp_path / "ab", method, SPEC, tiny.tasks("ab", adapters), aggregation=aggregation)  # type: ignore[arg-type]
    quantize_checkpoint(tiny.base, tmp_path / "abc", method, SPEC, tiny.tasks("abc", adapters), aggregation=aggregation)  # type: ignore[arg-type]
    seen: list[int] = []
    update_checkpoint(tmp_path / "ab", tiny.base, tmp_path / "ab+c", add=tiny.tasks("c", adapters),
                      on_layer=lambda r: seen.append(r.layer))
    update_checkpoint(tmp_path / "ab+c", tiny.base, tmp_path / "ab+c-c", remove=["c"])
    assert seen == [0, 1]
    assert not _same(tmp_path / "ab", tmp_path / "abc")  # C really changes the weights
    assert _same(tmp_path / "ab+c", tmp_path / "abc")
    assert _same(tmp_path / "ab+c-c", tmp_path / "ab")


def test_layer_iterator_yields_fresh_hessians_of_new_task_only(tiny: Tiny, tmp_path: Path) -> None:
    quantize_checkpoint(tiny.base, tmp_path / "ab", "mlgptq", SPEC, tiny.tasks("ab"))
    plan = plan_update(tmp_path / "ab", add=tiny.tasks("c"))
    results: list[LayerResult] = list(
        requantize_layers(load_fp_model(tiny.base), tiny.base, tmp_path / "ab", plan)
    )
    assert [r.layer for r in results] == [0, 1] and all(set(r.fresh) == {"c"} for r in results)
    assert set(results[0].packed) >= {"self_attn.q_proj", "mlp.down_proj"}


def test_bad_updates(tiny: Tiny, tmp_path: Path) -> None:
    quantize_checkpoint(tiny.base, tmp_path / "ab", "mlgptq", SPEC, tiny.tasks("ab"))
    quantize_checkpoint(tiny.base, tmp_path / "rtn", "rtn", SPEC)
    with pytest.raises(ValueError, match="already present"):
        plan_update(tmp_path / "ab", add=tiny.tasks("a"))
    with pytest.raises(ValueError, match="cannot remove"):
        plan_update(tmp_path / "ab", remove=["c"])
    with pytest.raises(ValueError, match="no task would remain"):
        plan_update(tmp_path / "ab", remove=["a", "b"])
    with pytest.raises(ValueError, match="needs an adapter"):
        plan_update(tmp_path / "ab", add=tiny.tasks("c", adapters=False))
    with pytest.raises(ValueError, match="no stored Hessians"):
        plan_update(tmp_path / "rtn", add=tiny.tasks("c"))
