"""Swapping one re-quantized layer into a serving runner: its packed linears are dequantized
(W_hat = s * (q - z), the QuantLinear reference semantics) into the runner's fused layout.
Whole checkpoints are loaded by inlaid_worker.model.quant_weights.load_gptq_weights.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from inlaid_worker.model.quant_weights import FUSED
from inlaid_worker.model.weights import LayerWeights
from inlaid_worker.quant import PackedLinear, dequantize_packed


def layer_from_packed(
    packed: Mapping[str, PackedLinear], old: LayerWeights, device: torch.device | str, dtype: torch.dtype
) -> LayerWeights:
    """A layer's new weights from its seven packed linears ("self_attn.q_proj" -> packed); norms kept."""
    missing = [p for paths in FUSED.values() for p in paths if p not in packed]
    if missing:
        raise ValueError(f"re-quantized layer lacks {missing}")

    def fused(name: str) -> torch.Tensor:
        w = torch.cat([dequantize_packed(packed[p]) for p in FUSED[name]])  # [N_total, K] fp32
        ref: torch.Tensor = getattr(old, name)
        if tuple(w.shape) != tuple(ref.shape):
            raise ValueError(f"re-quantized {name} has shape {tuple(w.shape)}, serving has {tuple(ref.shape)}")
        return w.to(device=device, dtype=dtype)

    return LayerWeights(old.input_norm, fused("qkv"), fused("o"), old.post_norm, fused("gate_up"), fused("down"))
