"""Hostile requests and failed adapter loads: a too-deep JSON schema / tools list is an invalid-input error, a
failing admit answers only its own request (its Session neighbours go on), and an adapter whose device load fails
leaves no trace (a retry works)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
import torch
from factories import make_random_adapter, make_tiny_llama
from grpc_worker import serving
from inlaid_worker.engine.structured import StructuredOutput, StructuredOutputError
from inlaid_worker.engine.tool_template import chat_messages, parse_tools
from inlaid_worker.gen.inlaid.v1 import common_pb2, worker_pb2
from inlaid_worker.lora.adapter import load_adapter
from inlaid_worker.model.adapter_tier import AdapterTier
from inlaid_worker.model.config import load_model_config

FINISH = common_pb2.FinishReason
DEEP = "[" * 2000 + "]" * 2000  # 4000 characters: under MAX_SPEC_CHARS, deeper than Python's json can parse


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-req")
    model = make_tiny_llama(root / "model", max_positions=4096)
    make_random_adapter(root / "ad", model, rank=4, alpha=8, targets=["q_proj"], seed=1)
    make_random_adapter(root / "ad2", model, rank=4, alpha=8, targets=["v_proj"], seed=2)
    return model, root


def test_deep_json_schema_is_a_structured_output_error():
    with pytest.raises(StructuredOutputError, match="nested too deep"):
        StructuredOutput("json_schema", '{"a":' + DEEP + "}")


def test_deep_tools_and_tool_arguments():
    with pytest.raises(ValueError, match="tools is not JSON: nested too deep"):
        parse_tools('[{"a":' + DEEP + "}]")
    call = common_pb2.ToolCall(id="1", name="f", arguments=DEEP)
    msg = common_pb2.ChatMessage(role="assistant", content="", tool_calls=common_pb2.ToolCallList(calls=[call]))
    assert chat_messages([msg])[0]["tool_calls"][0]["function"]["arguments"] == DEEP  # kept as the text


@contextmanager
def loop_held(running: Any) -> Iterator[None]:
    """The worker's engine loop stuck in a call until the block ends; then released, and that call finished."""
    release = threading.Event()
    busy = running.loop.call(lambda e: release.wait(10))
    try:
        yield
    finally:
        release.set()
    busy.result(timeout=10)


def _admit(rid: str, sampling: common_pb2.SamplingParams, prompt=(1, 2, 3)) -> worker_pb2.ControlMessage:
    return worker_pb2.ControlMessage(
        admit=worker_pb2.Admit(request_id=rid, model="", prompt_token_ids=list(prompt), sampling=sampling)
    )


def _neighbour_survives(stub, bad: worker_pb2.ControlMessage) -> dict:
    """Admit "good", then `bad` once "good" streams; returns good's finish reason and bad's error message (or its
    finish reason, when it was served instead of refused)."""
    out: queue.Queue = queue.Queue()
    call = stub.Session(iter(out.get, None))
    sp = common_pb2.SamplingParams(max_tokens=200, ignore_eos=True, temperature=0.0)
    out.put(_admit("good", sp))
    events = iter(call)
    for ev in events:
        if ev.WhichOneof("kind") == "delta":
            break
    out.put(bad)
    seen: dict = {"good_finish": None, "bad_error": None, "bad_finish": None}
    for ev in events:
        kind = ev.WhichOneof("kind")
        if kind == "delta" and ev.delta.finish_reason and ev.delta.request_id in ("good", "bad"):
            seen[f"{ev.delta.request_id}_finish"] = ev.delta.finish_reason
        if kind == "error" and ev.error.request_id == "bad":
            seen["bad_error"] = ev.error.message
        if seen["good_finish"] and (seen["bad_error"] or seen["bad_finish"]):  # "bad" answered either way
            break
    out.put(None)
    for _ in events:  # drain: the stream ends once the half-closed Session has no requests left
        pass
    assert call.code() == grpc.StatusCode.OK
    return seen


def test_deep_schema_prepare_and_session_neighbours(model):
    model_dir, _ = model
    with serving(model_dir, kv_cache_bytes=4 << 20) as (stub, _running):
        sampling = common_pb2.SamplingParams(max_tokens=4, json_schema='{"a":' + DEEP + "}")
        with pytest.raises(grpc.RpcError) as err:
            stub.Prepare(worker_pb2.PrepareRequest(model="", prompt="hi", sampling=sampling))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        seen = _neighbour_survives(stub, _admit("bad", common_pb2.SamplingParams(max_tokens=4, json_schema=DEEP)))
        assert seen["good_finish"] == FINISH.FINISH_REASON_LENGTH
        assert "nested too deep" in seen["bad_error"]


