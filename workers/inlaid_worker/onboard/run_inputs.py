"""A fingerprint of everything a re-quantization's packed layers depend on, so a new owner of an interrupted run
can tell whether the layers the previous owner staged are the ones it would compute itself (layer_store.py).

Fed in, in this order: the base version (its number, its quantization config, i.e. the quant spec and format,
and its Hessian index: the kept tasks, their token counts and fold order); the full-precision model (its
config.json and the safetensors headers: names, dtypes, shapes, not the weight bytes, which would mean reading
the whole model); each added task in the order it is folded in (name, the sha256 of its adapter_config.json
and adapter_model.safetensors, its calibration token ids); the removed tasks; and where GPTQ runs (the device
kind, the GPU model and the torch version: the same inputs on another kind of device may round differently).
Paths are left out on purpose: workers mount the same store and model at different places.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from inlaid_worker.quant import TaskData, read_quantization_config

FORMAT = "inlaid-run-inputs/1"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
_CHUNK = 1 << 20


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _safetensors_header(path: Path) -> bytes:
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return f.read(n)


def _model_part(model_dir: Path) -> dict[str, Any]:
    config = model_dir / "config.json"
    headers = {p.name: hashlib.sha256(_safetensors_header(p)).hexdigest() for p in sorted(model_dir.glob("*.safetensors"))}
    return {"config": _file_sha(config) if config.is_file() else "", "headers": headers}


def _seqs_sha(seqs: Sequence[torch.Tensor]) -> str:
    h = hashlib.sha256()
    for s in seqs:
        ids = s.detach().to("cpu", torch.int64).contiguous()
        h.update(len(ids).to_bytes(8, "little"))
        h.update(ids.numpy().tobytes())
    return h.hexdigest()


def _task_part(t: TaskData) -> dict[str, Any]:
    adapter: dict[str, str] = {}
    if t.adapter_dir is not None:
        adapter = {n: _file_sha(Path(t.adapter_dir) / n) for n in ADAPTER_FILES if (Path(t.adapter_dir) / n).is_file()}
    return {"name": t.name, "adapter": adapter, "calibration": _seqs_sha(t.seqs)}


def device_kind(device: str | torch.device) -> str:
    dev = torch.device(device)
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" and torch.cuda.is_available() else ""
    return f"{dev.type}:{gpu}:torch {torch.__version__}"


def run_inputs(
    base_number: int, base_path: Path, model_dir: Path, add: Sequence[TaskData], remove: Sequence[str],
    device: str | torch.device,
) -> str:
    """sha256 over the inputs above (hex)."""
    index = base_path / "hessians" / "index.json"
    raw = {
        "format": FORMAT,
        "base": {"version": base_number, "quantization_config": read_quantization_config(base_path),
                 "hessian_index": json.loads(index.read_text()) if index.is_file() else None},
        "model": _model_part(Path(model_dir)),
        "add": [_task_part(t) for t in add],
        "remove": sorted(remove),
        "device": device_kind(device),
    }
    return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()
