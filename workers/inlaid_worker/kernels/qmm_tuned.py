"""Tuner picks measured on a device and shipped with the worker (`kernels/tuned/<device>.json`).

The tuner (quant_matmul_config.pick_config) times every candidate the first time it meets a shape and batch
bucket: with the tensor-core candidates that is 20-60 compiles and timings per shape, seconds each time a
server starts. A shipped pick skips that: it is used only when it is still one of today's candidates for the
shape, and only after the tuner's correctness guard accepts it on this device (otherwise the tuner runs as
before). Tables are written by `bench/kernels/tuned_table.py` from the kernel benchmarks' JSON, and say which
runs they came from. INLAID_QMM_TUNED=0 turns them off (the kernel benchmarks do, to time every candidate).
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import torch

from inlaid_worker.env_switch import env_switch

from .quant_matmul_config import QMMConfig

TUNED_DIR = Path(__file__).with_name("tuned")
_FIELDS = ("block_m", "block_n", "block_k", "split_k", "num_warps", "num_stages", "use_dot", "kind")

TableKey = tuple[str, int, int, int, int, int]  # dtype, m bucket, n, k, bits, group


def device_slug(name: str) -> str:
    """'NVIDIA H200' -> 'nvidia-h200' (the table's file name)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def config_from_dict(d: dict) -> QMMConfig:
    missing = [f for f in _FIELDS if f not in d]
    if missing:
        raise ValueError(f"tuned config lacks {missing}")
    return QMMConfig(*(d[f] for f in _FIELDS))


def config_to_dict(c: QMMConfig) -> dict:
    return {f: getattr(c, f) for f in _FIELDS}


def parse_table(doc: dict) -> dict[TableKey, QMMConfig]:
    """The entries of one table file, keyed by (dtype, m bucket, n, k, bits, group)."""
    out: dict[TableKey, QMMConfig] = {}
    for e in doc.get("entries", []):
        key = (str(e["dtype"]), int(e["m_bucket"]), int(e["n"]), int(e["k"]), int(e["bits"]), int(e["group"]))
        out[key] = config_from_dict(e["config"])
    return out


@functools.lru_cache(maxsize=8)
def load_table(slug: str, directory: str = str(TUNED_DIR)) -> dict[TableKey, QMMConfig]:
    path = Path(directory) / f"{slug}.json"
    if not path.is_file():
        return {}
    return parse_table(json.loads(path.read_text()))


def enabled() -> bool:
    """Env INLAID_QMM_TUNED (strict on/off, env_switch; default on)."""
    return env_switch("INLAID_QMM_TUNED") is not False


def shipped_pick(device: torch.device, dtype: torch.dtype, m_bucket: int, n: int, k: int, bits: int,
                 group: int) -> QMMConfig | None:  # fmt: skip
    """The shipped pick for this device and shape, or None (CPU, no table, no entry, or turned off)."""
    if device.type != "cuda" or not enabled():
        return None
    slug = device_slug(torch.cuda.get_device_name(device))
    return load_table(slug).get((str(dtype).removeprefix("torch."), m_bucket, n, k, bits, group))
