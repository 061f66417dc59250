"""Async scheduling (engine/async_step.py) changes no request's output: a synchronous engine and an async one run the
same script on a tiny random Llama (CPU), and every request's stream of outputs is equal (tokens, text, finish reason,
counts, logprobs, prompt logprobs), with stops by EOS (a stop token id), max_tokens, stop strings, min_tokens,
greedy and seeded rows, requests that join mid-decode, aborts while a token is in flight, rows that are not
async-eligible (logprobs, penalties) in the same batch, and a KV cache small enough to preempt. The async engine
must actually launch steps ahead (num_async_steps)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from async_compare import assert_same_stream
from engine_helpers import MIXED_PROMPTS, engine_for
from factories import make_tiny_llama
from inlaid_worker.engine.async_step import TokenCopies, row_ok
from inlaid_worker.engine.engine import LLMEngine, RequestOutput
from inlaid_worker.engine.sampling_params import SamplingParams
from inlaid_worker.engine.sequence import FinishReason, Sequence
from inlaid_worker.model.token_feed import make_feed

PROMPTS = MIXED_PROMPTS


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("async") / "model")


def make_engine(model: Path, async_on: bool, kv_bytes: int) -> LLMEngine:
    engine = engine_for(model, kv_cache_bytes=kv_bytes, max_num_seqs=6)
    engine.async_scheduling = async_on
    return engine


Script = dict[int, list[tuple[str, str, SamplingParams] | tuple[str, str]]]  # call index -> adds / ("abort", rid)


def run(model: Path, async_on: bool, script: Script, kv_bytes: int) -> tuple[dict[str, list[RequestOutput]], Any]:
    engine = make_engine(model, async_on, kv_bytes)
    outs: dict[str, list[RequestOutput]] = {}
    calls = 0
    last = max(script)
    while engine.has_work or calls <= last:
        for action in script.get(calls, []):
            if action[0] == "abort":
                engine.abort_request(action[1])
            else:
                rid, prompt, params = action  # type: ignore[misc]
                engine.add_request(rid, engine.tokenizer.encode_prompt(prompt), params)
        for o in engine.step():
            outs.setdefault(o.request_id, []).append(o)
        calls += 1
        assert calls < 500
    return outs, engine


def greedy_text(model: Path, prompt: str, n: int) -> list[int]:
    engine = make_engine(model, False, 1 << 20)
    engine.add_request("p", engine.tokenizer.encode_prompt(prompt), SamplingParams(temperature=0, max_tokens=n,
                                                                                  ignore_eos=True))  # fmt: skip
    toks: list[int] = []
    while engine.has_work:
        toks += [t for o in engine.step() for t in o.token_ids]
    return toks


def scenario(model: Path) -> Script:
    g = greedy_text(model, PROMPTS[2], 40)
    stop_tok = g[9]  # "eos" stops at the first occurrence of its 10th greedy token (a stop token, as EOS stops)
    engine = make_engine(model, False, 1 << 20)
    txt = engine.tokenizer.hf.decode(greedy_text(model, PROMPTS[3], 40))
    stop_str = txt[len(txt) // 2 : len(txt) // 2 + 3]
    return {
        0: [
            ("greedy", PROMPTS[0], SamplingParams(temperature=0, max_tokens=30, ignore_eos=True)),
            (
                "seeded",
                PROMPTS[1],
                SamplingParams(temperature=0.9, seed=11, max_tokens=25, ignore_eos=True, top_p=0.9),
            ),  # fmt: skip
            ("eos", PROMPTS[2], SamplingParams(temperature=0, max_tokens=40, stop_token_ids=(stop_tok,))),
        ],
        3: [
            ("stop", PROMPTS[3], SamplingParams(temperature=0, max_tokens=40, ignore_eos=True, stop=(stop_str, "zz"))),
            (
                "min",
                PROMPTS[4],
                SamplingParams(
                    temperature=0.7, seed=3, max_tokens=20, min_tokens=5, stop_token_ids=(5, 9, 17), top_k=20
                ),
            ),  # fmt: skip
        ],
        9: [
            ("late", PROMPTS[0], SamplingParams(temperature=1.0, seed=5, max_tokens=18, logit_bias=((7, 2.0),))),
            ("aborted", PROMPTS[1], SamplingParams(temperature=0, max_tokens=50, ignore_eos=True)),
        ],
        16: [("abort", "aborted")],
        20: [("lp", PROMPTS[4], SamplingParams(temperature=0, max_tokens=8, logprobs=2, ignore_eos=True))],
        24: [("pen", PROMPTS[3], SamplingParams(temperature=0.8, seed=9, max_tokens=10, presence_penalty=0.5))],
    }


@pytest.mark.parametrize("kv_bytes", [1 << 20, 1 << 16], ids=["roomy", "preempting"])
def test_async_outputs_equal_sync(model: Path, kv_bytes: int) -> None:
    script = scenario(model)
    sync, sync_engine = run(model, False, script, kv_bytes)
    asy, async_engine = run(model, True, script, kv_bytes)
    assert set(sync) == set(asy)
    for rid in sync:
        assert_same_stream(asy[rid], sync[rid], rid)
    # decode steps went ahead (not while the lp / pen rows run, nor while preempted sequences wait)
    assert async_engine.num_async_steps >= (15 if kv_bytes == 1 << 20 else 2)
    if kv_bytes == 1 << 16:
        assert sync_engine.num_preemptions > 0 and async_engine.num_preemptions == sync_engine.num_preemptions
    reasons = {rid: o[-1].finish_reason for rid, o in sync.items()}
    assert reasons["greedy"] is FinishReason.LENGTH and reasons["aborted"] is FinishReason.ABORT
    assert reasons["eos"] is FinishReason.STOP and len(sync["eos"]) < 40  # stopped by its stop token
    assert reasons["stop"] is FinishReason.STOP and len(sync["stop"]) < 40  # the stop string hit
    if kv_bytes == 1 << 20:  # it ran before the abort (in the small cache it still waits then)
        assert sync["aborted"][-1].completion_tokens == len(sync["aborted"]) - 1 > 0  # tokens, then the abort


def test_abort_of_a_token_in_flight_emits_it_first(model: Path) -> None:
    engine = make_engine(model, True, 1 << 20)
    engine.add_request("a", engine.tokenizer.encode_prompt(PROMPTS[0]), SamplingParams(temperature=0, max_tokens=20,
                                                                                      ignore_eos=True))  # fmt: skip
    got: list[RequestOutput] = []
    for _ in range(4):
        got += engine.step()
    assert engine._inflight is not None and engine.num_async_steps > 0  # a token is on the device
    assert engine.abort_request("a")
    got += engine.step()
    assert [o.finish_reason for o in got][-2:] == [None, FinishReason.ABORT]
    assert got[-1].completion_tokens == len(got) - 1 == 4  # four steps launched, four tokens, then the abort
    assert not engine.has_work


def test_switching_async_off_reads_the_step_in_flight(model: Path) -> None:
    engine = make_engine(model, True, 1 << 20)
    engine.add_request("a", engine.tokenizer.encode_prompt(PROMPTS[2]), SamplingParams(temperature=0, max_tokens=12,
                                                                                      ignore_eos=True))  # fmt: skip
    got = [t for _ in range(5) for o in engine.step() for t in o.token_ids]
    engine.async_scheduling = False
    while engine.has_work:
        got += [t for o in engine.step() for t in o.token_ids]
    assert got == greedy_text(model, PROMPTS[2], 12)


def test_rows_that_stay_synchronous() -> None:
    def seq(**kw: Any) -> Sequence:
        return Sequence("r", [1, 2], SamplingParams(**kw))

    assert row_ok(seq(temperature=0)) and row_ok(seq(temperature=0.5, seed=1, min_tokens=3, stop=("x",)))
    assert not row_ok(seq(temperature=0, logprobs=1))
    assert not row_ok(seq(temperature=0.5, repetition_penalty=1.2))
    assert not row_ok(seq(temperature=0.001))  # x / T might overflow float32: sample_batch's host redo needs logits


def test_token_feed_writes_the_previous_tokens() -> None:
    prev = torch.tensor([11, 22, 33], dtype=torch.int64)
    ids = torch.zeros(4, dtype=torch.int32)
    make_feed(prev, [0, 1, 2]).write(ids)
    assert ids.tolist() == [11, 22, 33, 0]
    fed = make_feed(prev, [2, 0]).fed(torch.tensor([5, 6, 7]))
    assert fed.tolist() == [33, 11, 7]
    assert make_feed(prev, [0, 1]).src is None and make_feed(prev, [1]).src == (1,)


def test_token_copies_on_the_cpu_read_the_tensors() -> None:
    copy = TokenCopies().start(torch.tensor([4, 5]), torch.tensor([False, True]))
    assert copy.read() == ([4, 5], [0, 1])


def _min_tokens_run(model: Path, async_on: bool, params: SamplingParams) -> tuple[list[int], Any, int]:
    engine = engine_for(model, kv_cache_bytes=1 << 20, max_num_seqs=4)
    engine.async_scheduling = async_on
    engine.add_request("r", engine.tokenizer.encode_prompt("Numbers: 1 2 3"), params)
    other = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)  # keeps the batch going after r stops
    engine.add_request("other", engine.tokenizer.encode_prompt("Hello"), other)
    tokens: list[int] = []
    reason = None
    while engine.has_work:
        for out in engine.step():
            if out.request_id == "r":
                tokens += out.token_ids
                reason = out.finish_reason
    return tokens, reason, engine.num_async_steps


def test_min_tokens_ban_counts_the_unread_token(model: Path) -> None:
    """A stop token the model wants early, banned until min_tokens: the async ban must count the token still on the
    device (a ban that forgot it stopped one token later at min_tokens 7 in review)."""
    greedy, _, _ = _min_tokens_run(model, False, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))
    stops = sorted(set(greedy[5:]))  # tokens the model emits late in the run: the ban decides where it stops
    assert stops
    cases = 0
    for stop in stops:
        for m in (6, 7, 8, 9):
            params = SamplingParams(temperature=0, max_tokens=12, min_tokens=m, stop_token_ids=(stop,), ignore_eos=True)
            sync, a = _min_tokens_run(model, False, params), _min_tokens_run(model, True, params)
            assert a[2] > 0  # steps went ahead
            assert (a[0], a[1]) == (sync[0], sync[1]), (stop, m)
            cases += 1
    assert cases >= 4


def test_async_env_switches(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """INLAID_ASYNC_SCHEDULING / INLAID_ASYNC_ADMIT: on by default, off by 0/off, a typo is an error naming it."""
    assert engine_for(model, kv_cache_bytes=1 << 20).async_scheduling
    monkeypatch.setenv("INLAID_ASYNC_SCHEDULING", "off")
    monkeypatch.setenv("INLAID_ASYNC_ADMIT", "0")
    engine = engine_for(model, kv_cache_bytes=1 << 20)
    assert not engine.async_scheduling and not engine.async_admit
    monkeypatch.setenv("INLAID_ASYNC_SCHEDULING", "maybe")
    with pytest.raises(ValueError, match="INLAID_ASYNC_SCHEDULING"):
        engine_for(model, kv_cache_bytes=1 << 20)