def test_unforeseen_admit_error_answers_only_that_request(model):
    model_dir, _ = model
    with serving(model_dir, kv_cache_bytes=4 << 20) as (stub, running):
        engine = running.loop.engine
        real = engine.check_prompt

        def check_prompt(ids):  # a fault no check foresaw, for the prompt [7, 7] only
            if list(ids) == [7, 7]:
                raise RuntimeError("injected fault")
            return real(ids)

        engine.check_prompt = check_prompt
        bad = _admit("bad", common_pb2.SamplingParams(max_tokens=4), prompt=(7, 7))
        seen = _neighbour_survives(stub, bad)
        assert seen["good_finish"] == FINISH.FINISH_REASON_LENGTH
        assert "RuntimeError: injected fault" in seen["bad_error"]


def test_failed_device_load_leaves_no_trace(model):
    model_dir, root = model
    with serving(model_dir, kv_cache_bytes=4 << 20) as (stub, running):
        tier = running.loop.engine.runner._adapters
        real, calls = tier._load, []

        def failing(name, slot):
            calls.append(name)
            if len(calls) == 1:
                raise torch.OutOfMemoryError("CUDA out of memory (injected)")
            return real(name, slot)

        tier._load = failing
        with pytest.raises(grpc.RpcError):
            stub.LoadAdapter(worker_pb2.LoadAdapterRequest(name="t", path=str(root / "ad")))
        assert "t" not in tier.cache and tier.slots == {}
        assert stub.LoadAdapter(worker_pb2.LoadAdapterRequest(name="t", path=str(root / "ad"))).id == "t"
        assert "t" in [m.id for m in stub.GetInfo(worker_pb2.InfoRequest()).models]
        assert tier.slots == {"t": 0}


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_failed_acquire_load_rolls_back_residency(model, backend):
    model_dir, root = model
    config = load_model_config(model_dir)
    tier = AdapterTier(config, torch.device("cpu"), torch.float32, num_slots=1, backend=backend)
    assert tier.add("a", load_adapter(root / "ad", config)) == 0
    assert tier.add("b", load_adapter(root / "ad2", config)) == -1  # registered, loaded on demand
    real = tier._load

    def half_then_fail(name, slot):  # the device runs out after the first module's copy (the real registry's add)
        if tier._registry is not None:
            host = tier._host[name]
            first = next(iter(host.weights.items()))

            def items():
                yield first
                raise torch.OutOfMemoryError("injected")

            tier._registry.add(name, SimpleNamespace(weights=SimpleNamespace(items=items), scale=host.scale), slot)
        raise torch.OutOfMemoryError("injected")

    tier._load = half_then_fail
    with pytest.raises(torch.OutOfMemoryError):
        tier.acquire(["b"])
    assert tier.slots == {} and "b" in tier.cache  # "a" was evicted, "b" is not resident but still registered
    if tier._registry is not None:
        assert all(0 not in per_slot for per_slot in tier._registry._by_module.values())
    tier._load = real
    assert tier.acquire(["b"]) == {"b": 0}
    assert tier.acquire(["a"]) == {"a": 0}


def test_adapter_call_timeout_is_deadline_exceeded(model, monkeypatch):
    """LoadAdapter / UnloadAdapter whose engine call waits past ADAPTER_CALL_TIMEOUT_S (or the client's deadline)
    answer DEADLINE_EXCEEDED (was UNKNOWN: concurrent.futures.TimeoutError fell through); a call the loop had not
    started is dropped."""
    import time

    from inlaid_worker.server import servicer

    model_dir, root = model
    monkeypatch.setattr(servicer, "ADAPTER_CALL_TIMEOUT_S", 0.3)
    with serving(model_dir, kv_cache_bytes=4 << 20) as (stub, running):
        with loop_held(running):
            with pytest.raises(grpc.RpcError) as err:
                stub.LoadAdapter(worker_pb2.LoadAdapterRequest(name="late", path=str(root / "ad")))
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err.value.details()
            assert "took longer than 0.3 s" in err.value.details() and "dropped" in err.value.details()
            with pytest.raises(grpc.RpcError) as err:
                stub.UnloadAdapter(worker_pb2.UnloadAdapterRequest(name="late"))
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err.value.details()
        running.loop.call(lambda e: None).result(timeout=10)  # the loop drained the dropped calls
        assert "late" not in [m.id for m in stub.GetInfo(worker_pb2.InfoRequest()).models]  # never loaded
        # the client's deadline comes first (the gateway's is 60 s, the worker's own 120 s): the worker stops waiting
        # then too, so a load the client gave up on is dropped instead of happening after its DEADLINE_EXCEEDED
        monkeypatch.setattr(servicer, "ADAPTER_CALL_TIMEOUT_S", 120.0)
        with loop_held(running):
            with pytest.raises(grpc.RpcError) as err:
                stub.LoadAdapter(worker_pb2.LoadAdapterRequest(name="gave-up", path=str(root / "ad")), timeout=0.3)
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            time.sleep(0.3)  # the servicer's own wait ends at the client's deadline and cancels the queued call
        running.loop.call(lambda e: None).result(timeout=10)
        assert "gave-up" not in [m.id for m in stub.GetInfo(worker_pb2.InfoRequest()).models]
        assert stub.LoadAdapter(worker_pb2.LoadAdapterRequest(name="late", path=str(root / "ad"))).id == "late"


