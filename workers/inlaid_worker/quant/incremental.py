"""Add or remove tasks of an MLGPTQ (or pooled GPTQ) checkpoint without recomputing the other tasks.

Only the new tasks' Hessians are computed (on the full-precision model, layer by layer). Adding tasks reads
one file per layer, the stored running aggregate of the kept tasks (running.py), and folds the new tasks
into it after them, exactly as a full run over the kept tasks then the new ones would; removing tasks
refolds the kept tasks' stored Hessians in their order. Every layer is then re-quantized from the
full-precision weights, so the packed weights are bit-identical to quantizing the resulting task list (in
insertion order) at once, and removing the last-added task restores the weights without it. The new
version hard-links the kept tasks' files. `requantize_layers` yields layer by layer so a server can swap
layers in as they finish.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .checkpoint import CheckpointWriter, read_quantization_config
from .hessian_store import HessianIndex, HessianStore
from .layer_hessians import LayerHessians, fold_layer
from .layerwise import LayerResult, ReuseFn, quantize_layers
from .quantize import (
    OnLayer,
    QuantSummary,
    TaskData,
    load_fp_model,
    load_task_adapters,
    open_streams,
    spec_from_config,
    write_layers,
)
from .running import empty, fold
from .spec import QuantSpec


@dataclass(frozen=True)
class UpdatePlan:
    spec: QuantSpec
    checkpoint_format: str
    index: HessianIndex  # of the source checkpoint
    kept: list[str]  # in the source's insertion order
    added: list[TaskData]

    @property
    def removed(self) -> list[str]:
        return [t for t in self.index.order if t not in self.kept]

    @property
    def tokens(self) -> dict[str, int]:
        out = {t: self.index.tokens[t] for t in self.kept}
        out.update({t.name: sum(int(s.numel()) for s in t.seqs) for t in self.added})
        return out


def plan_update(ckpt_dir: str | Path, add: Sequence[TaskData] = (), remove: Sequence[str] = ()) -> UpdatePlan:
    """Validate an add/remove request against a checkpoint; raises ValueError with the reason."""
    qc = read_quantization_config(ckpt_dir)
    index = HessianStore(Path(ckpt_dir) / "hessians").read_index()
    if index.aggregation == "single":
        raise ValueError("a per-task (gptq-task) checkpoint cannot take other tasks")
    unknown = sorted(set(remove) - set(index.tokens))
    if unknown:
        raise ValueError(f"cannot remove {unknown}: not in the checkpoint's tasks {sorted(index.tokens)}")
    names = [t.name for t in add]
    dup = sorted(set(names) & (set(index.tokens) - set(remove))) or sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"tasks {dup} already present")
    for t in add:
        if not t.seqs:
            raise ValueError(f"task {t.name!r} has no calibration data")
        if index.adapters_active and t.adapter_dir is None:
            raise ValueError(f"task {t.name!r} needs an adapter")
    kept = [t for t in index.order if t not in set(remove)]
    if not kept and not add:
        raise ValueError("no task would remain")
    return UpdatePlan(spec_from_config(qc), str(qc.get("checkpoint_format", "gptq")), index, kept, list(add))


def requantize_layers(
    model: nn.Module, model_dir: str | Path, ckpt_dir: str | Path, plan: UpdatePlan,
    device: str | torch.device = "cpu", reuse: ReuseFn | None = None,
) -> Iterator[LayerResult]:
    """Yield each re-quantized layer of the updated task set, in order (fresh = the added tasks only); `reuse`
    hands over layers an interrupted identical run already quantized (layerwise.quantize_layers)."""
    dev = torch.device(device)
    adapters = load_task_adapters(model_dir, plan.added)
    streams = open_streams(model, plan.added, adapters, plan.index.adapters_active, dev)
    store = HessianStore(Path(ckpt_dir) / "hessians")
    tokens = plan.tokens
    dims, how = plan.index.dims, plan.index.aggregation

    def hessians_for(layer: int, fresh: dict[str, dict[str, torch.Tensor]]) -> LayerHessians:
        t0 = time.perf_counter()
        links = {t: store.task_file(t, layer) for t in plan.kept}
        missing = [p for p in links.values() if not p.is_file()]
        if missing:  # the new version must keep every kept task's Hessians (for later removals)
            raise ValueError(f"stored Hessians missing: {missing[0]}")
        states = None if plan.removed else store.read_running(layer, how, dims, plan.kept, dev)
        if states is None:  # a removal, or a store without a usable running aggregate: refold the kept tasks
            states = {g: empty(how, k) for g, k in dims.items()}
            for t in plan.kept:
                tris = store.read_task_triangles(t, layer, dims, dev)
                states = {g: fold(s, t, tris[g], tokens[t]) for g, s in states.items()}
        return fold_layer(states, fresh, tokens, links, {"read_s": time.perf_counter() - t0})

    return quantize_layers(model, streams, hessians_for, plan.spec, plan.checkpoint_format, dev, reuse)


def update_checkpoint(
    ckpt_dir: str | Path,
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    add: Sequence[TaskData] = (),
    remove: Sequence[str] = (),
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float16,
    load_dtype: torch.dtype = torch.float32,
    on_layer: OnLayer | None = None,
    reuse: ReuseFn | None = None,
) -> QuantSummary:
    """Write a new checkpoint at `out_dir` for the old task set + `add` - `remove`; `on_layer` sees each layer;
    `reuse` skips GPTQ for the layers it returns (their packed weights from an interrupted identical run)."""
    plan = plan_update(ckpt_dir, add, remove)
    qc = read_quantization_config(ckpt_dir)
    tokens = plan.tokens
    qc["meta"] = {**(qc.get("meta") or {}), "tasks": sorted(tokens)}
    model = load_fp_model(model_dir, load_dtype)
    results = requantize_layers(model, model_dir, ckpt_dir, plan, device, reuse)
    with CheckpointWriter(out_dir, model_dir, qc, dtype) as writer:
        store = HessianStore(writer.tmp / "hessians")
        seconds, damps = write_layers(model, results, plan.spec.percdamp, writer, store, on_layer)
        store.write_index(HessianIndex(plan.index.aggregation, plan.index.adapters_active,
                                       plan.index.num_layers, plan.index.dims, tokens))
        writer.finish()
    return QuantSummary(Path(out_dir), str(qc["meta"].get("method", "mlgptq")), tokens, seconds, damps)  # type: ignore[arg-type]
