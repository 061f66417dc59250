"""The worker's gRPC API through a real channel on a free port, serving a tiny random Llama with adapters."""

from __future__ import annotations

import math
import queue
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from factories import make_random_adapter, make_tiny_llama
from grpc_worker import serving
from inlaid_worker.gen.inlaid.v1 import common_pb2, worker_pb2
from inlaid_worker.server.app import RunningWorker

FINISH = common_pb2.FinishReason


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, RunningWorker, Path]]:
    root = tmp_path_factory.mktemp("grpc")
    model = make_tiny_llama(root / "model", max_positions=4096)
    adapters = root / "adapters"
    make_random_adapter(adapters / "task-a", model, rank=4, alpha=8, targets=["q_proj", "v_proj"], seed=1)
    make_random_adapter(adapters / "task-b", model, rank=8, alpha=16, targets=["up_proj", "o_proj"], seed=2)
    make_random_adapter(root / "extra", model, rank=2, alpha=2, targets=["k_proj"], seed=3)
    other = make_tiny_llama(root / "other" / "model", hidden=32, seed=5)  # same base name, other shapes
    make_random_adapter(root / "misfit", other, rank=2, alpha=2, targets=["q_proj"], seed=4)
    # finite, small weights, but alpha / r = 5e8: its delta scaling * B @ A cannot be held in float16 (lora.magnitude);
    # in the adapters directory, so start-up refuses it as LoadAdapter does
    make_random_adapter(adapters / "task-huge", model, rank=2, alpha=1e9, targets=["v_proj"], seed=6)
    with serving(model, adapters_dir=str(adapters), kv_cache_bytes=4 << 20) as (stub, running):
        yield stub, running, root


class Stream:
    """A Session call whose requests the test sends one by one."""

    def __init__(self, stub: Any) -> None:
        self._out: queue.Queue[Any] = queue.Queue()
        self.call = stub.Session(iter(self._out.get, None))

    def admit(self, rid: str, model: str, prompt: list[int], max_tokens: int, **sampling: Any) -> None:
        params = common_pb2.SamplingParams(max_tokens=max_tokens, ignore_eos=True, **sampling)
        admit = worker_pb2.Admit(request_id=rid, model=model, prompt_token_ids=prompt, sampling=params)
        self._out.put(worker_pb2.ControlMessage(admit=admit))

    def abort(self, rid: str) -> None:
        self._out.put(worker_pb2.ControlMessage(abort=worker_pb2.Abort(request_id=rid)))

    def half_close(self) -> None:
        self._out.put(None)

    def next_event(self, kind: str) -> Any:
        for ev in self.call:
            if ev.WhichOneof("kind") == kind:
                return getattr(ev, kind)
        raise AssertionError(f"stream ended before a {kind}")

    def until_finish(self) -> list[Any]:
        """The deltas up to and with the first that carries a finish reason."""
        deltas = [self.next_event("delta")]
        while deltas[-1].finish_reason == FINISH.FINISH_REASON_UNSPECIFIED:
            deltas.append(self.next_event("delta"))
        return deltas


def prepare(stub: Any, model: str, prompt: str = "", **kw: Any) -> Any:
    return stub.Prepare(worker_pb2.PrepareRequest(model=model, prompt=prompt, **kw))


