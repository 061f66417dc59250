"""The Llama forward pass over flattened step rows: plain PyTorch, no module objects, no quantization.

Rows are the T new tokens of one step (several sequences, prefill chunks and decode tokens mixed); per-row
positions drive RoPE, the paged KV cache holds every sequence's context, and an optional `LoraContext` adds
each row's adapter delta to the projections its adapter targets. Fused linears go through `linear.linear`, so a
packed quantized matrix (quant_weights.QuantMatrix) can stand in for a dense one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from inlaid_worker.lora.apply import LoraMapping, lora_reference
from inlaid_worker.lora.registry import LoraRegistry
from inlaid_worker.model.attention import AttentionMetadata, paged_attention_reference, write_kv
from inlaid_worker.model.config import ModelConfig
from inlaid_worker.model.linear import linear
from inlaid_worker.model.rope import apply_rope
from inlaid_worker.model.weights import LayerWeights, LlamaWeights


class LoraDelta(Protocol):
    def add(self, y: torch.Tensor, x: torch.Tensor, layer: int, module: str) -> None: ...


@dataclass(frozen=True)
class LoraContext:
    mapping: LoraMapping
    registry: LoraRegistry

    def add(self, y: torch.Tensor, x: torch.Tensor, layer: int, module: str) -> None:
        """y: output columns of `module` ([T, out], a view into the fused output); x: its input [T, in]."""
        weights = self.registry.weights(layer, module)
        if weights:
            lora_reference(y, x, self.mapping, weights)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x32 = x.to(torch.float32)
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


def forward(
    w: LlamaWeights,
    config: ModelConfig,
    token_ids: torch.Tensor,  # [T]
    cos_sin_rows: tuple[torch.Tensor, torch.Tensor],  # each [T, 1, head_dim]
    kv_cache: torch.Tensor,  # [layers, 2, num_blocks, block_size, kv_heads, head_dim]
    meta: AttentionMetadata,
    lora: LoraDelta | None,
) -> torch.Tensor:
    """Returns the final-normed hidden states [T, hidden]."""
    h = F.embedding(token_ids, w.embed)
    for i, layer in enumerate(w.layers):
        h = h + _attention(
            layer,
            i,
            config,
            rms_norm(h, layer.input_norm, config.rms_norm_eps),
            cos_sin_rows,
            kv_cache[i],
            meta,
            lora,
        )
        h = h + _mlp(layer, i, config, rms_norm(h, layer.post_norm, config.rms_norm_eps), lora)
    return rms_norm(h, w.norm, config.rms_norm_eps)


def _attention(
    w: LayerWeights,
    i: int,
    c: ModelConfig,
    x: torch.Tensor,
    cos_sin_rows: tuple[torch.Tensor, torch.Tensor],
    layer_cache: torch.Tensor,
    meta: AttentionMetadata,
    lora: LoraDelta | None,
) -> torch.Tensor:
    qkv = linear(x, w.qkv)  # [T, q_size + 2 * kv_size]
    q_end, k_end = c.q_size, c.q_size + c.kv_size
    if lora is not None:
        lora.add(qkv[:, :q_end], x, i, "q_proj")
        lora.add(qkv[:, q_end:k_end], x, i, "k_proj")
        lora.add(qkv[:, k_end:], x, i, "v_proj")
    t = x.shape[0]
    q = qkv[:, :q_end].reshape(t, c.num_heads, c.head_dim)
    k = qkv[:, q_end:k_end].reshape(t, c.num_kv_heads, c.head_dim)
    v = qkv[:, k_end:].reshape(t, c.num_kv_heads, c.head_dim)
    cos, sin = cos_sin_rows
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    write_kv(layer_cache[0], layer_cache[1], k, v, meta.slot_mapping)
    attn = paged_attention_reference(q, layer_cache[0], layer_cache[1], meta, c.head_dim**-0.5).reshape(t, -1)
    out = linear(attn, w.o)  # [T, hidden]
    if lora is not None:
        lora.add(out, attn, i, "o_proj")
    return out


def _mlp(w: LayerWeights, i: int, c: ModelConfig, x: torch.Tensor, lora: LoraDelta | None) -> torch.Tensor:
    gate_up = linear(x, w.gate_up)  # [T, 2 * intermediate]
    inter = c.intermediate_size
    if lora is not None:
        lora.add(gate_up[:, :inter], x, i, "gate_proj")
        lora.add(gate_up[:, inter:], x, i, "up_proj")
    act = F.silu(gate_up[:, :inter]) * gate_up[:, inter:]
    out = linear(act, w.down)  # [T, hidden]
    if lora is not None:
        lora.add(out, act, i, "down_proj")
    return out
