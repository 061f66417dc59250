"""The engine reads a step's logits before it runs the next step (what the CUDA graphs' one shared logits buffer needs,
model.graph_logits: a graph step's logits are overwritten by the next replay of any graph). On the CPU a runner whose
execute_device returns rows of ONE buffer, poisoned with NaN and rewritten at every call, gives every request the
stream a runner returning fresh tensors gives: synchronous, async (tokens left on the device, launch_batch) and async
with admissions ahead (a step with host-sampled rows keeps its logits in _unfinished until the next step() call,
_finish_ahead: the one place logits outlive a step() call), with greedy, seeded top-p, penalties, logprobs, prompt
logprobs and min_tokens rows and chunked prompts. The GPU stream order (reads queued before the next replay) is
exercised by the async GPU tests with real graphs (test_async_scheduling_gpu.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from async_compare import assert_same_stream
from engine_script import Script, make_engine, run, scripted
from factories import make_tiny_llama
from inlaid_worker.engine.engine import LLMEngine
from inlaid_worker.engine.sampling_params import SamplingParams

ROWS = 256  # the graphs' buffer rows (ModelRunner.graph_logits_rows)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("shared") / "model")


class SharedRunner:
    """Makes engine.runner.execute_device return rows [:n] of one buffer, all of it set to NaN first at every call
    (so logits read after the next call are the next step's, or NaN); counts _finish_ahead's calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, engine: LLMEngine) -> None:
        self.buf: torch.Tensor | None = None
        self.calls = 0
        self.finished_ahead = 0
        real_execute = engine.runner.execute_device  # type: ignore[attr-defined]

        def execute_device(step: Any) -> torch.Tensor:
            fresh = real_execute(step)
            if self.buf is None:
                self.buf = torch.empty(ROWS, fresh.shape[1], dtype=fresh.dtype, device=fresh.device)
            self.buf.fill_(float("nan"))
            self.calls += 1
            return self.buf[: fresh.shape[0]].copy_(fresh)

        monkeypatch.setattr(engine.runner, "execute_device", execute_device)
        real_finish = engine._finish_ahead

        def finish_ahead(*args: Any) -> None:
            self.finished_ahead += 1
            real_finish(*args)

        monkeypatch.setattr(engine, "_finish_ahead", finish_ahead)


def prompt(i: int, n: int) -> list[int]:
    return [3 + (11 * i + 7 * j) % 250 for j in range(n)]


def workload() -> Script:
    base = {"max_tokens": 8, "ignore_eos": True}
    params = [
        SamplingParams(temperature=0, **base),
        SamplingParams(temperature=0.8, seed=3, top_p=0.9, **base),
        SamplingParams(temperature=0, logprobs=2, max_tokens=3, ignore_eos=True),  # host-sampled: _unfinished
        SamplingParams(temperature=0.7, seed=4, presence_penalty=0.5, repetition_penalty=1.2, **base),
        SamplingParams(temperature=0, prompt_logprobs=2, max_tokens=3, ignore_eos=True),
        SamplingParams(temperature=0.9, seed=5, min_tokens=4, top_k=15, **base),
    ]
    return scripted(params, [5, 23, 6, 9, 7, 19], [0, 2, 3, 5, 7, 8], prompt)  # (lengths, calls)


@pytest.mark.parametrize("mode", ["sync", "async", "admit"])
def test_streams_from_one_shared_logits_buffer_equal_fresh_tensors(
    monkeypatch: pytest.MonkeyPatch, model: Path, mode: str
) -> None:
    script = workload()
    want = run(make_engine(model, mode), script)
    engine = make_engine(model, mode)
    shared = SharedRunner(monkeypatch, engine)
    got = run(engine, script)
    assert set(got) == set(want) == {f"r{i}" for i in range(6)}
    for rid in want:
        assert_same_stream(got[rid], want[rid], rid)
    assert shared.calls >= 10
    if mode != "sync":  # the host-sampled rows' steps kept their logits across a step() call: the risky path ran
        assert shared.finished_ahead >= 1, shared.finished_ahead
        assert engine.num_async_steps >= 1


def test_the_shared_runner_overwrites_what_it_returned(monkeypatch: pytest.MonkeyPatch, model: Path) -> None:
    """The check above can fail: logits kept past the next call read that call's rows (or NaN)."""
    engine = make_engine(model, "sync")
    SharedRunner(monkeypatch, engine)
    from factories import make_step

    first = engine.runner.execute_device(make_step([([5, 6, 7], 0, [0], -1)], 16))  # type: ignore[attr-defined]
    kept = first.clone()
    engine.runner.execute_device(make_step([([9, 8], 0, [1], -1)], 16))  # type: ignore[attr-defined]
    assert not torch.equal(first, kept)
