"""Per-layer buffers of the layer loop are freed by reference counting once the layer is done: nothing (no
reference cycle, no list across layers) keeps a layer's fresh or aggregated Hessians, its stored triangles and
running state, or GPTQ's prepared inverse alive while the next layers run. Measured on SmolLM2-135M
(bench/results/quantizer-memory-2026-11-30-s10b.md): the child's live heap grows by ~2 MiB a layer (the packed
weights the checkpoint writer collects); its memory growth was glibc's free memory (onboard/memory.py)."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import Tiny
from inlaid_worker.quant import LayerResult, QuantSpec, layerwise, quantize_checkpoint, update_checkpoint

SPEC = QuantSpec(bits=4, group_size=32, act_order=True, static_groups=True)


def _alive(refs: list[weakref.ref[torch.Tensor]]) -> int:
    return sum(r() is not None for r in refs)


def test_a_layers_buffers_are_freed_before_the_next_layer_is_reported(
    tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    quantize_checkpoint(tiny.base, tmp_path / "ab", "mlgptq", SPEC, tiny.tasks("ab"))
    by_layer: dict[int, list[weakref.ref[torch.Tensor]]] = {}
    prepared: list[weakref.ref[torch.Tensor]] = []
    real_prepare = layerwise.prepare_hessian

    def watched_prepare(h: torch.Tensor, spec: QuantSpec) -> Any:
        prep = real_prepare(h, spec)
        prepared.append(weakref.ref(prep.hinv))
        return prep

    monkeypatch.setattr(layerwise, "prepare_hessian", watched_prepare)
    earlier_alive: dict[int, int] = {}

    def on_layer(res: LayerResult) -> None:
        earlier_alive[res.layer] = sum(_alive(refs) for refs in by_layer.values())
        assert res.stored is not None and res.aggregated is not None
        tensors = [h for by_group in res.fresh.values() for h in by_group.values()]
        tensors += list(res.aggregated.values())
        tensors += [t for by_group in res.stored.tasks.values() for t in by_group.values()]
        tensors += [p for state in res.stored.running.values() for p in state.parts.values()]
        by_layer[res.layer] = [weakref.ref(t) for t in tensors]
        earlier_alive[res.layer] += _alive(prepared)  # this layer's too: freed when its GPTQ returned
        assert _alive(by_layer[res.layer]) == len(tensors)  # the watch itself works: alive while reported

    gc.disable()  # freed by reference counting, not by a collection that happens to run
    try:
        update_checkpoint(tmp_path / "ab", tiny.base, tmp_path / "ab+c", add=tiny.tasks("c"), on_layer=on_layer)
        after = sum(_alive(refs) for refs in by_layer.values()) + _alive(prepared)
    finally:
        gc.enable()
    assert sorted(by_layer) == [0, 1] and min(len(refs) for refs in by_layer.values()) >= 8
    assert len(prepared) == 8  # 4 input groups x 2 layers
    assert earlier_alive == {0: 0, 1: 0}
    assert after == 0
