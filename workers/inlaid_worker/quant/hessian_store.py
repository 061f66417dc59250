"""Per-task Hessians and the running aggregate saved next to a checkpoint, one file per layer, so tasks can be
added (reading only the running aggregate) or removed (refolding the kept tasks) without recomputing others.

Layout under <checkpoint>/hessians/ (index version 2):
  index.json                              {"version": 2, "aggregation", "adapters_active", "num_layers",
                                           "dims": {group: K}, "tasks": {name: {"tokens": n_t}},
                                           "order": [names in insertion order = fold order]}
  tasks/<name>/layer-00007.safetensors    {group: upper triangle of H_t, fp32 [K (K + 1) / 2]}
  running/layer-00007.safetensors         {"<group>.<part>": running.py's state}, metadata {"aggregation",
                                           "tasks": the JSON list of tasks folded in, in order, "tokens"}
H is exactly symmetric (hessian.finalize), so the triangle restores it bit for bit. A new checkpoint version
hard-links its kept tasks' files (copies them across file systems); files are only ever replaced, never
rewritten in place. Version 1 stores (no order, aggregate/ instead of running/) stay readable: their tasks
fold in name order, and the first update rebuilds the running aggregate from the task files.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .running import PARTS, Aggregation, Running
from .triangle import from_triangle, to_triangle, tri_size

__all__ = ["INDEX_VERSION", "HessianIndex", "HessianStore", "check_task_name", "from_triangle", "to_triangle"]

log = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
INDEX_VERSION = 2
READABLE_VERSIONS = (1, 2)


def check_task_name(name: str) -> None:
    if not _NAME.match(name) or ".." in name:
        raise ValueError(f"task name {name!r} must match {_NAME.pattern}")


@dataclass(frozen=True)
class HessianIndex:
    aggregation: Aggregation
    adapters_active: bool
    num_layers: int
    dims: dict[str, int]
    tokens: dict[str, int]  # task -> n_t, in insertion (= fold) order

    @property
    def order(self) -> list[str]:
        return list(self.tokens)

    def to_json(self) -> str:
        return json.dumps(
            {"version": INDEX_VERSION, "aggregation": self.aggregation, "adapters_active": self.adapters_active,
             "num_layers": self.num_layers, "dims": self.dims,
             "tasks": {n: {"tokens": t} for n, t in self.tokens.items()}, "order": self.order},
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
        if raw.get("version") not in READABLE_VERSIONS:
            raise ValueError(f"unsupported Hessian index version {raw.get('version')} at {path}; re-quantize the "
                             "checkpoint from its tasks (quantize_checkpoint) to rebuild its Hessians")
        tasks = {n: int(v["tokens"]) for n, v in raw["tasks"].items()}
        order = raw.get("order", sorted(tasks))  # version 1 aggregated in name order
        if sorted(order) != sorted(tasks):
            raise ValueError(f"Hessian index {path}: order {order} does not list the tasks {sorted(tasks)}")
        return HessianIndex(
            aggregation=raw["aggregation"], adapters_active=bool(raw["adapters_active"]),
            num_layers=int(raw["num_layers"]), dims={k: int(v) for k, v in raw["dims"].items()},
            tokens={n: tasks[n] for n in order},
        )

    def write_index(self, index: HessianIndex) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "index.json").write_text(index.to_json())

    # -- files of one layer ------------------------------------------------------------------------------
    def file(self, kind: str, layer: int) -> Path:
        return _layer_file(self.root, kind, layer)

    def task_file(self, task: str, layer: int) -> Path:
        check_task_name(task)
        return self.file(f"tasks/{task}", layer)

    def write_tensors(self, kind: str, layer: int, tensors: Mapping[str, torch.Tensor],
                      metadata: Mapping[str, str] | None = None) -> None:
        """Write a layer file atomically (a new inode: a hard-linked older version is never touched)."""
        path = self.file(kind, layer)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        save_file({k: t.detach().cpu().contiguous() for k, t in tensors.items()}, str(tmp),
                  metadata=dict(metadata) if metadata else None)
        os.replace(tmp, path)

    def read_tensors(self, kind: str, layer: int, device: torch.device | str = "cpu"
                     ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        path = self.file(kind, layer)
        if not path.is_file():
            raise ValueError(f"stored Hessians missing: {path}")
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})

    def link_from(self, src: Path, kind: str, layer: int) -> None:
        """Reference an existing (immutable) layer file: a hard link, or a copy where links are impossible."""
        if not src.is_file():
            raise ValueError(f"stored Hessians missing: {src}")
        dst = self.file(kind, layer)
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
            if hasattr(os, "getuid") and dst.stat().st_uid != os.getuid():  # CheckpointWriter could not chmod it
                dst.unlink()
                shutil.copy2(src, dst)
        except OSError:  # another file system, or links not supported
            shutil.copy2(src, dst)

    # -- per-task Hessians -------------------------------------------------------------------------------
    def write_layer(self, kind: str, layer: int, hessians: Mapping[str, torch.Tensor]) -> None:
        """Full symmetric matrices, stored as triangles; kind: "tasks/<name>"."""
        self.write_tensors(kind, layer, {g: to_triangle(h.detach().float()) for g, h in hessians.items()})

    def read_task_triangles(self, task: str, layer: int, dims: Mapping[str, int],
                            device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        check_task_name(task)
        tris, _ = self.read_tensors(f"tasks/{task}", layer, device)
        for g, t in tris.items():
            if g not in dims or t.numel() != tri_size(dims[g]):
                raise ValueError(f"stored Hessian {task}/{layer}/{g} has {t.numel()} values, not a triangle of "
                                 f"K={dims.get(g)}")
        return tris

    def read_task_layer(self, task: str, layer: int, dims: Mapping[str, int]) -> dict[str, torch.Tensor]:
        return {g: from_triangle(t, dims[g]) for g, t in self.read_task_triangles(task, layer, dims).items()}

    def task_dir(self, task: str) -> Path:
        check_task_name(task)
        return self.root / "tasks" / task

    # -- running aggregate -------------------------------------------------------------------------------
    def write_running(self, layer: int, states: Mapping[str, Running]) -> None:
        first = next(iter(states.values()))
        tensors = {f"{g}.{n}": p for g, s in states.items() for n, p in s.parts.items()}
        meta = {"aggregation": first.how, "tasks": json.dumps(first.tasks), "tokens": str(first.tokens)}
        self.write_tensors("running", layer, tensors, meta)

    def read_running(self, layer: int, how: Aggregation, dims: Mapping[str, int], tasks: Sequence[str],
                     device: torch.device | str = "cpu") -> dict[str, Running] | None:
        """The stored state if it folds exactly `tasks` in this order with `how`; None (rebuild) otherwise."""
        path = self.file("running", layer)
        if not path.is_file():
            log.info("no running aggregate at %s: refolding the stored task Hessians", path)
            return None
        tensors, meta = self.read_tensors("running", layer, device)
        folded = json.loads(meta.get("tasks", "null"))
        if meta.get("aggregation") != how or folded != list(tasks):
            log.warning("running aggregate %s folds %s with %s, not %s with %s: refolding", path, folded,
                        meta.get("aggregation"), list(tasks), how)
            return None
        states: dict[str, Running] = {}
        for g, k in dims.items():
            parts = {n: tensors.get(f"{g}.{n}") for n in PARTS[how]}
            missing = [n for n, p in parts.items() if p is None]
            if missing:
                raise ValueError(f"running aggregate {path} lacks {g}.{missing}")
            for n, t in parts.items():
                want = {"diag": k, "dmax": k, "trmax": 1}.get(n, tri_size(k))
                if t.numel() != want:  # type: ignore[union-attr]
                    raise ValueError(f"running aggregate {path}: {g}.{n} has {t.numel()} values, expected {want}")  # type: ignore[union-attr]
            states[g] = Running(how, k, list(folded), int(meta["tokens"]), parts)  # type: ignore[arg-type]
        return states
