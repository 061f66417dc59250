"""Async scheduling emits each step's outputs at the engine.step() call after the one that launched it, never later:
when a row that the host must sample (logprobs, penalties, a grammar) joins a running async batch, the call that reads
the previous step's tokens returns them without waiting for the next step (which may need the host). Every call of the
async engine returns what the synchronous engine returned one call earlier, across the transitions into and out of
host-sampled steps, with steps launched ahead admitting (INLAID_ASYNC_ADMIT) or not. Session 11's first version
returned step N's tokens together with step N+1's there (a streaming client got them one step late)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from async_compare import assert_same_stream
from engine_helpers import engine_for
from factories import make_tiny_llama
from inlaid_worker.engine.engine import LLMEngine, RequestOutput
from inlaid_worker.engine.sampling_params import SamplingParams
from inlaid_worker.engine.sequence import FinishReason
from inlaid_worker.engine.structured import StructuredOutput

JOINERS: dict[str, dict[str, Any]] = {
    "logprobs": {"temperature": 0, "logprobs": 2},
    "penalties": {"temperature": 0.8, "seed": 4, "presence_penalty": 0.5},
    "grammar": {"temperature": 0, "structured": StructuredOutput("regex", r"[a-z]{4,9}")},
}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("per_step") / "model")


def run(model: Path, async_on: bool, admit: bool, joiner: str) -> tuple[list[list[RequestOutput]], LLMEngine]:
    engine = engine_for(model, kv_cache_bytes=1 << 20, max_num_seqs=6)
    engine.async_scheduling, engine.async_admit = async_on, admit
    enc = engine.tokenizer.encode_prompt
    script = {  # call index -> requests added before it; all end by length (no early stop changes a later batch)
        0: [("a", "The capital of France is", SamplingParams(temperature=0, max_tokens=20, ignore_eos=True))],
        4: [("host", "Hello", SamplingParams(max_tokens=5, ignore_eos=True, **JOINERS[joiner]))],
        12: [("b", "def add(a, b):", SamplingParams(temperature=0.7, seed=2, max_tokens=5, ignore_eos=True))],
    }
    calls: list[list[RequestOutput]] = []
    while engine.has_work or len(calls) <= max(script):
        for rid, prompt, params in script.get(len(calls), []):
            engine.add_request(rid, enc(prompt), params)
        calls.append(engine.step())
        assert len(calls) < 200
    return calls, engine


def view(outs: list[RequestOutput]) -> list[tuple[Any, ...]]:
    return sorted((o.request_id, o.token_ids, o.text, o.finish_reason, o.completion_tokens) for o in outs)


@pytest.mark.parametrize("admit", [True, False], ids=["admit", "decode-only"])
@pytest.mark.parametrize("joiner", list(JOINERS))
def test_each_call_emits_what_sync_emitted_one_call_earlier(model: Path, joiner: str, admit: bool) -> None:
    if joiner == "grammar":
        pytest.importorskip("xgrammar")
    sync, _ = run(model, False, admit, joiner)
    asy, engine = run(model, True, admit, joiner)
    assert engine.num_async_steps >= 10  # the steps around the host-sampled ones went ahead
    assert asy[0] == []  # the first step's tokens stay on the device until the next call
    assert [view(c) for c in asy[1:]] == [view(c) for c in sync]
    by_rid: dict[str, tuple[list[RequestOutput], list[RequestOutput]]] = {}
    for calls, k in ((asy, 0), (sync, 1)):
        for c in calls:
            for o in c:
                by_rid.setdefault(o.request_id, ([], []))[k].append(o)
    for rid, (got, want) in by_rid.items():
        assert_same_stream(got, want, rid)  # the logprobs too (to async_compare.LOGPROB_TOL)


def test_abort_of_a_host_sampled_row_emits_its_token_first(model: Path) -> None:
    """A row whose step keeps its logits for the host until the next call, aborted in between: its token, then the
    abort, as from the synchronous engine."""
    streams = []
    for async_on in (False, True):
        engine = engine_for(model, kv_cache_bytes=1 << 20, max_num_seqs=6)
        engine.async_scheduling = async_on
        params = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True, logprobs=1)
        engine.add_request("lp", engine.tokenizer.encode_prompt("Hello"), params)
        outs = [o for _ in range(4) for o in engine.step()]
        if async_on:
            assert engine._unfinished is not None and engine._unread(engine._seqs["lp"])
        assert engine.abort_request("lp")
        while engine.has_work:
            outs += engine.step()
        assert engine.block_manager.num_free_blocks == engine.limits.num_kv_blocks
        streams.append(outs)
    assert [o.finish_reason for o in streams[1]][-2:] == [None, FinishReason.ABORT]
    assert streams[1][-1].completion_tokens == 4
    assert_same_stream(streams[1], streams[0], "lp")
