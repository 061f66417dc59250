"""A failure when what is in flight is settled outside engine.step() (an adapter load or removal, or a base-weight swap,
reads the step in flight, or samples on the host the step launched with its logits kept, before it changes the runner)
ends exactly the requests whose tokens it lost, at once (the next step() call's outputs, before any new token), with
reason "error": their blocks return, the error reaches the caller (nothing is changed), and the engine serves the
others as before (a queued request's stream equals a fresh engine's) and accepts the change again. Through the engine
loop the same: the caller's future fails, the lost requests finish with an error, the others finish and the loop lives.
Session 11 left those rows running without their token until the next step failed (or ran them wrongly)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from engine_helpers import FAULT, drain, drain_outbox, engine_for, tokens
from factories import make_lora_adapter, make_tiny_llama
from inlaid_worker.engine import async_step
from inlaid_worker.engine.engine import LLMEngine, RequestOutput
from inlaid_worker.engine.sampling_params import SamplingParams
from inlaid_worker.engine.sequence import FinishReason
from inlaid_worker.server.engine_loop import EngineLoop

TARGETS = ("q_proj", "v_proj")
PROMPTS = {"a": "The capital of France is", "b": "Hello there", "c": "def add(a, b):"}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("settle") / "model")


def adapter(engine: LLMEngine, seed: int) -> Any:
    return make_lora_adapter(engine.runner.config, rank=4, targets=TARGETS, seed=seed)  # type: ignore[attr-defined]


def change(engine: LLMEngine, op: str) -> None:
    """One of the engine calls that settle what is in flight first."""
    if op == "add_adapter":
        engine.add_adapter("new", adapter(engine, 1), 4, TARGETS)
    elif op == "remove_adapter":
        engine.remove_adapter("spare")
    else:
        engine.base_weights_changed()


def start(model: Path, host_sampled: bool) -> tuple[LLMEngine, list[RequestOutput]]:
    """a and b running (their last tokens in flight), c queued behind them (max_num_seqs 2)."""
    engine = engine_for(model, kv_cache_bytes=1 << 20, max_num_seqs=2)
    assert engine.async_scheduling
    engine.add_adapter("spare", adapter(engine, 0), 4, TARGETS)
    extra = {"logprobs": 1} if host_sampled else {}  # host-sampled rows: each step keeps its logits to the next call
    enc = engine.tokenizer.encode_prompt
    for rid in ("a", "b"):
        engine.add_request(rid, enc(PROMPTS[rid]), SamplingParams(temperature=0, max_tokens=12, ignore_eos=True,
                                                                  **extra))  # fmt: skip
    engine.add_request("c", enc(PROMPTS["c"]), SamplingParams(temperature=0, max_tokens=6, ignore_eos=True))
    outs: list[RequestOutput] = []
    for _ in range(4):
        outs += engine.step()
    if host_sampled:  # the last step launched, its logits kept for the host (async_pipeline)
        assert engine._unfinished is not None and engine._inflight is None
    else:  # its tokens on the device
        assert engine._inflight is not None and set(engine._inflight.row_of) == {engine._seqs["a"], engine._seqs["b"]}
    assert engine.num_running == 2 and engine.num_waiting == 1
    return engine, outs


def inject(engine: LLMEngine, monkeypatch: pytest.MonkeyPatch, host_sampled: bool) -> dict[str, int]:
    """One failure where the settle waits for the device: the token read, or the host's sampling."""
    state = {"faults": 0}

    def once() -> None:
        if state["faults"] == 0:
            state["faults"] = 1
            raise RuntimeError(FAULT)

    if host_sampled:
        postprocess = engine._postprocess

        def failing_postprocess(*args: Any) -> Any:
            once()
            return postprocess(*args)

        monkeypatch.setattr(engine, "_postprocess", failing_postprocess)
    else:
        read = async_step.PendingCopy.read

        def failing_read(self: Any) -> Any:
            once()
            return read(self)

        monkeypatch.setattr(async_step.PendingCopy, "read", failing_read)
    return state


def alone(model: Path, rid: str, max_tokens: int) -> list[int]:
    engine = engine_for(model, kv_cache_bytes=1 << 20)
    engine.async_scheduling = False
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    engine.add_request(rid, engine.tokenizer.encode_prompt(PROMPTS[rid]), params)
    return tokens(drain(engine)[rid])


