"""One layer's Hessian work, shared by full and incremental quantization: fold the fresh tasks' Hessians
(in the order given) into a running state, finish it into the Hessian GPTQ quantizes with, and say what the
layer adds to the Hessian store (the fresh tasks' triangles, the new running state, links to kept files).
Everything runs on the device the Hessians are on (the quantizer's GPU when it has one)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .hessian_store import HessianStore
from .running import Running, finish, fold
from .triangle import to_triangle


@dataclass(frozen=True)
class StoredLayer:
    """Files one layer adds to a Hessian store: per-task triangles to write, the running state, kept files."""

    tasks: dict[str, dict[str, torch.Tensor]]  # task -> group -> upper triangle (any device)
    running: dict[str, Running]
    links: dict[str, Path] = field(default_factory=dict)  # kept task -> its existing file for this layer
    seconds: dict[str, float] = field(default_factory=dict)  # read / fold / finish times (benchmarks)

    def save(self, store: HessianStore, layer: int) -> None:
        for task, src in self.links.items():
            store.link_from(src, f"tasks/{task}", layer)
        for task, tris in self.tasks.items():
            store.write_tensors(f"tasks/{task}", layer, tris)
        store.write_running(layer, {g: s.to("cpu") for g, s in self.running.items()})


@dataclass(frozen=True)
class LayerHessians:
    aggregated: dict[str, torch.Tensor]  # group -> [K, K] for GPTQ, on the Hessians' device
    stored: StoredLayer


def fold_layer(
    states: Mapping[str, Running], fresh: Mapping[str, Mapping[str, torch.Tensor]], tokens: Mapping[str, int],
    links: Mapping[str, Path] | None = None, seconds: Mapping[str, float] | None = None,
) -> LayerHessians:
    """Fold `fresh` ({task: {group: full H}}, in order) into `states` ({group: state}) and finish each group."""
    t0 = time.perf_counter()
    tris = {t: {g: to_triangle(h.float()) for g, h in hs.items()} for t, hs in fresh.items()}
    out = dict(states)
    for t, by_group in tris.items():
        missing = set(out) - set(by_group)
        if missing:
            raise ValueError(f"task {t!r}: no fresh Hessian for input groups {sorted(missing)}")
        for g in out:
            out[g] = fold(out[g], t, by_group[g], tokens[t])
    t1 = time.perf_counter()
    aggregated = {g: finish(s) for g, s in out.items()}
    times = {**(seconds or {}), "fold_s": t1 - t0, "finish_s": time.perf_counter() - t1}
    return LayerHessians(aggregated, StoredLayer(tris, out, dict(links or {}), times))

