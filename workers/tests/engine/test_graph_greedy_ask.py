"""When the async loop asks the decode graph to take a step's tokens itself (async_pipeline._graph_greedy, model
.decode_graphs GRAPH_INPUT 3): only on a CUDA runner whose decode graphs run mode 3, with the greedy kernel's host
store on (greedy mode 2), for a step whose every row samples plain greedy (the test _launch_sampling makes after the
launch); never for a step with a seeded, penalised, biased or logprobs row, a min_tokens ban, a grammar or a row that
does not sample. And TokenCopies.adopt hands out the graph's host view with the events in turn."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from inlaid_worker.engine import async_step
from inlaid_worker.engine.async_pipeline import AsyncPipeline
from inlaid_worker.engine.sampling_params import SamplingParams
from inlaid_worker.engine.scheduler import SchedulerOutput
from inlaid_worker.model.step_input import GraphGreedy

GREEDY = SamplingParams(temperature=0, max_tokens=8)


class Pipe(AsyncPipeline):
    def __init__(self, device: str, graph_input: int = 3) -> None:
        self.runner = SimpleNamespace(device=torch.device(device), _graphs=SimpleNamespace(graph_input=graph_input))
        self.eos_token_ids = {2}
        self._init_async()  # (reads the greedy mode: async_step.greedy_mode)


class Seq(SimpleNamespace):
    __hash__ = object.__hash__  # (sequences are keys: unread sets, row_of)


def _seq(params: SamplingParams, grammar: Any = None, out: int = 3) -> Any:
    return Seq(sampling=params, grammar=grammar, output_token_ids=[5] * out, resumed_output_tokens=0)


def _step(*rows: tuple[Any, bool]) -> SchedulerOutput:
    return SchedulerOutput([SimpleNamespace(seq=s, samples=samples) for s, samples in rows])  # type: ignore[misc]


def test_an_all_greedy_step_on_a_cuda_runner_asks() -> None:
    p = Pipe("cuda")
    assert isinstance(p._graph_greedy(_step((_seq(GREEDY), True), (_seq(GREEDY), True)), ()), GraphGreedy)
    stop = SamplingParams(temperature=0, max_tokens=8, stop_token_ids=(40,))  # stops do not move the logits
    assert isinstance(p._graph_greedy(_step((_seq(stop), True)), ()), GraphGreedy)


@pytest.mark.parametrize("case", ["cpu", "graphs_mode_2", "kernel_off", "seeded", "penalty", "bias", "logprobs", "min_tokens",
                                  "grammar", "not_sampling"])  # fmt: skip
def test_other_steps_do_not_ask(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if case == "kernel_off":  # (read when the engine is built)
        monkeypatch.setenv("INLAID_GREEDY_KERNEL", "0")
    p = Pipe("cpu" if case == "cpu" else "cuda", 2 if case == "graphs_mode_2" else 3)
    other = {
        "seeded": SamplingParams(temperature=0.8, seed=1, max_tokens=8),
        "penalty": SamplingParams(temperature=0, repetition_penalty=1.2, max_tokens=8),
        "bias": SamplingParams(temperature=0, logit_bias=((3, 1.0),), max_tokens=8),
        "logprobs": SamplingParams(temperature=0, logprobs=2, max_tokens=8),
        "min_tokens": SamplingParams(temperature=0, min_tokens=6, max_tokens=8),  # 3 out + the unread one: banned
    }.get(case, GREEDY)
    seq = _seq(other, grammar=object() if case == "grammar" else None)
    step = _step((_seq(GREEDY), True), (seq, case != "not_sampling"))
    assert p._graph_greedy(step, {seq}) is None
    # with the greedy kernel's copy mode 1 (no host store) the graph is not asked either
    monkeypatch.setattr(async_step, "GREEDY_COPY", 1)
    assert Pipe("cuda")._graph_greedy(_step((_seq(GREEDY), True)), ()) is None


def test_the_greedy_mode_is_read_once_when_the_engine_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """No environment read per step: a switch flipped after construction does not reach a built engine (a new one
    takes it); greedy_copy is the engine's own setting, which benchmarks may set between steps."""
    p = Pipe("cuda")
    assert p.greedy_copy == 2
    calls: list[Any] = []
    monkeypatch.setattr(async_step, "env_switch", lambda *a: calls.append(a))  # (would read the environment)
    monkeypatch.setenv("INLAID_GREEDY_KERNEL", "0")
    step = _step((_seq(GREEDY), True))
    assert isinstance(p._graph_greedy(step, ()), GraphGreedy) and p.greedy_copy == 2 and not calls
    monkeypatch.undo()
    monkeypatch.setenv("INLAID_GREEDY_KERNEL", "0")
    q = Pipe("cuda")
    assert q.greedy_copy == 0 and q._graph_greedy(step, ()) is None
    p.greedy_copy = 1  # (a benchmark's switch on a live engine)
    assert p._graph_greedy(step, ()) is None


def test_min_tokens_met_counting_the_unread_token_asks() -> None:
    p = Pipe("cuda")
    seq = _seq(SamplingParams(temperature=0, min_tokens=4, max_tokens=8))  # 3 out + 1 unread = 4: no ban
    assert isinstance(p._graph_greedy(_step((seq, True)), {seq}), GraphGreedy)
    assert p._graph_greedy(_step((seq, True)), ()) is None  # without the unread one: 3 < 4, banned


def test_adopt_hands_out_the_graphs_host_view_with_events_in_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Any] = []

    class Ev:
        def __init__(self) -> None:
            self.records = 0
            made.append(self)

        def record(self) -> None:
            self.records += 1

        def synchronize(self) -> None:
            pass

    monkeypatch.setattr(torch.cuda, "Event", Ev)
    copies = async_step.TokenCopies()
    host = torch.tensor([[7, 8], [0, 0]])
    pend = [copies.adopt(host) for _ in range(3)]
    assert [x.event for x in pend] == [made[0], made[1], made[0]] and made[0].records == 2 and len(made) == 2
    assert pend[2].read() == ([7, 8], [0, 0])


def test_the_greedy_host_store_is_off_under_host_register_by_either_setting_name() -> None:
    from inlaid_worker.engine.async_step import GREEDY_COPY, greedy_mode

    conf = "pinned_use_cuda_host_register:True"
    assert greedy_mode({"PYTORCH_CUDA_ALLOC_CONF": conf}) == 1
    assert greedy_mode({"PYTORCH_ALLOC_CONF": conf}) == 1  # torch's device-neutral name
    assert greedy_mode({}) == GREEDY_COPY == 2