def wait_idle(stub: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = stub.GetInfo(worker_pb2.InfoRequest()).state
        if state.running == 0 and state.waiting == 0 and state.free_kv_blocks == state.total_kv_blocks:
            return state
        time.sleep(0.05)
    raise AssertionError(f"worker not idle: {state}")


@contextmanager
def stopped_early(stub: Any, running: RunningWorker) -> Iterator[None]:
    """The block's long requests (4000 tokens) end early: after it the worker is idle (every block free again) within
    2000 engine steps of its start, so they were not run to the end."""
    steps_before = running.loop.engine.num_steps
    yield
    wait_idle(stub)
    assert running.loop.engine.num_steps - steps_before < 2000


def test_prepare_validates_with_the_right_status_codes(worker: Any) -> None:
    stub, running, _ = worker
    ok = prepare(stub, "task-a", "Hello, world!", sampling=common_pb2.SamplingParams(max_tokens=10_000))
    assert len(ok.prompt_token_ids) > 0 and ok.max_tokens == 4096 - len(ok.prompt_token_ids)
    chat = stub.Prepare(
        worker_pb2.PrepareRequest(model="", messages=[common_pb2.ChatMessage(role="user", content="Hi")])
    )
    assert chat.prompt_token_ids[0] == 1  # <|im_start|> from the chat template
    cases = [
        (dict(model="nope", prompt="x"), grpc.StatusCode.NOT_FOUND, "nope"),
        (
            dict(model="task-a", prompt="word " * 5000),
            grpc.StatusCode.INVALID_ARGUMENT,
            "maximum context length is 4096",
        ),
        (
            dict(model="task-a", prompt="x", sampling=common_pb2.SamplingParams(top_p=1.5)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "top_p",
        ),
        (
            dict(model="task-a", prompt="x", sampling=common_pb2.SamplingParams(temperature=-1)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "temperature",
        ),
        (dict(model="task-a"), grpc.StatusCode.INVALID_ARGUMENT, "prompt or messages"),
    ]
    for kwargs, code, text in cases:
        with pytest.raises(grpc.RpcError) as err:
            stub.Prepare(worker_pb2.PrepareRequest(**kwargs))
        assert err.value.code() == code and text in err.value.details()


def test_session_streams_two_adapters_at_once(worker: Any) -> None:
    stub, running, _ = worker
    prompt = list(prepare(stub, "task-a", "The capital of France is").prompt_token_ids)
    s = Stream(stub)
    s.admit("a", "task-a", prompt, 12, temperature=0)
    s.admit("b", "task-b", prompt, 12, temperature=0)
    order, got = [], {"a": [], "b": []}
    finished: dict[str, Any] = {}
    while len(finished) < 2:
        d = s.next_event("delta")
        order.append(d.request_id)
        got[d.request_id].extend(d.token_ids)
        if d.finish_reason != FINISH.FINISH_REASON_UNSPECIFIED:
            finished[d.request_id] = d
    assert len(got["a"]) == len(got["b"]) == 12 and got["a"] != got["b"]
    assert finished["a"].finish_reason == FINISH.FINISH_REASON_LENGTH and finished["a"].completion_tokens == 12
    assert finished["a"].prompt_tokens == len(prompt)
    first = {r: order.index(r) for r in "ab"}
    last = {r: len(order) - 1 - order[::-1].index(r) for r in "ab"}
    assert first["b"] < last["a"] and first["a"] < last["b"]  # both in flight at once
    s.half_close()  # nothing in flight: the stream ends
    assert all(ev.WhichOneof("kind") == "state" for ev in s.call)
    wait_idle(stub)


def test_admit_errors_come_back_on_the_stream(worker: Any) -> None:
    stub, _, _ = worker
    s = Stream(stub)
    s.admit("x", "nope", [5, 6], 4)
    err = s.next_event("error")
    assert err.request_id == "x" and "nope" in err.message
    s.admit("y", "task-a", [5] * 5000, 4)
    assert "maximum context length" in s.next_event("error").message
    s.half_close()


def test_abort_frees_blocks(worker: Any) -> None:
    stub, running, _ = worker
    with stopped_early(stub, running):
        s = Stream(stub)
        s.admit("long", "task-a", [5, 6, 7], 4000, temperature=0)
        assert s.next_event("delta").request_id == "long"
        s.abort("long")
        d = s.until_finish()[-1]
        assert d.finish_reason == FINISH.FINISH_REASON_ABORT and d.completion_tokens < 4000
    s.half_close()


def test_closing_the_stream_aborts_its_requests(worker: Any) -> None:
    stub, running, _ = worker
    with stopped_early(stub, running):
        s = Stream(stub)
        s.admit("c1", "task-b", [5, 6, 7], 4000, temperature=0)
        s.admit("c2", "", [8, 9], 4000, temperature=0)
        s.next_event("delta")
        busy = stub.GetInfo(worker_pb2.InfoRequest()).state
        assert busy.running + busy.waiting >= 1 and busy.free_kv_blocks < busy.total_kv_blocks
        s.call.cancel()


def test_load_and_unload_adapters(worker: Any) -> None:
    stub, _, root = worker
    card = stub.LoadAdapter(worker_pb2.LoadAdapterRequest(name="extra", path=str(root / "extra")))
    assert card.id == "extra" and card.rank == 2 and list(card.target_modules) == ["k_proj"]
    info = stub.GetInfo(worker_pb2.InfoRequest())
    assert [m.id for m in info.models][1:] == ["extra", "task-a", "task-b"] and info.models[0].parent == ""
    assert "extra" in info.state.resident_adapters
    # the path LoadAdapter read it from, for the gateway's catch-up to compare; --adapters-dir ones have none
    assert dict(info.adapter_paths) == {"extra": str(root / "extra")}
    refusals = [
        ("extra", root / "extra", grpc.StatusCode.ALREADY_EXISTS, "already loaded"),
        ("bad", root / "missing", grpc.StatusCode.INVALID_ARGUMENT, "does not exist"),
        ("misfit", root / "misfit", grpc.StatusCode.INVALID_ARGUMENT, "has shape"),
        ("huge", root / "adapters" / "task-huge", grpc.StatusCode.INVALID_ARGUMENT, "v_proj.lora_A.weight' and "),
        ("huge", root / "adapters" / "task-huge", grpc.StatusCode.INVALID_ARGUMENT, "(float16's largest value)"),
    ]
    for name, path, code, text in refusals:
        with pytest.raises(grpc.RpcError) as err:
            stub.LoadAdapter(worker_pb2.LoadAdapterRequest(name=name, path=str(path)))
        assert err.value.code() == code and text in err.value.details(), err.value.details()
    stub.UnloadAdapter(worker_pb2.UnloadAdapterRequest(name="extra"))
    assert dict(stub.GetInfo(worker_pb2.InfoRequest()).adapter_paths) == {}
    with pytest.raises(grpc.RpcError) as err:
        stub.UnloadAdapter(worker_pb2.UnloadAdapterRequest(name="extra"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        prepare(stub, "extra", "hi")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def run_one(stub: Any, rid: str, prompt: list[int], max_tokens: int, **sampling: Any) -> list[Any]:
    """Admits one request on its own stream; its deltas until the finish."""
    s = Stream(stub)
    s.admit(rid, "task-a", prompt, max_tokens, **sampling)
    deltas = s.until_finish()
    s.half_close()
    return deltas


def test_logprobs_come_back_for_every_token(worker: Any) -> None:
    stub, running, _ = worker
    prompt = list(prepare(stub, "task-a", "Unicode: café, naïve").prompt_token_ids)
    deltas = run_one(stub, "lp", prompt, 8, temperature=0, logprobs=3)
    hf = running.loop.engine.tokenizer.hf
    ids = [t for d in deltas for t in d.token_ids]
    assert len(ids) == 8
    for d in deltas:
        assert d.HasField("logprobs") and len(d.logprobs.tokens) == len(d.token_ids)
        for token_id, lp in zip(d.token_ids, d.logprobs.tokens, strict=True):
            assert lp.sampled.token_id == token_id and lp.sampled.logprob <= 0.0
            assert lp.sampled.token == hf.decode([token_id], skip_special_tokens=False)
            assert len(lp.sampled.token_bytes) > 0
            assert [t.logprob for t in lp.top] == sorted((t.logprob for t in lp.top), reverse=True)
            assert len(lp.top) == 3 and len({t.token_id for t in lp.top}) == 3
            # greedy: the sampled token is the most likely one, with the very same logprob
            assert lp.top[0].token_id == token_id and lp.top[0].logprob == lp.sampled.logprob
            assert sum(math.exp(t.logprob) for t in lp.top) <= 1.0 + 1e-5
    plain = run_one(stub, "nolp", prompt, 8, temperature=0)
    assert [t for d in plain for t in d.token_ids] == ids  # logprobs do not change the tokens
    assert not any(d.HasField("logprobs") for d in plain)
    wait_idle(stub)


def test_penalties_change_greedy_output_and_are_validated(worker: Any) -> None:
    stub, _, _ = worker
    prompt = list(prepare(stub, "task-a", "Numbers: 0 1 2 3").prompt_token_ids)

    def greedy(rid: str, **penalties: Any) -> list[int]:
        return [t for d in run_one(stub, rid, prompt, 16, temperature=0, **penalties) for t in d.token_ids]

    plain = greedy("p0")
    # frequency / presence look at the generated tokens only; repetition at the prompt too
    for rid, penalties in [
        ("pf", {"frequency_penalty": 2.0}),
        ("pp", {"presence_penalty": 2.0}),
        ("pr", {"repetition_penalty": 1.5}),
    ]:
        pen = greedy(rid, **penalties)
        assert len(pen) == 16 and pen != plain, penalties
        assert len(set(pen)) >= len(set(plain)), penalties
    for sampling, name in [
        (common_pb2.SamplingParams(presence_penalty=2.5), "presence_penalty"),
        (common_pb2.SamplingParams(frequency_penalty=-3), "frequency_penalty"),
        (common_pb2.SamplingParams(repetition_penalty=0), "repetition_penalty"),
        (common_pb2.SamplingParams(logprobs=21), "logprobs"),
    ]:
        with pytest.raises(grpc.RpcError) as err:
            prepare(stub, "task-a", "x", sampling=sampling)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and name in err.value.details()
    s = Stream(stub)
    s.admit("bad", "task-a", [5, 6], 4, presence_penalty=9)
    assert "presence_penalty" in s.next_event("error").message
    bad = worker_pb2.Admit(
        request_id="res",
        model="task-a",
        prompt_token_ids=[5, 6],
        resumed_output_tokens=2,
        sampling=common_pb2.SamplingParams(max_tokens=2),
    )
    s._out.put(worker_pb2.ControlMessage(admit=bad))
    assert "resumed_output_tokens" in s.next_event("error").message
    s.half_close()
    wait_idle(stub)


def test_resumed_output_tokens_count_as_output_for_frequency_penalty(worker: Any) -> None:
    stub, _, _ = worker
    prompt = list(prepare(stub, "task-a", "Numbers: 0 1 2 3").prompt_token_ids)
    prompt += [t for d in run_one(stub, "gen", prompt, 6, temperature=0) for t in d.token_ids]

    def resumed(rid: str, k: int) -> list[int]:
        s = Stream(stub)
        params = common_pb2.SamplingParams(max_tokens=8, ignore_eos=True, temperature=0, frequency_penalty=2.0)
        admit = worker_pb2.Admit(
            request_id=rid, model="task-a", prompt_token_ids=prompt, sampling=params, resumed_output_tokens=k
        )
        s._out.put(worker_pb2.ControlMessage(admit=admit))
        out: list[int] = []
        while True:
            d = s.next_event("delta")
            out.extend(d.token_ids)
            if d.finish_reason != FINISH.FINISH_REASON_UNSPECIFIED:
                break
        s.half_close()
        return out

    # the same prompt: its last 6 tokens are penalized only when they count as this request's output
    assert resumed("r0", 0) != resumed("r6", 6)
    wait_idle(stub)


def test_a_repeated_prompt_reports_its_cached_tokens(worker: Any) -> None:
    stub, running, _ = worker
    block = running.loop.engine.block_manager.block_size
    prompt = list(prepare(stub, "task-a", "cached tokens: " + "the same long prompt, " * 20).prompt_token_ids)
    assert len(prompt) > 3 * block
    first = run_one(stub, "cache-1", prompt, 3, temperature=0)
    assert all(d.cached_tokens == 0 for d in first)  # nothing cached yet
    second = run_one(stub, "cache-2", prompt, 3, temperature=0)
    cached = {d.cached_tokens for d in second}
    assert len(cached) == 1  # every delta carries the admission's count
    (n,) = cached
    # every full block but the one holding the last prompt token comes from the cache
    assert n == (len(prompt) - 1) // block * block and 0 < n < len(prompt)
    assert [t for d in second for t in d.token_ids] == [t for d in first for t in d.token_ids]
    wait_idle(stub)
