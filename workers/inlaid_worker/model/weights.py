"""Base-model weights: read from safetensors only (never pickle), checked against the config, laid out for
the forward pass.

Layout: q/k/v are concatenated into one `qkv` matrix and gate/up into one `gate_up` matrix (one matmul each);
LoRA deltas are added onto the matching output slices (see `PROJ_SLICES`). With tied embeddings the LM head
is the embedding matrix. `with_norm_pairs` adds each layer's two norm weights in pair order (`norm_pairs`, read by
the "+dn2" decode fusion's shuffled formation, kernels.quant_hgemvr); the model runner applies it once where it takes
its weights (load, or a replaced weights object). The pairs are a copy, kept with what they were made from
(`NormPairs`: the two norm tensors themselves and their version counters then), so pairs that no longer match their
layer are never read: `with_norm_pairs` makes them anew where a layer's norm is another tensor (dataclasses.replace
keeps the old pairs; layer_from_packed-style layers are built without) or was written in place since (torch bumps a
tensor's `_version` at every in-place op on it or a view), and the forward (`current_pairs`) passes None for stale
pairs, so the "+dn2" consumers form x per thread from the norm itself (on CUDA the step then falls back to
"swiglu+cfin+g": llama_fast._dn_picks). Not seen: writes through `.data` and into inference tensors (they keep no
version counter: identity is checked only), and a decode graph captured before an in-place write keeps the pairs it
captured until the runner's weights are set again (its captures are dropped then). Nothing is computed in
__post_init__: layer_from_packed builds layers off the engine thread.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import safe_open

from inlaid_worker.model.config import ModelConfig

_PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.bin")


class WeightsError(ValueError):
    """Weights are missing, pickled, or do not match config.json."""


class NormPairs(NamedTuple):
    """A layer's two norm weights in pair order (norm_pairs) and what they were made from: the norm tensors themselves
    (compared by identity; held, so an id is never reused while they are) and their version counters then."""

    input: torch.Tensor  # norm_pairs(input_norm)
    post: torch.Tensor  # norm_pairs(post_norm)
    sources: tuple[torch.Tensor, torch.Tensor]  # (input_norm, post_norm)
    versions: tuple[int | None, int | None]  # their _version then (None: an inference tensor, which keeps none)

    def made_from(self, layer: LayerWeights) -> bool:
        """Were these made from the layer's norms as they are now (the same tensors, not written in place since)?"""
        a, b = self.sources
        return (a is layer.input_norm and b is layer.post_norm
                and self.versions == (_version(a), _version(b)))  # fmt: skip


@dataclass(frozen=True)
class LayerWeights:
    input_norm: torch.Tensor  # [hidden]
    qkv: torch.Tensor  # [q_size + 2 * kv_size, hidden]
    o: torch.Tensor  # [hidden, q_size]
    post_norm: torch.Tensor  # [hidden]
    gate_up: torch.Tensor  # [2 * intermediate, hidden]
    down: torch.Tensor  # [hidden, intermediate]
    # (input_norm, post_norm) in pair order and what they were made from (with_norm_pairs): None until the runner makes
    # them, or where the norms are not fp16 (the "+dn2" fusion then forms its x per thread); read through current_pairs
    norm_pairs: NormPairs | None = None


@dataclass(frozen=True)
class LlamaWeights:
    embed: torch.Tensor  # [vocab, hidden]
    layers: tuple[LayerWeights, ...]
    norm: torch.Tensor  # [hidden]
    lm_head: torch.Tensor  # [vocab, hidden] (the embedding itself when tied)


def norm_pairs(weight: torch.Tensor) -> torch.Tensor | None:
    """A norm weight [K] in pair order: (w[k + i], w[k + 4 + i]), i = 0..3, for every 8 values k (one 32-bit word
    per x pair of the half2 GEMV: kernels.quant_hgemvr's DNORM2 "shfl" loads one word instead of two halves); None
    unless the weight is a contiguous fp16 vector of a multiple of 8 values."""
    if weight.dtype != torch.float16 or weight.dim() != 1 or weight.numel() % 8 or weight.stride(0) != 1:
        return None
    return weight.reshape(-1, 2, 4).transpose(1, 2).contiguous().reshape(-1)


def _version(t: torch.Tensor) -> int | None:
    """torch's version counter of t (bumped by every in-place op on t or a view of it); None for an inference tensor."""
    try:
        return t._version
    except RuntimeError:  # "Inference tensors do not track version counter"
        return None


def make_norm_pairs(layer: LayerWeights) -> NormPairs | None:
    """The layer's two norms in pair order with their sources, or None unless both are contiguous fp16 [8k]."""
    a, b = layer.input_norm, layer.post_norm
    versions = (_version(a), _version(b))  # (before the copies: making them writes nothing)
    pa, pb = norm_pairs(a), norm_pairs(b)
    return None if pa is None or pb is None else NormPairs(pa, pb, (a, b), versions)


