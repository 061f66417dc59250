"""Session 10's engine host work changes no output: an engine on today's code and one on the code before it (the
step builder, detokenizer, _append_token, the scheduler's running pass and commit, kept in test references) run
the same requests on a tiny random Llama, and every step's outputs are equal (tokens, text, logprobs, prompt
logprobs, finish reasons, counts). The requests mix greedy and seeded sampling, stop strings (one that hits, with
multi-byte UTF-8 in the text), stop token ids, min_tokens, logprobs, prompt logprobs, requests that join later,
an abort, and a KV cache small enough to preempt; most steps are pure decode."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import MethodType
from typing import Any

import engine_reference as ref
import inlaid_worker.engine.engine as eng
import pytest
from detokenizer_reference import ReferenceDetokenizer
from engine_helpers import MIXED_PROMPTS, engine_for
from factories import make_tiny_llama
from inlaid_worker.engine.detokenizer import decode
from inlaid_worker.engine.engine import LLMEngine, RequestOutput
from inlaid_worker.engine.sampling_params import SamplingParams
from inlaid_worker.engine.sequence import FinishReason
from inlaid_worker.engine.step_builder import build_step_input
from test_step_builder import reference_build

PROMPTS = MIXED_PROMPTS


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("eq") / "model")


def reference_step_input(chunks: Any, block_size: int, device: Any) -> Any:
    """The list-based builder's tensors (the prompt logprob fields, which it never had, from today's)."""
    today = build_step_input(chunks, block_size, device)
    return replace(
        reference_build(list(chunks), block_size),
        prompt_rows=today.prompt_rows,
        prompt_targets=today.prompt_targets,
        prompt_top_k=today.prompt_top_k,
    )


def make_engine(model: Path, reference: bool) -> LLMEngine:
    engine = engine_for(model, kv_cache_bytes=1 << 16, max_num_seqs=6)  # 8 blocks of 16: preemptions
    engine.async_scheduling = False  # step by step against the synchronous code before (async: test_async_scheduling)
    if reference:
        engine._append_token = MethodType(ref._append_token, engine)  # type: ignore[method-assign]
        engine.scheduler._schedule_running = MethodType(ref._schedule_running, engine.scheduler)  # type: ignore[method-assign]
        engine.scheduler.commit = MethodType(ref.commit, engine.scheduler)  # type: ignore[method-assign]
    return engine


def add(engine: LLMEngine, reference: bool, rid: str, prompt: str, params: SamplingParams) -> None:
    engine.add_request(rid, engine.tokenizer.encode_prompt(prompt), params)
    if reference:
        engine._seqs[rid].detokenizer = ReferenceDetokenizer(engine.tokenizer.hf, params.stop, params.min_tokens)


def run(
    model: Path, reference: bool, stop: str, monkeypatch: pytest.MonkeyPatch, schedules: list[Any]
) -> list[list[RequestOutput]]:
    """Every step's outputs (and its schedule, into schedules); the reference engine steps with the reference step
    builder."""
    engine = make_engine(model, reference)
    requests = {
        "greedy-lp": SamplingParams(temperature=0, max_tokens=30, ignore_eos=True, logprobs=2),
        "seeded": SamplingParams(temperature=0.9, seed=11, max_tokens=25, ignore_eos=True, top_p=0.9),
        "stop": SamplingParams(temperature=0, max_tokens=40, ignore_eos=True, stop=(stop, "never-hits")),
        "min": SamplingParams(temperature=0.7, seed=3, max_tokens=20, min_tokens=5, stop_token_ids=(5, 9, 17)),
        "prompt-lp": SamplingParams(temperature=0, max_tokens=12, prompt_logprobs=2, logprobs=0),
    }
    later = {"late": SamplingParams(temperature=1.0, seed=5, max_tokens=18), "aborted": SamplingParams(max_tokens=50)}
    names = list(requests)
    for rid in names[:3]:
        add(engine, reference, rid, PROMPTS[names.index(rid)], requests[rid])
    steps: list[list[RequestOutput]] = []
    schedule = engine.scheduler.schedule

    def recorded() -> Any:  # each step's chunks and preemptions, compared as a pseudo-output
        out = schedule()
        chunks = [(c.seq.request_id, c.start, c.num_tokens, c.samples) for c in out.chunks]
        schedules.append((chunks, [s.request_id for s in out.preempted]))
        return out

    engine.scheduler.schedule = recorded  # type: ignore[method-assign]
    with monkeypatch.context() as m:
        if reference:
            m.setattr(eng, "build_step_input", reference_step_input)
        while engine.has_work or len(steps) < 4:
            if len(steps) == 2:
                for rid in names[3:]:
                    add(engine, reference, rid, PROMPTS[names.index(rid)], requests[rid])
            if len(steps) == 6:
                for i, (rid, params) in enumerate(later.items()):
                    add(engine, reference, rid, PROMPTS[i], params)
            if len(steps) == 12:
                assert engine.abort_request("aborted")
            steps.append(engine.step())
    assert engine.num_preemptions > 0  # the scenario exercises the scheduler's preemption path
    return steps


def stop_string(model: Path) -> str:
    """A piece of the "stop" request's greedy text (it has no stop then), so that the stop string hits."""
    engine = engine_for(model, kv_cache_bytes=1 << 20)
    engine.add_request("p", engine.tokenizer.encode_prompt(PROMPTS[2]), SamplingParams(temperature=0, max_tokens=40,
                                                                                         ignore_eos=True))  # fmt: skip
    text = ""
    while engine.has_work:
        text += "".join(o.text for o in engine.step())
    assert len(text) > 12
    return text[len(text) // 2 : len(text) // 2 + 3]


def test_outputs_equal_the_code_before_step_by_step(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stop = stop_string(model)
    plans: tuple[list[Any], list[Any]] = ([], [])
    today, before = run(model, False, stop, monkeypatch, plans[0]), run(model, True, stop, monkeypatch, plans[1])
    assert plans[0] == plans[1] and any(p[1] for p in plans[0])  # the same chunks, the same preemptions
    assert sum(all(c[2] == 1 for c in p[0]) for p in plans[0]) > len(plans[0]) // 2  # mostly pure decode steps
    assert len(today) == len(before)
    for i, (a, b) in enumerate(zip(today, before, strict=True)):
        assert a == b, f"step {i}"
    outs: dict[str, list[RequestOutput]] = {}
    for step in today:
        for o in step:
            outs.setdefault(o.request_id, []).append(o)
    reasons = {rid: o[-1].finish_reason for rid, o in outs.items()}
    assert reasons["greedy-lp"] is FinishReason.LENGTH and reasons["aborted"] is FinishReason.ABORT
    assert reasons["stop"] is FinishReason.STOP  # the stop string hit
    text = "".join(o.text for o in outs["stop"])
    assert stop not in text and len(text) > 0
    lp = outs["greedy-lp"]
    assert all(len(o.logprobs or ()) == len(o.token_ids) == 1 for o in lp)
    assert sum(1 for o in outs["prompt-lp"] if o.prompt_logprobs) == 1
    assert outs["late"][0].cached_tokens > 0  # its prompt's blocks were registered at commit (greedy-lp's prompt)
    hf = make_engine_tokenizer(model)
    tokens = [t for o in lp for t in o.token_ids]
    assert "".join(o.text for o in lp) == decode(hf, tokens)  # no stop: the deltas add up to the full decode


def make_engine_tokenizer(model: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


def test_token_delta_makes_the_dataclass_object() -> None:
    from dataclasses import fields

    from inlaid_worker.engine.sampler import TokenLogprobs

    args = ("r", "té", [7], FinishReason.LENGTH, 12, 3, (TokenLogprobs(7, -0.5, ((7, -0.5),)),), 4)
    fast, slow = RequestOutput.token_delta(*args), RequestOutput(*args)
    assert fast == slow and vars(fast) == vars(slow) and repr(fast) == repr(slow)
    assert set(vars(fast)) == {f.name for f in fields(RequestOutput)}  # a new field must be set there too
    assert replace(fast, text="x") == replace(slow, text="x")
    with pytest.raises(AttributeError):  # still frozen
        fast.text = "y"  # type: ignore[misc]