def test_adapter_call_whose_deadline_passed_before_the_engine_loop_is_not_queued(model, monkeypatch):
    """A LoadAdapter whose client deadline passes while the adapter is read from disk answers DEADLINE_EXCEEDED
    without queuing add_adapter on the engine loop (before, it was queued with a wait of 0 s and only dropped if the
    loop had not started it yet: an adapter the client gave up on could still load)."""
    import threading
    import time

    from inlaid_worker.server import app

    model_dir, root = model
    real_read = app.read_adapter
    read_done = threading.Event()

    def slow_read(*args, **kwargs):  # the disk read outlives the client's deadline
        time.sleep(0.5)
        try:
            return real_read(*args, **kwargs)
        finally:
            read_done.set()

    monkeypatch.setattr(app, "read_adapter", slow_read)
    with serving(model_dir, kv_cache_bytes=4 << 20) as (stub, running):
        queued = []
        real_call = running.loop.call
        monkeypatch.setattr(running.loop, "call", lambda fn: queued.append(fn) or real_call(fn))
        with pytest.raises(grpc.RpcError) as err:
            stub.LoadAdapter(worker_pb2.LoadAdapterRequest(name="gone", path=str(root / "ad")), timeout=0.2)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert read_done.wait(5)
        time.sleep(0.2)  # the servicer saw the passed deadline after the read
        assert queued == []
        assert "gone" not in [m.id for m in stub.GetInfo(worker_pb2.InfoRequest()).models]


def test_weights_digest_timeout_is_deadline_exceeded(model, monkeypatch):
    """WeightsDigest waits for the engine loop at most the lesser of ADAPTER_CALL_TIMEOUT_S and the client's deadline
    and then answers DEADLINE_EXCEEDED (was `.result(timeout=120)`: UNKNOWN after 120 s, whatever the deadline)."""
    import time

    from inlaid_worker.server import servicer

    model_dir, _ = model
    monkeypatch.setattr(servicer, "ADAPTER_CALL_TIMEOUT_S", 0.3)
    with serving(model_dir, kv_cache_bytes=4 << 20) as (stub, running):
        with loop_held(running):
            with pytest.raises(grpc.RpcError) as err:
                stub.WeightsDigest(worker_pb2.DigestRequest())
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err.value.details()
            assert "weights digest took longer than 0.3 s" in err.value.details(), err.value.details()
            assert "dropped" in err.value.details()
            monkeypatch.setattr(servicer, "ADAPTER_CALL_TIMEOUT_S", 120.0)  # the client's deadline comes first
            futures = []
            real_call = running.loop.call
            monkeypatch.setattr(running.loop, "call", lambda fn: futures.append(real_call(fn)) or futures[-1])
            with pytest.raises(grpc.RpcError) as err:
                stub.WeightsDigest(worker_pb2.DigestRequest(), timeout=0.3)
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            time.sleep(0.3)  # the servicer's own wait ends at the client's deadline and drops the queued call
            assert len(futures) == 1 and futures[0].cancelled()
        assert len(stub.WeightsDigest(worker_pb2.DigestRequest()).digest) > 0  # the loop free again: answered


def test_resumed_admit_whose_grammar_replay_is_too_slow_is_refused(model, monkeypatch):
    """A resumed Admit replays its earlier output through its grammar (on the replay pool); one that runs past
    REPLAY_MAX_S (the regex `(a*)*b`, 300 tokens: ~6 s unbounded) answers a RequestError naming response_format, and
    the request streaming next to it goes on."""
    from inlaid_worker.engine import structured

    model_dir, _ = model
    monkeypatch.setattr(structured, "REPLAY_MAX_S", 0.05)
    with serving(model_dir, kv_cache_bytes=4 << 20) as (stub, running):
        a = running.loop.engine.tokenizer.hf.convert_tokens_to_ids("a")
        sampling = common_pb2.SamplingParams(max_tokens=4, regex="(a*)*b")
        bad = _admit("bad", sampling, prompt=[1, 2, 3] + [a] * 300)
        bad.admit.resumed_output_tokens = 300
        seen = _neighbour_survives(stub, bad)
        assert seen["good_finish"] == FINISH.FINISH_REASON_LENGTH
        assert "response_format: replaying the resumed output" in seen["bad_error"]
