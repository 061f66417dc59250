"""A tiny MLGPTQ checkpoint store and in-process workers on it, shared by the shared-re-quantization tests (test_distribute, test_resume):
a tiny Llama, rank-4 adapters for tasks a, b, c, a few calibration lines per task, the checkpoint of {a, b}
and the uninterrupted offline update adding c, which staged, followed and resumed runs must reproduce."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from factories import make_random_adapter, make_tiny_llama
from inlaid_worker.config import WorkerConfig
from inlaid_worker.onboard.background import BackgroundLimits
from inlaid_worker.onboard.digest import weights_digest
from inlaid_worker.onboard.distribute import Distributor
from inlaid_worker.onboard.follow import Follower
from inlaid_worker.onboard.manager import OnboardManager
from inlaid_worker.onboard.setup import versions_of
from inlaid_worker.quant import (
    PackedLinear,
    QuantSpec,
    TaskData,
    quantize_checkpoint,
    read_checkpoint,
    update_checkpoint,
)
from inlaid_worker.quant.calib import load_calibration
from inlaid_worker.server.app import build_engine
from inlaid_worker.server.engine_loop import EngineLoop

TARGETS = ["q_proj", "v_proj", "down_proj"]


@dataclass(frozen=True)
class StoreFx:
    base: Path
    adapters: dict[str, Path]
    calib: dict[str, Path]
    ckpt: Path  # tasks a, b
    updated: Path  # uninterrupted offline update_checkpoint(ckpt, +c)


def by_layer(ckpt: Path) -> dict[int, dict[str, PackedLinear]]:
    """A checkpoint's packed linears, by layer index and module path."""
    out: dict[int, dict[str, PackedLinear]] = {}
    for name, p in read_checkpoint(ckpt)[0].items():
        _, _, idx, path = name.split(".", 3)
        out.setdefault(int(idx), {})[path] = p
    return out


def task_data(fx: StoreFx, name: str, data: str | None = None) -> TaskData:
    """Task `name` with its adapter, calibrated on the lines of task `data` (default: its own)."""
    from transformers import AutoTokenizer

    seqs = load_calibration(fx.calib[data or name], AutoTokenizer.from_pretrained(fx.base), 256)
    return TaskData(name, fx.adapters[name], seqs)


def build_store(root: Path, layers: int, spec: QuantSpec, calib_names: Iterable[str] = "abc") -> StoreFx:
    torch.set_num_threads(1)
    base = make_tiny_llama(root / "base", layers=layers, max_positions=256)
    adapters = {n: make_random_adapter(root / f"adapter_{n}", base, rank=4, alpha=8, targets=TARGETS, seed=i)
                for i, n in enumerate("abc")}
    calib = {}
    for n in calib_names:
        calib[n] = root / f"calib_{n}.jsonl"
        calib[n].write_text("\n".join(json.dumps({"text": f"Task {n} sample {j}: 2 + {j} = {2 + j}."}) for j in range(3)))
    fx = StoreFx(base, adapters, calib, root / "ckpt", root / "updated")
    quantize_checkpoint(base, fx.ckpt, "mlgptq", spec, [task_data(fx, n) for n in "ab"])
    update_checkpoint(fx.ckpt, base, fx.updated, add=[task_data(fx, "c")])
    return fx


@dataclass
class Worker:
    """An in-process worker on the store: engine loop, onboarding manager and its distributor."""

    loop: EngineLoop
    manager: OnboardManager
    dist: Distributor

    def digest(self) -> str:
        return weights_digest(self.loop.engine.runner.weights.layers)[0]


def start_worker(fx: StoreFx, store: Path, name: str, background: BackgroundLimits, **follow: float) -> Worker:
    """A worker serving fx.ckpt with `store` as its checkpoint store; `follow` overrides its Follower's timings."""
    cfg = WorkerConfig(model=str(fx.base), port=0, kv_cache_bytes=2 << 20, checkpoint=str(fx.ckpt),
                       checkpoint_store=str(store))
    engine = build_engine(cfg, fx.base)
    loop = EngineLoop(engine)
    loop.start()
    manager = OnboardManager(loop.call, engine.runner, versions_of(cfg), fx.base, engine.tokenizer.hf,
                             background=background)
    dist = Distributor(manager, name)
    if follow:
        dist.follower = Follower(manager, dist.store, lambda: dist.served_version, **follow)
    return Worker(loop, manager, dist)
