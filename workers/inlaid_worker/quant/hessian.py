"""Layer-by-layer Hessian collection on the full-precision model.

A calibration stream is one task's sequences with (or without) its adapter. Layer-0 inputs are captured
once (hidden states plus the keyword arguments the model passes its decoder layers: position embeddings,
mask); `step_layer` then runs one decoder layer on a stream with the task's LoRA hooks active, accumulates
per input group H_t = (2 / n_t) sum_x x x^T in fp32 (n_t = the stream's tokens) and replaces the stream's
inputs by the layer's outputs. Streams never see quantized weights, so a task's Hessians do not depend on
which other tasks are quantized with it (what makes incremental quantization exact).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .adapter import TaskAdapter, lora_active

# input group -> the module whose input it is; modules of a group share one Hessian
GROUP_INPUT = {"qkv": "self_attn.q_proj", "o": "self_attn.o_proj", "gate_up": "mlp.gate_proj", "down": "mlp.down_proj"}
MODULE_GROUP = {
    "self_attn.q_proj": "qkv", "self_attn.k_proj": "qkv", "self_attn.v_proj": "qkv", "self_attn.o_proj": "o",
    "mlp.gate_proj": "gate_up", "mlp.up_proj": "gate_up", "mlp.down_proj": "down",
}
GROUPS = tuple(GROUP_INPUT)


class _StopForward(Exception):
    pass


@dataclass
class CalibStream:
    """One task's calibration data flowing through the layers. inputs[i]: hidden [1, S_i, D] + layer kwargs."""

    name: str
    adapter: TaskAdapter | None
    inputs: list[tuple[torch.Tensor, dict[str, Any]]] = field(default_factory=list)
    tokens: int = 0
    layer: int = 0  # index of the layer the inputs belong to


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError("expected a Llama-style causal LM with model.layers")
    return layers


@torch.no_grad()
def open_stream(
    model: nn.Module, name: str, adapter: TaskAdapter | None, seqs: Sequence[torch.Tensor], device: torch.device
) -> CalibStream:
    """Capture layer-0 inputs of every sequence (token ids [S]); only the embedding runs, on `device`."""
    if not seqs:
        raise ValueError(f"task {name!r}: no calibration sequences")
    inner = model.model  # type: ignore[attr-defined]
    layer0 = decoder_layers(model)[0]
    captured: list[tuple[torch.Tensor, dict[str, Any]]] = []

    def catch(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = args[0] if args else kwargs.pop("hidden_states")
        kw = {k: v for k, v in kwargs.items() if k not in ("past_key_values", "use_cache")}
        captured.append((hidden, kw))
        raise _StopForward

    moved = [inner.embed_tokens, inner.rotary_emb]
    for m in moved:
        m.to(device)
    handle = layer0.register_forward_pre_hook(catch, with_kwargs=True)
    try:
        for ids in seqs:
            if ids.dim() != 1 or ids.numel() == 0:
                raise ValueError(f"task {name!r}: calibration sequences must be non-empty 1-D token id tensors")
            try:
                inner(input_ids=ids.view(1, -1).to(device), use_cache=False)
            except _StopForward:
                pass
    finally:
        handle.remove()
        for m in moved:
            m.to("cpu")
    tokens = sum(int(s.numel()) for s in seqs)
    return CalibStream(name=name, adapter=adapter, inputs=captured, tokens=tokens)


@torch.no_grad()
def step_layer(layer: nn.Module, layer_idx: int, stream: CalibStream) -> dict[str, torch.Tensor]:
    """Run `layer` (already on the stream's device) over the stream; return {group: H [K, K] fp32}."""
    if stream.layer != layer_idx:
        raise ValueError(f"stream {stream.name!r} is at layer {stream.layer}, not {layer_idx}")
    sums: dict[str, torch.Tensor] = {}
    handles = [
        layer.get_submodule(path).register_forward_pre_hook(_accumulate(sums, g)) for g, path in GROUP_INPUT.items()
    ]
    deltas = stream.adapter.for_layer(layer_idx) if stream.adapter is not None else {}
    outputs: list[tuple[torch.Tensor, dict[str, Any]]] = []
    try:
        with lora_active(layer, deltas):
            for hidden, kw in stream.inputs:
                out = layer(hidden, **kw)
                outputs.append((out[0] if isinstance(out, tuple) else out, kw))
    finally:
        for h in handles:
            h.remove()
    stream.inputs = outputs
    stream.layer = layer_idx + 1
    return {g: finalize(s, stream.tokens) for g, s in sums.items()}


def _accumulate(sums: dict[str, torch.Tensor], group: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
    def pre_hook(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0].reshape(-1, args[0].shape[-1]).float()  # [tokens, K]
        xtx = x.t() @ x
        sums[group] = sums[group] + xtx if group in sums else xtx

    return pre_hook


def finalize(xtx_sum: torch.Tensor, tokens: int) -> torch.Tensor:
    """H = (2 / n) sum x x^T, made exactly symmetric (so storing one triangle loses nothing)."""
    h = xtx_sum * (2.0 / tokens)
    return (h + h.t()) * 0.5