def current_pairs(layer: LayerWeights) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The layer's (input, post) pair-ordered norms where they were made from its norms as they are now, else None
    (none made, or stale: the "+dn2" consumers then form x from the norms per thread)."""
    p = layer.norm_pairs
    return (p.input, p.post) if p is not None and p.made_from(layer) else None


def with_norm_pairs(w: LlamaWeights) -> LlamaWeights:
    """w with norm_pairs made for every layer that has none or stale ones (NormPairs.made_from: a norm replaced by
    another tensor, or written in place since; one small copy each; a layer whose norms cannot have pairs drops stale
    ones) and every other layer kept as it is; w itself where nothing changed (the decode graphs keep their
    captures)."""
    layers = []
    for layer in w.layers:
        if layer.norm_pairs is None or not layer.norm_pairs.made_from(layer):
            pairs = make_norm_pairs(layer)
            if pairs is not None or layer.norm_pairs is not None:
                layer = replace(layer, norm_pairs=pairs)
        layers.append(layer)
    if all(x is y for x, y in zip(layers, w.layers, strict=True)):
        return w
    return replace(w, layers=tuple(layers))


def proj_slices(config: ModelConfig) -> dict[str, tuple[str, int, int]]:
    """Projection name -> (fused matrix, first output row, end row) inside that matrix."""
    q, kv, inter = config.q_size, config.kv_size, config.intermediate_size
    return {
        "q_proj": ("qkv", 0, q),
        "k_proj": ("qkv", q, q + kv),
        "v_proj": ("qkv", q + kv, q + 2 * kv),
        "o_proj": ("o", 0, config.hidden_size),
        "gate_proj": ("gate_up", 0, inter),
        "up_proj": ("gate_up", inter, 2 * inter),
        "down_proj": ("down", 0, config.hidden_size),
    }


def safetensors_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [model_dir / name for name in shards]
    single = model_dir / "model.safetensors"
    if single.is_file():
        return [single]
    pickled = [name for name in _PICKLE_FILES if (model_dir / name).exists()]
    if pickled:
        raise WeightsError(
            f"{model_dir} has only pickle weights ({', '.join(pickled)}); Inlaid loads safetensors only "
            "(convert with save_pretrained(safe_serialization=True))"
        )
    raise WeightsError(f"{model_dir} has no model.safetensors or model.safetensors.index.json")


def read_tensors(model_dir: str | Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for file in safetensors_files(Path(model_dir)):
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():
                tensors[name] = f.get_tensor(name)
    return tensors


def load_weights(
    model_dir: str | Path, config: ModelConfig, device: torch.device | str, dtype: torch.dtype
) -> LlamaWeights:
    return build_weights(read_tensors(model_dir), config, device, dtype)


def build_weights(
    tensors: dict[str, torch.Tensor], config: ModelConfig, device: torch.device | str, dtype: torch.dtype
) -> LlamaWeights:
    def get(name: str, shape: tuple[int, ...]) -> torch.Tensor:
        if name not in tensors:
            raise WeightsError(f"missing tensor {name!r}")
        t = tensors[name]
        if tuple(t.shape) != shape:
            raise WeightsError(f"tensor {name!r} has shape {tuple(t.shape)}, expected {shape} from config.json")
        return t.to(device=device, dtype=dtype)

    def linear(layer: int, module: str) -> torch.Tensor:
        group = "self_attn" if module in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
        return get(f"model.layers.{layer}.{group}.{module}.weight", config.linear_shape(module))

    h = config.hidden_size
    layers = []
    for i in range(config.num_layers):
        layers.append(
            LayerWeights(
                input_norm=get(f"model.layers.{i}.input_layernorm.weight", (h,)),
                qkv=torch.cat([linear(i, "q_proj"), linear(i, "k_proj"), linear(i, "v_proj")]),
                o=linear(i, "o_proj"),
                post_norm=get(f"model.layers.{i}.post_attention_layernorm.weight", (h,)),
                gate_up=torch.cat([linear(i, "gate_proj"), linear(i, "up_proj")]),
                down=linear(i, "down_proj"),
            )
        )
    extra = sorted(n for n in tensors if n.startswith("model.layers.") and int(n.split(".")[2]) >= config.num_layers)
    if extra:
        raise WeightsError(f"checkpoint has more layers than num_hidden_layers={config.num_layers}: {extra[0]}")
    embed = get("model.embed_tokens.weight", (config.vocab_size, h))
    if config.tie_word_embeddings:
        lm_head = embed
    else:
        lm_head = get("lm_head.weight", (config.vocab_size, h))
    return LlamaWeights(embed=embed, layers=tuple(layers), norm=get("model.norm.weight", (h,)), lm_head=lm_head)
