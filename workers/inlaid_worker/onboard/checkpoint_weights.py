"""Swapping one re-quantized layer into a serving runner. A runner serving packed weights (the triton backend:
`QuantMatrix` linears run by quant_matmul) gets the new layer packed too, exactly what
inlaid_worker.model.quant_weights.load_gptq_weights builds from the published checkpoint; a runner serving
dense weights gets them dequantized (W_hat = s * (q - z), the QuantLinear reference semantics).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch

from inlaid_worker.model.quant_weights import FUSED, QuantMatrix, quant_matrix
from inlaid_worker.model.weights import LayerWeights
from inlaid_worker.quant import PackedLinear, dequantize_packed, read_quantization_config


def packing_of(ckpt_dir: str | Path) -> tuple[int, bool]:
    """(group_size, sym) of a GPTQ checkpoint: what packed serving layers are built with."""
    qc = read_quantization_config(ckpt_dir)
    return int(qc["group_size"]), bool(qc.get("sym", True))


def layer_from_packed(
    packed: Mapping[str, PackedLinear], old: LayerWeights, device: torch.device | str, dtype: torch.dtype,
    *, group_size: int | None = None, sym: bool = True,
) -> LayerWeights:
    """A layer's new weights from its seven packed linears ("self_attn.q_proj" -> packed), the matrices on
    `device` (the host, to stage them: see matrices_to); norms kept. Packed like `old` when `old` serves
    QuantMatrix linears (then `group_size` is required), else dense in `dtype`."""
    missing = [p for paths in FUSED.values() for p in paths if p not in packed]
    if missing:
        raise ValueError(f"re-quantized layer lacks {missing}")
    as_packed = isinstance(old.qkv, QuantMatrix)
    if as_packed and group_size is None:
        raise ValueError("the serving layer is packed: pass the checkpoint's group_size (packing_of)")

    def fused(name: str) -> torch.Tensor | QuantMatrix:
        ref = getattr(old, name)
        w: torch.Tensor | QuantMatrix
        if as_packed:
            w = quant_matrix([packed[p] for p in FUSED[name]], group_size or 0, sym, device)
        else:
            w = torch.cat([dequantize_packed(packed[p]) for p in FUSED[name]])  # [N_total, K] fp32
        if tuple(w.shape) != tuple(ref.shape):
            raise ValueError(f"re-quantized {name} has shape {tuple(w.shape)}, serving has {tuple(ref.shape)}")
        return w if isinstance(w, QuantMatrix) else w.to(device=device, dtype=dtype)

    return LayerWeights(old.input_norm, fused("qkv"), fused("o"), old.post_norm, fused("gate_up"),  # type: ignore[arg-type]
                        fused("down"))  # type: ignore[arg-type]


def matrices_to(layer: LayerWeights, device: torch.device | str) -> LayerWeights:
    """The layer with its four matrices (dense or packed) moved to `device`; norms untouched. The manager
    builds a layer on the host and calls this on the engine thread, so the serving process touches the GPU
    from that one thread (a CUDA graph capture there forbids other threads' device calls)."""

    def move(m: torch.Tensor | QuantMatrix) -> torch.Tensor | QuantMatrix:
        if isinstance(m, torch.Tensor):
            return m.to(device)
        return QuantMatrix(tuple(
            replace(p, qweight=p.qweight.to(device), qzeros=p.qzeros.to(device), scales=p.scales.to(device),
                    perm=None if p.perm is None else p.perm.to(device))
            for p in m.parts))  # fmt: skip

    return replace(layer, qkv=move(layer.qkv), o=move(layer.o), gate_up=move(layer.gate_up), down=move(layer.down))
