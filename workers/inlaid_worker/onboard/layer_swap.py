"""Putting a re-quantized layer into a serving runner without moving anything a captured CUDA graph reads.

A decode graph (model.decode_graphs) replays the device addresses it was captured with: every weight tensor of
every layer, including the fused copies (q/k/v merged into one `qkv` GPTQ weight, gate/up into `gate_up`) and
act-order permutations. So a swap copies the new layer's tensors into the serving layer's own tensors
(`dst.copy_(src)`, same shapes, dtypes and packing) on the engine thread between two steps: no allocation,
no free, no graph recapture, and the layer objects stay the same. When the new layer's layout differs (a part
split differently, act-order gained or lost, another group size), `copy_layer_into` copies nothing and says
so; the caller then replaces the layer object, which makes the graphs recapture (they drop themselves when the
runner's weights object changes).
"""

from __future__ import annotations

from dataclasses import fields, replace

import torch

from inlaid_worker.kernels.gptq_packing import GPTQWeight
from inlaid_worker.model.quant_weights import QuantMatrix
from inlaid_worker.model.weights import LayerWeights

MATRICES = ("qkv", "o", "gate_up", "down")
_TENSORS = ("qweight", "qzeros", "scales", "perm")


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype


def _part_pairs(dst: GPTQWeight, src: GPTQWeight) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    for f in fields(GPTQWeight):
        if f.name not in _TENSORS and getattr(dst, f.name) != getattr(src, f.name):
            return None  # bits, group size, sym, zero offset or features differ
    pairs = []
    for name in _TENSORS:
        d, s = getattr(dst, name), getattr(src, name)
        if (d is None) != (s is None):
            return None  # act-order gained or lost: another kernel path, another tuning key
        if d is not None:
            if not _same(d, s):
                return None
            pairs.append((d, s))
    return pairs


def _matrix_pairs(dst: object, src: object) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    if isinstance(dst, torch.Tensor) and isinstance(src, torch.Tensor):
        return [(dst, src)] if _same(dst, src) else None
    if isinstance(dst, QuantMatrix) and isinstance(src, QuantMatrix) and len(dst.parts) == len(src.parts):
        pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        for d, s in zip(dst.parts, src.parts, strict=True):
            got = _part_pairs(d, s)
            if got is None:
                return None
            pairs += got
        return pairs
    return None  # dense vs packed, or the fused matrix split into another number of parts


def inplace_pairs(dst: LayerWeights, src: LayerWeights) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """(serving tensor, new tensor) for every tensor of the four matrices, or None when any layout differs."""
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    for name in MATRICES:
        got = _matrix_pairs(getattr(dst, name), getattr(src, name))
        if got is None:
            return None
        pairs += got
    return pairs


def copy_layer_into(dst: LayerWeights, src: LayerWeights) -> bool:
    """Copy src's matrices (any device, e.g. staged on the host) into dst's tensors in place; norms untouched.
    All or nothing: False, with nothing copied, when a layout differs. Call it between steps on the thread
    that runs them (copies are ordered on that thread's current stream, before the next step's kernels)."""
    pairs = inplace_pairs(dst, src)
    if pairs is None:
        return False
    with torch.no_grad():
        for d, s in pairs:
            d.copy_(s)
    return True


def _clone_host(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().to("cpu", copy=True)


def host_copy(layer: LayerWeights) -> LayerWeights:
    """A copy of the layer's four matrices in host memory (never aliasing the serving tensors, even when those
    are on the host): what a failed job copies back."""

    def clone(m: torch.Tensor | QuantMatrix) -> torch.Tensor | QuantMatrix:
        if isinstance(m, torch.Tensor):
            return m.detach().to("cpu", copy=True)
        return QuantMatrix(tuple(replace(p, **{n: _clone_host(getattr(p, n)) for n in _TENSORS}) for p in m.parts))

    return LayerWeights(layer.input_norm, clone(layer.qkv), clone(layer.o), layer.post_norm,  # type: ignore[arg-type]
                        clone(layer.gate_up), clone(layer.down))  # type: ignore[arg-type]


def weight_pointers(layers: tuple[LayerWeights, ...]) -> list[int]:
    """Device addresses of every matrix tensor of `layers` (what a captured graph reads), in a fixed order."""
    out = []
    for layer in layers:
        for name in MATRICES:
            m = getattr(layer, name)
            parts = [m] if isinstance(m, torch.Tensor) else [t for p in m.parts for t in
                                                              (p.qweight, p.qzeros, p.scales, p.perm) if t is not None]
            out += [t.data_ptr() for t in parts]
    return out
