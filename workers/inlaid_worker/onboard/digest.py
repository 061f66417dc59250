"""A fingerprint of the weights a worker serves: sha256 per decoder layer over its four matrices (the packed
tensors of a `QuantMatrix`, or the dense matrix's bytes) and one over all layers. Two workers with equal
digests serve bit-identical layers. Diagnostic: it reads every layer (run it between steps)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch

from inlaid_worker.model.quant_weights import QuantMatrix

_MATRICES = ("qkv", "o", "gate_up", "down")


def _feed(h: Any, t: torch.Tensor | None) -> None:
    if t is None:
        h.update(b"none")
        return
    c = t.detach().to("cpu").contiguous()
    h.update(f"{c.dtype}{tuple(c.shape)}".encode())
    h.update(c.view(torch.uint8).numpy().tobytes() if c.numel() else b"")


def layer_digest(layer: Any) -> str:
    h = hashlib.sha256()
    for name in _MATRICES:
        m = getattr(layer, name)
        h.update(name.encode())
        if isinstance(m, QuantMatrix):
            for p in m.parts:
                for t in (p.qweight, p.qzeros, p.scales, p.perm):
                    _feed(h, t)
        else:
            _feed(h, m)
    return h.hexdigest()


def weights_digest(layers: Sequence[Any]) -> tuple[str, list[str]]:
    per_layer = [layer_digest(x) for x in layers]
    return hashlib.sha256("".join(per_layer).encode()).hexdigest(), per_layer
