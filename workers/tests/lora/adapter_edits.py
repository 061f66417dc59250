"""The adapter tests' base (a tiny Llama with a random PEFT adapter) and edited copies of that adapter."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from factories import make_random_adapter, make_tiny_llama
from inlaid_worker.model.config import load_model_config
from safetensors.torch import load_file, save_file


def base_with_adapter(root: Path, targets: Sequence[str]) -> tuple[Path, Path, Any]:
    """(a tiny Llama at root/base, a rank-4 alpha-8 random adapter of `targets` for it at root/ad, its config)."""
    model = make_tiny_llama(root / "base")
    adapter = make_random_adapter(root / "ad", model, rank=4, alpha=8, targets=targets, seed=1)
    return model, adapter, load_model_config(model)


def edited(src: Path, dst: Path, change: Callable[[dict[str, torch.Tensor]], None] | None = None,
           config_change: dict[str, Any] | None = None) -> Path:  # fmt: skip
    """A copy of the adapter at `src` with change(tensors) applied to its weights (when given) and its config
    updated."""
    shutil.copytree(src, dst)
    if change is not None:
        tensors = load_file(str(dst / "adapter_model.safetensors"))
        change(tensors)
        save_file(tensors, str(dst / "adapter_model.safetensors"))
    if config_change:
        cfg = json.loads((dst / "adapter_config.json").read_text())
        cfg.update(config_change)
        (dst / "adapter_config.json").write_text(json.dumps(cfg))
    return dst
