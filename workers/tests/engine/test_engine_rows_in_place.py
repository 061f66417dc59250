"""The engine hands the samplers the step's logits as the runner returned them, with the sampling rows' indices (rows=),
where it copied those rows before (logits[rows]: ~31 MiB at a 32k vocabulary and 256 rows, ~125 MiB at 128k, which
sampling_reserve_bytes no longer counts): engine._postprocess (a step with prefill chunks that do not sample yet),
async_pipeline._launch_sampling (launch_batch) and _finish_ahead (rows of sequences that finished meanwhile). On a
tiny model with chunked prompts, finished rows, greedy, seeded, top-k / top-p, penalties, logprobs, min_tokens and
logit_bias rows, every request's stream equals the one the former copy gives, synchronous and async, through the
per-row sampler (the CPU's) and the batched one (the GPU's, run on CPU tensors here). The reference runs this engine
with the sampler given the copy, so the tokens alone do not check the row mapping: each sampler call is checked to
read, for its j-th sampled sequence, the runner's row of that sequence's chunk (a mapping that ignores
_finish_ahead's rows, or shifts / reverses launch_batch's or _postprocess's, fails there)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from async_compare import assert_same_stream
from engine_script import Script, make_engine, run, scripted
from factories import make_tiny_llama
from inlaid_worker.engine import async_pipeline
from inlaid_worker.engine import engine as engine_module
from inlaid_worker.engine.device_sampler import launch_batch, sample_batch
from inlaid_worker.engine.engine import LLMEngine
from inlaid_worker.engine.sampler import sample_rows
from inlaid_worker.engine.sampling_params import SamplingParams
from inlaid_worker.engine.sequence import Sequence
from inlaid_worker.engine.step_builder import build_step_input


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("rows") / "model")


def prompt(i: int, n: int) -> list[int]:
    return [3 + (13 * i + 5 * j) % 250 for j in range(n)]


class Spy:
    """Records the runner's logits with the sequence of each row's chunk (from the steps built), and what the samplers
    were given; old: the sampler given a copy of the sampling rows (logits[rows], then every row of that), as the
    engine did before."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, engine: LLMEngine, batched: bool, old: bool) -> None:
        self.outputs: list[torch.Tensor] = []
        self.row_seqs: list[list[Sequence]] = []  # outputs[k]'s row i: row_seqs[k][i]'s chunk
        self.calls: list[tuple[str, torch.Tensor, list[int] | None, list[SamplingParams]]] = []
        self.logit_rows = 0  # _postprocess calls with logit_rows (_finish_ahead without finished rows' logits)
        self.old = old
        self._built: list[tuple[Any, list[Sequence]]] = []  # the steps built, with their chunks' sequences
        real_execute = engine.runner.execute_device  # type: ignore[attr-defined]

        def build(chunks: Any, *args: Any, **kw: Any) -> Any:
            step = build_step_input(chunks, *args, **kw)
            self._built.append((step, [c.seq for c in chunks]))
            return step

        def execute_device(step: Any) -> torch.Tensor:
            out = real_execute(step)
            self.outputs.append(out)
            self.row_seqs.append(next(seqs for built, seqs in self._built if built is step))
            return out

        monkeypatch.setattr(engine_module, "build_step_input", build)
        monkeypatch.setattr(async_pipeline, "build_step_input", build)
        monkeypatch.setattr(engine.runner, "execute_device", execute_device)
        sample = self._wrap("sample", sample_batch if batched else sample_rows)
        monkeypatch.setattr(engine_module, "sample_rows", sample)
        monkeypatch.setattr(async_pipeline, "launch_batch", self._wrap("launch", launch_batch))
        real_post = engine._postprocess

        def postprocess(scheduled: Any, logits: torch.Tensor, into: Any = None, logit_rows: Any = None) -> Any:
            if logit_rows is None:
                return real_post(scheduled, logits, into)
            self.logit_rows += 1
            return real_post(scheduled, logits, into, logit_rows)

        monkeypatch.setattr(engine, "_postprocess", postprocess)

    def _wrap(self, name: str, real: Any) -> Any:
        def sampler(logits: torch.Tensor, *args: Any, rows: list[int] | None = None, **kw: Any) -> Any:
            self.calls.append((name, logits, rows, list(args[0])))  # args[0]: params, one per sampled sequence
            if self.old and rows is not None:
                logits, rows = logits[rows], None
            return real(logits, *args, **kw) if rows is None else real(logits, *args, rows=rows, **kw)

        return sampler

    def selected(self, name: str) -> int:
        """Calls of `name` that read some rows of the logits in place."""
        return sum(n == name and rows is not None and len(rows) < x.shape[0] for n, x, rows, _ in self.calls)

    def check_row_identity(self) -> None:
        """Every sampler call got a tensor the runner returned (no copy of it), and the row it reads for its j-th
        sampled sequence (rows[j], or j without rows) is the runner's row of that sequence's chunk."""
        assert self.calls
        for name, x, rows, params in self.calls:
            k = next((k for k, out in enumerate(self.outputs) if out is x), None)
            assert k is not None, f"{name}: the sampler got logits the runner did not return"
            seqs = self.row_seqs[k]
            assert len(seqs) == x.shape[0]
            at = list(range(x.shape[0])) if rows is None else rows
            assert len(at) == len(params), (name, at, len(params))
            for j, p in enumerate(params):
                assert seqs[at[j]].sampling is p, f"{name}: sampled row {j} reads row {at[j]}, not its own chunk's"


