"""Orchestration: a Hugging Face Llama directory + tasks (adapter, calibration ids) -> GPTQ checkpoint.

Methods: "rtn" (no data), "gptq" (GPTQ-tweaked: every task's data pooled, no adapters), "mlgptq" (per-task
Hessians with the task's adapter active, aggregated by aggregate.py's "diagmax" unless told otherwise),
"gptq-task" (one task, its adapter active: the per-task upper reference). Data-driven methods store their per-task Hessians next to the checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .adapter import TaskAdapter, load_task_adapter
from .aggregate import AGGREGATIONS, Aggregation
from .checkpoint import CheckpointWriter, quantization_config
from .hessian import GROUP_INPUT, GROUPS, CalibStream, decoder_layers, open_stream
from .hessian_store import HessianIndex, HessianStore, check_task_name
from .layer_hessians import LayerHessians, fold_layer
from .layerwise import LINEAR_MODULES, LayerResult, quantize_layers
from .running import empty
from .spec import QuantSpec

Method = Literal["rtn", "gptq", "mlgptq", "gptq-task"]
METHODS: tuple[Method, ...] = ("rtn", "gptq", "mlgptq", "gptq-task")
AGGREGATION: dict[str, Aggregation] = {"gptq": "pooled", "mlgptq": "diagmax", "gptq-task": "single"}
ADAPTERS_ACTIVE = {"gptq": False, "mlgptq": True, "gptq-task": True}
OnLayer = Callable[[LayerResult], None]


@dataclass(frozen=True)
class TaskData:
    """One task: its adapter directory (None only for pooled GPTQ) and calibration token ids."""

    name: str
    adapter_dir: Path | None
    seqs: Sequence[torch.Tensor]  # each [S] int64


@dataclass(frozen=True)
class QuantSummary:
    out_dir: Path
    method: Method
    tasks: dict[str, int]  # task -> calibration tokens
    seconds_per_layer: list[float]
    percdamp: dict[str, float]  # "layer.group" -> damping used where it rose above the spec's


def load_fp_model(model_dir: str | Path, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The full-precision model on the CPU (layers are moved to the device one at a time)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype).eval()
    layers = decoder_layers(model)
    for path in LINEAR_MODULES:
        if not isinstance(layers[0].get_submodule(path), nn.Linear):
            raise ValueError(f"unsupported architecture: {path} is not a linear layer")
    return model


def spec_from_config(qc: dict[str, Any]) -> QuantSpec:
    """The QuantSpec a checkpoint of ours was made with (from quantization_config.meta.spec)."""
    raw = (qc.get("meta") or {}).get("spec")
    if not isinstance(raw, dict):
        raise ValueError("checkpoint was not made by this quantizer (quantization_config.meta.spec missing)")
    return QuantSpec(**raw)


def check_method(method: str, tasks: Sequence[TaskData]) -> Method:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    names = [t.name for t in tasks]
    for n in names:
        check_task_name(n)
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate task names in {names}")
    if method != "rtn" and not tasks:
        raise ValueError(f"method {method} needs at least one task with calibration data")
    if method == "gptq-task" and len(tasks) != 1:
        raise ValueError("method gptq-task quantizes for exactly one task")
    for t in tasks:
        if method != "rtn" and not t.seqs:
            raise ValueError(f"task {t.name!r} has no calibration data")
        if ADAPTERS_ACTIVE.get(method, False) and t.adapter_dir is None:
            raise ValueError(f"method {method} needs an adapter for task {t.name!r}")
    return method  # type: ignore[return-value]


def check_aggregation(method: Method, aggregation: str | None) -> Aggregation | None:
    """The aggregation `method` runs with; only MLGPTQ's may be overridden, by a multi-task one."""
    if aggregation is None:
        return AGGREGATION.get(method)
    if method != "mlgptq":
        raise ValueError(f"an aggregation can only be chosen for mlgptq, not {method}")
    if aggregation not in AGGREGATIONS or aggregation in ("pooled", "single"):
        raise ValueError(f"aggregation must be one of {[a for a in AGGREGATIONS if a not in ('pooled', 'single')]}")
    return aggregation  # type: ignore[return-value]


