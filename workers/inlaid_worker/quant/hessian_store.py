"""Per-task and aggregated Hessians saved next to a checkpoint, one file per layer, so tasks can be added
or removed later without recomputing the others.

Layout under <checkpoint>/hessians/:
  index.json                               {"version", "aggregation", "adapters_active", "num_layers",
                                            "dims": {group: K}, "tasks": {name: {"tokens": n_t}}}
  tasks/<name>/layer-00007.safetensors     {group: upper triangle of H_t, fp32 [K (K + 1) / 2]}
  aggregate/layer-00007.safetensors        {group: upper triangle of the aggregated H}
H is exactly symmetric (hessian.finalize), so the triangle restores it bit for bit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .aggregate import Aggregation

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
INDEX_VERSION = 1


def check_task_name(name: str) -> None:
    if not _NAME.match(name) or ".." in name:
        raise ValueError(f"task name {name!r} must match {_NAME.pattern}")


def to_triangle(h: torch.Tensor) -> torch.Tensor:
    k = h.shape[0]
    r, c = torch.triu_indices(k, k, device=h.device)
    return h[r, c].contiguous()


def from_triangle(tri: torch.Tensor, k: int) -> torch.Tensor:
    if tri.numel() != k * (k + 1) // 2:
        raise ValueError(f"stored triangle has {tri.numel()} values, expected {k * (k + 1) // 2} for K={k}")
    r, c = torch.triu_indices(k, k, device=tri.device)
    h = torch.empty(k, k, dtype=tri.dtype, device=tri.device)
    h[r, c] = tri
    h[c, r] = tri
    return h


@dataclass(frozen=True)
class HessianIndex:
    aggregation: Aggregation
    adapters_active: bool
    num_layers: int
    dims: dict[str, int]
    tokens: dict[str, int]  # task -> n_t

    def to_json(self) -> str:
        return json.dumps(
            {"version": INDEX_VERSION, "aggregation": self.aggregation, "adapters_active": self.adapters_active,
             "num_layers": self.num_layers, "dims": self.dims,
             "tasks": {n: {"tokens": t} for n, t in sorted(self.tokens.items())}},
            indent=2,
        )


def _layer_file(root: Path, kind: str, layer: int) -> Path:
    return root / kind / f"layer-{layer:05d}.safetensors"


class HessianStore:
    """Reads and writes the layout above, rooted at <checkpoint>/hessians."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def read_index(self) -> HessianIndex:
        path = self.root / "index.json"
        if not path.is_file():
            raise ValueError(f"no stored Hessians at {self.root} (checkpoint quantized without data?)")
        raw = json.loads(path.read_text())
        if raw.get("version") != INDEX_VERSION:
            raise ValueError(f"unsupported Hessian index version {raw.get('version')}")
        return HessianIndex(
            aggregation=raw["aggregation"], adapters_active=bool(raw["adapters_active"]),
            num_layers=int(raw["num_layers"]), dims={k: int(v) for k, v in raw["dims"].items()},
            tokens={n: int(v["tokens"]) for n, v in raw["tasks"].items()},
        )

    def write_index(self, index: HessianIndex) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "index.json").write_text(index.to_json())

    def write_layer(self, kind: str, layer: int, hessians: Mapping[str, torch.Tensor]) -> None:
        """kind: "aggregate" or "tasks/<name>"."""
        path = _layer_file(self.root, kind, layer)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({g: to_triangle(h.detach().float().cpu()) for g, h in hessians.items()}, str(path))

    def read_layer(self, kind: str, layer: int, dims: Mapping[str, int]) -> dict[str, torch.Tensor]:
        path = _layer_file(self.root, kind, layer)
        if not path.is_file():
            raise ValueError(f"stored Hessians missing: {path}")
        with safe_open(str(path), framework="pt") as f:
            return {g: from_triangle(f.get_tensor(g), dims[g]) for g in f.keys()}

    def read_task_layer(self, task: str, layer: int, dims: Mapping[str, int]) -> dict[str, torch.Tensor]:
        check_task_name(task)
        return self.read_layer(f"tasks/{task}", layer, dims)

    def task_dir(self, task: str) -> Path:
        check_task_name(task)
        return self.root / "tasks" / task
