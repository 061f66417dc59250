"""A task's LoRA deltas as forward hooks on a decoder layer's linears (calibration only).

Adapters are read and validated by inlaid_worker.lora.adapter.load_adapter (safetensors only, shapes
against the base config); here they become per-module (A, B, scaling) keyed by the path inside the layer.
Hooks add scaling * (x A^T) B^T to a linear's output, i.e. exactly the PEFT forward in eval mode (no
dropout), without touching the model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from inlaid_worker.lora.adapter import AdapterError, LoraAdapter, load_adapter
from inlaid_worker.model.config import load_model_config

_PARENT = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
           "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}


@dataclass(frozen=True)
class LoraDelta:
    a: torch.Tensor  # [r, K]
    b: torch.Tensor  # [N, r]
    scaling: float


@dataclass(frozen=True)
class TaskAdapter:
    name: str
    deltas: dict[int, dict[str, LoraDelta]]  # layer -> "self_attn.q_proj" -> delta

    def for_layer(self, layer_idx: int) -> dict[str, LoraDelta]:
        return self.deltas.get(layer_idx, {})


def from_lora(name: str, adapter: LoraAdapter) -> TaskAdapter:
    deltas: dict[int, dict[str, LoraDelta]] = {}
    for (layer, module), (a, b) in adapter.weights.items():
        deltas.setdefault(layer, {})[f"{_PARENT[module]}.{module}"] = LoraDelta(a.float(), b.float(), adapter.scale)
    return TaskAdapter(name, deltas)


def load_task_adapter(adapter_dir: str | Path, model_dir: str | Path, name: str) -> TaskAdapter:
    """Load and validate against the base at `model_dir`; AdapterError (a ValueError) names the task."""
    try:
        return from_lora(name, load_adapter(adapter_dir, load_model_config(model_dir)))
    except ValueError as e:  # AdapterError, or a config error of the base; one type for callers to catch
        raise AdapterError(f"task {name!r}: {e}") from None


_Hook = Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], torch.Tensor]


@contextlib.contextmanager
def lora_active(layer: nn.Module, deltas: dict[str, LoraDelta]) -> Iterator[None]:
    """Within the block, each adapted linear of `layer` returns W x + scaling * B A x."""
    handles = [layer.get_submodule(path).register_forward_hook(_hook(d)) for path, d in deltas.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _hook(delta: LoraDelta) -> _Hook:
    def add_delta(_m: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        x = args[0]
        a, b = delta.a.to(x.device, x.dtype), delta.b.to(x.device, x.dtype)
        return out + delta.scaling * ((x @ a.t()) @ b.t())

    return add_delta
