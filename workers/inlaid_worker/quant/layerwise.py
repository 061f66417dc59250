"""The layer loop shared by full and incremental quantization.

For each decoder layer: move it to the device (the only layer there), advance every calibration stream
through it (fresh per-task Hessians), ask `hessians_for` for the Hessian of each input group, quantize the
seven linears from their full-precision weights, pack them, move the layer back and yield the result.
`reuse` may hand over a layer's packed weights from an earlier identical run (a resumed re-quantization,
onboard/layer_store.py): the streams and Hessians still advance through that layer (the Hessian store and the
next layers need them), only its GPTQ is skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .gptq import PreparedHessian, gptq_quantize, prepare_hessian
from .hessian import GROUPS, MODULE_GROUP, CalibStream, decoder_layers, step_layer
from .layer_hessians import LayerHessians, StoredLayer
from .pack import PackedLinear, pack_weight
from .rtn import rtn_quantize
from .spec import QuantSpec

LINEAR_MODULES = tuple(MODULE_GROUP)
# (layer index, fresh {task: {group: H}}) -> the Hessians to quantize with and store, or None for RTN
HessianFn = Callable[[int, dict[str, dict[str, torch.Tensor]]], LayerHessians | None]
# layer index -> that layer's packed linears from an earlier run with the same inputs, or None to quantize it
ReuseFn = Callable[[int], dict[str, PackedLinear] | None]


@dataclass(frozen=True)
class LayerResult:
    layer: int
    num_layers: int
    packed: dict[str, PackedLinear]  # "self_attn.q_proj" -> packed weight
    fresh: dict[str, dict[str, torch.Tensor]]  # task -> group -> H_t computed for this layer
    aggregated: dict[str, torch.Tensor] | None  # group -> H used by GPTQ (None for RTN)
    percdamp: dict[str, float]  # group -> damping GPTQ ended up using
    seconds: float
    stored: StoredLayer | None = None  # what this layer adds to the Hessian store (None for RTN)
    reused: bool = False  # packed came from `reuse` (no GPTQ ran for this layer)


def quantize_layers(
    model: nn.Module,
    streams: Sequence[CalibStream],
    hessians_for: HessianFn,
    spec: QuantSpec,
    checkpoint_format: str,
    device: torch.device,
    reuse: ReuseFn | None = None,
) -> Iterator[LayerResult]:
    layers = decoder_layers(model)
    for idx, layer in enumerate(layers):
        t0 = time.perf_counter()
        layer.to(device)
        try:
            fresh = {s.name: step_layer(layer, idx, s) for s in streams}
            hs = hessians_for(idx, fresh)
            agg = hs.aggregated if hs is not None else None
            kept = reuse(idx) if reuse is not None else None
            packed, damp = (kept, {}) if kept is not None else _quantize_layer(layer, agg, spec, checkpoint_format)
        finally:
            layer.to("cpu")
        fresh_cpu = {t: {g: h.cpu() for g, h in by_group.items()} for t, by_group in fresh.items()}
        agg_cpu = {g: h.cpu() for g, h in agg.items()} if agg is not None else None
        stored = hs.stored if hs is not None else None
        yield LayerResult(idx, len(layers), packed, fresh_cpu, agg_cpu, damp, time.perf_counter() - t0, stored,
                          kept is not None)


def _quantize_layer(
    layer: nn.Module, agg: dict[str, torch.Tensor] | None, spec: QuantSpec, checkpoint_format: str
) -> tuple[dict[str, PackedLinear], dict[str, float]]:
    prepared: dict[str, PreparedHessian] = {}
    if agg is not None:
        missing = set(GROUPS) - set(agg)
        if missing:
            raise ValueError(f"no Hessian for input groups {sorted(missing)}")
    packed: dict[str, PackedLinear] = {}
    for path in LINEAR_MODULES:
        lin = layer.get_submodule(path)
        if not isinstance(lin, nn.Linear):
            raise ValueError(f"{path} is not nn.Linear")
        w = lin.weight.detach()  # [N, K] full precision
        if agg is None:
            qw = rtn_quantize(w, spec)
        else:
            group = MODULE_GROUP[path]
            if group not in prepared:
                prepared[group] = prepare_hessian(agg[group].to(w.device), spec)
            qw = gptq_quantize(w, prepared[group], spec)
        packed[path] = _to_cpu(pack_weight(qw, checkpoint_format))
    return packed, {g: p.percdamp for g, p in prepared.items()}


def _to_cpu(p: PackedLinear) -> PackedLinear:
    return PackedLinear(p.qweight.cpu(), p.qzeros.cpu(), p.scales.cpu(), p.g_idx.cpu(), p.bits, p.checkpoint_format)