def load_task_adapters(model_dir: str | Path, tasks: Sequence[TaskData]) -> dict[str, TaskAdapter]:
    """Load and validate every given adapter (also for pooled GPTQ, so bad input fails early)."""
    return {t.name: load_task_adapter(t.adapter_dir, model_dir, t.name) for t in tasks if t.adapter_dir is not None}


def open_streams(
    model: nn.Module, tasks: Sequence[TaskData], adapters: dict[str, TaskAdapter], active: bool, device: torch.device
) -> list[CalibStream]:
    return [open_stream(model, t.name, adapters[t.name] if active else None, t.seqs, device) for t in tasks]


def quantize_checkpoint(
    model_dir: str | Path,
    out_dir: str | Path,
    method: str,
    spec: QuantSpec,
    tasks: Sequence[TaskData] = (),
    *,
    device: str | torch.device = "cpu",
    checkpoint_format: str | None = None,
    dtype: torch.dtype = torch.float16,
    load_dtype: torch.dtype = torch.float32,
    on_layer: OnLayer | None = None,
    aggregation: Aggregation | None = None,
) -> QuantSummary:
    """Quantize the model at `model_dir` and publish the checkpoint at `out_dir` (must not exist).
    `aggregation` overrides MLGPTQ's default Hessian aggregation (e.g. "max", the paper's plain max)."""
    m = check_method(method, tasks)
    how = check_aggregation(m, aggregation)
    fmt = checkpoint_format or ("gptq" if spec.sym else "gptq_v2")
    dev = torch.device(device)
    adapters = load_task_adapters(model_dir, tasks)
    model = load_fp_model(model_dir, load_dtype)
    streams = [] if m == "rtn" else open_streams(model, tasks, adapters, ADAPTERS_ACTIVE[m], dev)
    tokens = {s.name: s.tokens for s in streams}
    meta = {"quantizer": "inlaid", "method": m, "tasks": sorted(tokens), "spec": asdict(spec)}
    with CheckpointWriter(out_dir, model_dir, quantization_config(spec, fmt, meta), dtype) as writer:
        store = HessianStore(writer.tmp / "hessians")

        def hessians_for(_layer: int, fresh: dict[str, dict[str, torch.Tensor]]) -> LayerHessians | None:
            if how is None:
                return None  # tasks fold in the order given (insertion order), as incremental updates do
            first = next(iter(fresh.values()))
            return fold_layer({g: empty(how, first[g].shape[0]) for g in GROUPS}, fresh, tokens)

        results = quantize_layers(model, streams, hessians_for, spec, fmt, dev)
        summary = write_layers(model, results, spec.percdamp, writer, store, on_layer)
        if how is not None:
            store.write_index(_index(model, how, ADAPTERS_ACTIVE[m], tokens))
        writer.finish()
    return QuantSummary(Path(out_dir), m, tokens, summary[0], summary[1])


def write_layers(
    model: nn.Module, results: Iterator[LayerResult], percdamp: float, writer: CheckpointWriter,
    store: HessianStore, on_layer: OnLayer | None,
) -> tuple[list[float], dict[str, float]]:
    """Drive the layer loop into the writer and the Hessian store; returns (seconds per layer, raised damps)."""
    layers = decoder_layers(model)
    seconds: list[float] = []
    damps: dict[str, float] = {}
    for res in results:
        writer.add_layer(res.layer, layers[res.layer], res.packed)
        if res.stored is not None:
            res.stored.save(store, res.layer)
        damps.update({f"{res.layer}.{g}": d for g, d in res.percdamp.items() if d > percdamp})
        seconds.append(res.seconds)
        if on_layer is not None:
            on_layer(res)
    prefixes = {f"model.layers.{i}.{p}" for i in range(len(layers)) for p in LINEAR_MODULES}
    writer.add_unquantized(model, prefixes)
    return seconds, damps


def _index(model: nn.Module, how: Aggregation, active: bool, tokens: dict[str, int]) -> HessianIndex:
    layer0 = decoder_layers(model)[0]
    dims = {g: int(layer0.get_submodule(p).in_features) for g, p in GROUP_INPUT.items()}
    return HessianIndex(how, active, len(decoder_layers(model)), dims, dict(tokens))
