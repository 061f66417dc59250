"""Serving a GPTQ checkpoint with the plain runner: packed linears are dequantized (W_hat = s * (q - z), the
QuantLinear reference semantics) into the runner's fused layout. This is the CPU serving path; a GPU path
would keep the packed weights and call the quant_matmul kernel instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from inlaid_worker.model.config import ModelConfig
from inlaid_worker.model.weights import LayerWeights, LlamaWeights, build_weights
from inlaid_worker.quant import PackedLinear, dequantize_packed, read_checkpoint

_FUSED = {"qkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "o": ("self_attn.o_proj",),
          "gate_up": ("mlp.gate_proj", "mlp.up_proj"), "down": ("mlp.down_proj",)}


def checkpoint_weights(
    ckpt_dir: str | Path, config: ModelConfig, device: torch.device | str, dtype: torch.dtype
) -> LlamaWeights:
    """LlamaWeights of a GPTQ checkpoint (every quantized linear dequantized to `dtype`)."""
    packed, other = read_checkpoint(ckpt_dir)
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in other.items()}
    for prefix, p in packed.items():
        tensors[f"{prefix}.weight"] = dequantize_packed(p)
    return build_weights(tensors, config, device, dtype)


def layer_from_packed(
    packed: Mapping[str, PackedLinear], old: LayerWeights, device: torch.device | str, dtype: torch.dtype
) -> LayerWeights:
    """A layer's new weights from its seven packed linears ("self_attn.q_proj" -> packed); norms kept."""
    missing = [p for paths in _FUSED.values() for p in paths if p not in packed]
    if missing:
        raise ValueError(f"re-quantized layer lacks {missing}")

    def fused(name: str) -> torch.Tensor:
        w = torch.cat([dequantize_packed(packed[p]) for p in _FUSED[name]])  # [N_total, K] fp32
        ref: torch.Tensor = getattr(old, name)
        if tuple(w.shape) != tuple(ref.shape):
            raise ValueError(f"re-quantized {name} has shape {tuple(w.shape)}, serving has {tuple(ref.shape)}")
        return w.to(device=device, dtype=dtype)

    return LayerWeights(old.input_norm, fused("qkv"), fused("o"), old.post_norm, fused("gate_up"), fused("down"))
