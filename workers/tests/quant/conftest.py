"""Shared tiny model, adapters and calibration ids for the quantizer tests (built once per session)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from factories import make_random_adapter, make_tiny_llama
from inlaid_worker.quant import TaskData

TARGETS = ["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class Tiny:
    base: Path
    adapters: dict[str, Path]
    seqs: dict[str, list[torch.Tensor]]

    def tasks(self, names: str, adapters: bool = True) -> list[TaskData]:
        return [TaskData(n, self.adapters[n] if adapters else None, self.seqs[n]) for n in names]


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("quant_tiny")
    base = make_tiny_llama(root / "base", layers=2)
    adapters = {
        n: make_random_adapter(root / f"adapter_{n}", base, rank=4, alpha=8, targets=TARGETS, seed=i)
        for i, n in enumerate("abc")
    }
    g = torch.Generator().manual_seed(0)
    seqs = {n: [torch.randint(3, 320, (24 + 8 * i,), generator=g) for i in range(3)] for n in "abc"}
    return Tiny(base, adapters, seqs)
