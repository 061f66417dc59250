"""An engine's greedy_copy (async_step.greedy_mode: INLAID_GREEDY_KERNEL and the pinned-memory allocator) is read once,
when the engine is built, and honoured at every step: the sampling launch reads greedy_copy, never the environment, so
a switch flipped after construction reaches only a new engine, and benchmarks may set greedy_copy between steps."""

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from inlaid_worker.engine import async_pipeline, async_step
from inlaid_worker.engine.async_pipeline import AsyncPipeline
from inlaid_worker.engine.sampling_params import SamplingParams
from inlaid_worker.engine.scheduler import SchedulerOutput


class Pipe(AsyncPipeline):
    """Only the async loop's state (no model, no scheduler): what _launch_sampling reads."""

    def __init__(self) -> None:
        self.eos_token_ids = {2}
        self._init_async()


class Seq(SimpleNamespace):
    __hash__ = object.__hash__  # (sequences are keys: InFlight.row_of)


def _greedy_step() -> SchedulerOutput:
    """One sampling row at temperature 0: a step that greedy_only lets onto the greedy path."""
    seq = Seq(sampling=SamplingParams(temperature=0, max_tokens=8), generator=None, output_token_ids=[],
              resumed_output_tokens=0)  # fmt: skip
    return SchedulerOutput([SimpleNamespace(seq=seq, samples=True)])  # type: ignore[list-item]


def test_greedy_copy_is_read_from_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Per step: greedy_copy 2 / 1 reach start_greedy as its mode, 0 takes the batch sampler; no environment read."""
    built = Pipe()
    calls: list[Any] = []
    monkeypatch.setattr(async_step, "env_switch", lambda *a: calls.append(a))  # any greedy_mode() read, any path
    monkeypatch.setattr(async_step, "pinned_pointer_ok", lambda *a: calls.append(a))
    seen: list[Any] = []
    monkeypatch.setattr(
        built._copies, "start_greedy", lambda lg, rows, mode: (seen.append(mode), (torch.zeros(1), None))[1]
    )
    monkeypatch.setattr(
        async_pipeline, "launch_batch", lambda *a, **k: (seen.append("batch"), (torch.zeros(1), torch.zeros(1)))[1]
    )
    monkeypatch.setattr(built._copies, "start", lambda t, o: None)
    logits = SimpleNamespace(is_cuda=True, dtype=torch.float32, dim=lambda: 2, stride=lambda i: 1, shape=(1, 3))
    step = _greedy_step()
    for value in (2, 1, 0):
        built.greedy_copy = value
        built._launch_sampling(step, logits)  # type: ignore[arg-type]
    assert seen == [2, 1, "batch"] and not calls


def test_the_greedy_mode_is_read_once_when_the_engine_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """No environment read per step: a switch flipped after construction does not reach a built engine (a new one
    takes it). (A CPU step: the sampling launch reads greedy_copy, never greedy_mode, which would fail here.)"""
    built = Pipe()
    assert built.greedy_copy == 2
    monkeypatch.setenv("INLAID_GREEDY_KERNEL", "0")
    assert built.greedy_copy == 2 and Pipe().greedy_copy == 0

    def read_again(*_: object) -> int:
        raise AssertionError("greedy_mode read at a step")

    monkeypatch.setattr(async_pipeline, "greedy_mode", read_again)
    flight = built._launch_sampling(_greedy_step(), torch.tensor([[0.0, 3.0, 1.0]]))
    assert flight.tokens.tolist() == [1] and flight.copy.read() == ([1], [0])