def workload(stop_token: int) -> Script:
    """r0 stops at its first token; r4 (logprobs: sampled on the host) is admitted beside r0's next decode row at
    once, so with async_admit that step is launched ahead of reading r0's token and sampled without r0's row
    (_finish_ahead's logit_rows). The others: prompts in chunks beside decode rows, each kind of sampling row."""
    base = {"max_tokens": 9, "ignore_eos": True}
    params = [
        SamplingParams(temperature=0, stop_token_ids=(stop_token,), **base),
        SamplingParams(temperature=0.8, seed=7, top_p=0.9, **base),
        SamplingParams(temperature=1.2, seed=8, top_k=20, min_p=0.05, **base),
        SamplingParams(
            temperature=0.7, seed=9, presence_penalty=0.5, frequency_penalty=0.3, repetition_penalty=1.2, **base
        ),
        SamplingParams(temperature=0, logprobs=3, max_tokens=2, ignore_eos=True),  # short: the steps go async again
        SamplingParams(temperature=0.9, seed=10, min_tokens=5, logit_bias=((7, 3.0), (9, -50.0)), **base),
    ]
    return scripted(params, [6, 30, 9, 21, 4, 27], [0, 3, 0, 12, 1, 4], prompt)  # (lengths, calls)


def stop_token(model: Path) -> int:
    """r0's first greedy token (so it stops there)."""
    engine = make_engine(model, "sync")
    engine.add_request("g", prompt(0, 6), SamplingParams(temperature=0, max_tokens=1, ignore_eos=True), "")
    return run(engine, {0: []})["g"][0].token_ids[0]


@pytest.mark.parametrize("batched", [False, True], ids=["per_row", "batched"])
@pytest.mark.parametrize("mode", ["sync", "async", "admit"])
def test_the_samplers_read_the_runners_logits_in_place(
    monkeypatch: pytest.MonkeyPatch, model: Path, mode: str, batched: bool
) -> None:
    script = workload(stop_token(model))
    old_engine = make_engine(model, mode)
    Spy(monkeypatch, old_engine, batched, old=True)
    want = run(old_engine, script)
    engine = make_engine(model, mode)
    spy = Spy(monkeypatch, engine, batched, old=False)
    got = run(engine, script)
    assert set(got) == set(want) == {f"r{i}" for i in range(6)}
    for rid in want:
        assert_same_stream(got[rid], want[rid], rid)
    assert want["r0"][-1].completion_tokens == 1  # stopped by its stop token
    # every sampler call got a tensor the runner returned (no copy of it), some with a selection of its rows, each
    # sampled sequence's row of it being its own chunk's (the tokens alone could miss a wrong row mapping)
    spy.check_row_identity()
    counts = (spy.selected("sample"), spy.selected("launch"), spy.logit_rows)
    if mode == "sync":  # steps with a prompt chunk that does not sample yet beside sampling rows
        assert counts[0] >= 2, counts
    else:  # such steps' tokens left on the device (launch_batch); with admissions ahead, r0's dead row left out
        assert counts[1] >= 2 and (mode == "async" or counts[0] >= 1 and counts[2] >= 1), counts
