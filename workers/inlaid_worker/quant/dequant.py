"""Turn a quantized checkpoint back into a runnable model: dequantized (fake-quantized) weights for
evaluation, or QuantLinear modules holding the packed weights (CPU serving path)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .checkpoint import read_checkpoint
from .pack import dequantize_packed
from .qlinear import QuantLinear


def dequantized_state_dict(ckpt_dir: str | Path, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A plain state dict: every quantized linear's `.weight` = W_hat [N, K] in `dtype`, other tensors as stored."""
    packed, other = read_checkpoint(ckpt_dir)
    out = {name: t.to(dtype) if t.is_floating_point() else t for name, t in other.items()}
    for prefix, p in packed.items():
        out[f"{prefix}.weight"] = dequantize_packed(p).to(dtype)
    return out


def _model_skeleton(ckpt_dir: str | Path, dtype: torch.dtype) -> nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    raw = json.loads((Path(ckpt_dir) / "config.json").read_text())
    raw.pop("quantization_config", None)
    config = AutoConfig.for_model(**raw)
    return AutoModelForCausalLM.from_config(config, dtype=dtype).eval()


def load_dequantized_model(ckpt_dir: str | Path, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A plain transformers model whose linears hold the dequantized weights (for quality evaluation;
    PEFT adapters load on top of it exactly as on the full-precision base)."""
    model = _model_skeleton(ckpt_dir, dtype)
    missing, unexpected = model.load_state_dict(dequantized_state_dict(ckpt_dir, dtype), strict=False)
    missing = [m for m in missing if m != "lm_head.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise ValueError(f"checkpoint does not fit its config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()
    return model


def load_quantized_model(ckpt_dir: str | Path, dtype: torch.dtype = torch.float32, cache: bool = True) -> nn.Module:
    """A transformers model whose seven linears per layer are QuantLinear over the packed weights."""
    packed, other = read_checkpoint(ckpt_dir)
    model = _model_skeleton(ckpt_dir, dtype)
    for prefix, p in packed.items():
        parent_name, child = prefix.rsplit(".", 1)
        parent = model.get_submodule(parent_name)
        bias = other.pop(f"{prefix}.bias", None)
        setattr(parent, child, QuantLinear(p, bias, cache=cache))
    missing, unexpected = model.load_state_dict(
        {k: v.to(dtype) if v.is_floating_point() else v for k, v in other.items()}, strict=False
    )
    quant_buffers = {f"{p}.{s}" for p in packed for s in ("qweight", "qzeros", "scales", "g_idx", "bias")}
    missing = [m for m in missing if m not in quant_buffers and m != "lm_head.weight"]
    if missing or unexpected:
        raise ValueError(f"checkpoint does not fit its config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()
    return model