@pytest.mark.parametrize("host_sampled", [False, True], ids=["token-read", "host-sampling"])
@pytest.mark.parametrize("op", ["add_adapter", "remove_adapter", "base_weights_changed"])
def test_a_failed_settle_fails_the_rows_in_flight_at_once(
    model: Path, monkeypatch: pytest.MonkeyPatch, op: str, host_sampled: bool
) -> None:
    engine, before = start(model, host_sampled)
    emitted = {rid: sum(len(o.token_ids) for o in before if o.request_id == rid) for rid in ("a", "b")}
    state = inject(engine, monkeypatch, host_sampled)
    generation = engine.block_manager.generation
    with pytest.raises(RuntimeError, match="simulated"):
        change(engine, op)
    assert state["faults"] == 1 and engine._inflight is None  # nothing stays in flight
    if host_sampled:
        assert engine._unfinished is None
    assert "new" not in engine.adapters and "spare" in engine.adapters  # the change did not happen
    assert engine.block_manager.generation == generation
    assert engine.num_running == 0 and list(engine._seqs) == ["c"]  # a and b are gone, their blocks freed
    outs = engine.step()  # at once: the next call's outputs, before any new token of theirs
    ended = [o for o in outs if o.request_id in ("a", "b")]
    assert sorted(o.request_id for o in ended) == ["a", "b"]
    for o in ended:
        assert o.finish_reason is FinishReason.ERROR and o.token_ids == []
        assert o.completion_tokens == emitted[o.request_id]  # the lost token is not counted
    rest = drain(engine, {"c": [o for o in outs if o.request_id == "c"]})
    assert set(rest) == {"c"} and rest["c"][-1].finish_reason is FinishReason.LENGTH
    assert tokens(rest["c"]) == alone(model, "c", 6)  # the engine serves the others as before
    assert engine.block_manager.num_free_blocks == engine.limits.num_kv_blocks and not engine.has_work
    change(engine, op)  # and takes the change now


def test_through_the_loop_the_lost_requests_end_with_an_error(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = engine_for(model, kv_cache_bytes=1 << 20, max_num_seqs=2)
    loop = EngineLoop(engine)
    reads = {"n": 0}
    read = async_step.PendingCopy.read

    def counting_read(self: Any) -> Any:
        reads["n"] += 1
        if reads["n"] == -1:
            raise RuntimeError(FAULT)
        return read(self)

    monkeypatch.setattr(async_step.PendingCopy, "read", counting_read)
    loop.start()
    try:
        sid, outbox = loop.open_session()
        enc = engine.tokenizer.encode_prompt
        for rid, n in (("a", 200), ("b", 200), ("c", 6)):
            params = SamplingParams(temperature=0, max_tokens=n, ignore_eos=True)
            loop.admit(sid, rid, enc(PROMPTS[rid]), params, "")
        events: dict[str, list[Any]] = {}

        def collect(until: Any) -> None:  # the outputs and AdmitErrors, by request, until until()
            def take(ev: Any) -> bool:
                if isinstance(ev, RequestOutput) or type(ev).__name__ == "AdmitError":
                    events.setdefault(ev.request_id, []).append(ev)
                    return True
                return False

            drain_outbox(outbox, lambda _: until(), keep=take)

        collect(lambda: len(events.get("a", [])) >= 3 and len(events.get("b", [])) >= 3)

        def swap(e: LLMEngine) -> None:
            reads["n"] = -2  # the settle's read is the next one: it fails
            e.base_weights_changed()

        with pytest.raises(RuntimeError, match="simulated"):
            loop.call(swap).result(timeout=20)

        def ended(rid: str) -> bool:
            last = events.get(rid, [None])[-1]
            return isinstance(last, RequestOutput) and last.finish_reason is not None

        collect(lambda: all(ended(r) for r in ("a", "b", "c")))
        assert [getattr(events[r][-1], "finish_reason", "AdmitError") for r in ("a", "b", "c")] == [
            FinishReason.ERROR,
            FinishReason.ERROR,
            FinishReason.LENGTH,
        ]
        assert not any(type(ev).__name__ == "AdmitError" for evs in events.values() for ev in evs)
        assert sum(len(o.token_ids) for o in events["c"]) == 6
        assert loop.call(lambda e: e.has_work).result(timeout=20) is False
        assert loop._thread.is_alive()  # noqa: SLF001
    finally:
        loop.stop(1.0)


def test_a_row_finished_before_a_partial_host_sampling_failure_keeps_its_final_output(model: Path) -> None:
    """Review of session 12: a kept host-sampled step ends `a` (max_tokens) and then fails on `b`'s row at a settle
    (base-weight swap): `a`'s final output must still come out (it left the engine), `b` ends with an error."""
    engine = engine_for(model, kv_cache_bytes=1 << 20, max_num_seqs=4)
    enc = engine.tokenizer.encode_prompt
    for rid, text, most in (("a", "Hello", 3), ("b", "Hello there", 30)):
        engine.add_request(rid, enc(text), SamplingParams(temperature=0, max_tokens=most, ignore_eos=True, logprobs=1))
    outs = [o for _ in range(3) for o in engine.step()]  # a's last token: in the step launched by call 3, kept
    assert engine._unfinished is not None

    def boom(_tokens: Any) -> None:
        raise RuntimeError("detokenizer failed (simulated)")

    engine._seqs["b"].detokenizer.add = boom  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="simulated"):
        engine.base_weights_changed()
    outs += engine.step()
    finals = {o.request_id: o.finish_reason for o in outs if o.finish_reason is not None}
    assert "a" not in engine._seqs
    assert finals == {"a": FinishReason.LENGTH, "b": FinishReason.ERROR}
    assert sum(len(o.token_ids) for o in outs if o.request_id == "a") == 3
