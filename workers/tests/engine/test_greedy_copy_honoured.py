"""the engine's greedy_copy (not the environment) picks the all-greedy path at every step."""
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from inlaid_worker.engine import async_pipeline, async_step
from inlaid_worker.engine.async_pipeline import AsyncPipeline
from inlaid_worker.engine.sampling_params import SamplingParams
from inlaid_worker.engine.scheduler import SchedulerOutput


class Pipe(AsyncPipeline):
    def __init__(self) -> None:
        self.eos_token_ids = {2}
        self._init_async()


class Seq(SimpleNamespace):
    __hash__ = object.__hash__


def test_greedy_copy_is_read_from_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    built = Pipe()
    calls: list[Any] = []
    monkeypatch.setattr(async_step, "env_switch", lambda *a: calls.append(a))  # any greedy_mode() read, any path
    monkeypatch.setattr(async_step, "pinned_pointer_ok", lambda *a: calls.append(a))
    seen: list[Any] = []
    monkeypatch.setattr(built._copies, "start_greedy", lambda lg, rows, mode: (seen.append(mode), (torch.zeros(1), None))[1])
    monkeypatch.setattr(async_pipeline, "launch_batch", lambda *a, **k: (seen.append("batch"), (torch.zeros(1), torch.zeros(1)))[1])
    monkeypatch.setattr(built._copies, "start", lambda t, o: None)
    logits = SimpleNamespace(is_cuda=True, dtype=torch.float32, dim=lambda: 2, stride=lambda i: 1, shape=(1, 3))
    seq = Seq(sampling=SamplingParams(temperature=0, max_tokens=8), generator=None, output_token_ids=[],
              resumed_output_tokens=0)
    step = SchedulerOutput([SimpleNamespace(seq=seq, samples=True)])  # type: ignore[list-item]
    for value in (2, 1, 0):
        built.greedy_copy = value
        built._launch_sampling(step, logits)  # type: ignore[arg-type]
    assert seen == [2, 1, "batch"] and not calls
