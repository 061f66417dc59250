"""A refused request's kind on the wire, through a real worker gRPC server (a tiny random Llama): RequestError.kind on
the Session, and on Prepare / Tokenize / Detokenize the status code the kind gives plus its name in the trailing
metadata `inlaid-error-kind`. The gateway reads these, never the message (apps/gateway/src/common/inlaid-error.ts)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from factories import make_tiny_llama
from grpc_worker import serving
from inlaid_worker.engine.compile_pool import ClosedError
from inlaid_worker.engine.error_kind import ErrorKind
from inlaid_worker.gen.inlaid.v1 import common_pb2, worker_pb2
from inlaid_worker.server.convert import event_to_proto
from inlaid_worker.server.engine_loop import AdmitError
from inlaid_worker.server.refusal import ERROR_KIND_KEY, STATUS, proto_name
from inlaid_worker.server.servicer import _refusal

KIND = worker_pb2.RequestErrorKind
VOCAB = 320


def test_each_error_kind_is_one_proto_value_and_one_status() -> None:
    names = {proto_name(k) for k in ErrorKind}
    assert names == set(KIND.keys()) - {"REQUEST_ERROR_KIND_UNSPECIFIED"}
    assert set(STATUS) == set(ErrorKind)
    ev = event_to_proto(AdmitError("r", "the prompt is empty", ErrorKind.BAD_INPUT), "w")
    assert ev.error.kind == KIND.REQUEST_ERROR_KIND_BAD_INPUT


def test_an_admit_error_nobody_foresaw_is_internal_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    try:
        raise KeyError("slot")
    except KeyError as exc:
        bug = _refusal("r", exc)
    assert (bug.kind, bug.message) == (ErrorKind.INTERNAL, "request refused: KeyError: 'slot'")
    assert "admit r failed" in caplog.text
    caplog.clear()
    closed = _refusal("r", ClosedError("the grammar cache is closed (the worker is shutting down)"))
    assert closed.kind is ErrorKind.SHUTTING_DOWN and closed.message.startswith("the grammar cache is closed")
    assert caplog.text == ""  # a refusal that names its kind is not the worker's bug


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    model = make_tiny_llama(tmp_path_factory.mktemp("grpc-error-kinds") / "model", vocab=VOCAB)
    with serving(model, kv_cache_bytes=1 << 20) as (stub, running):
        yield stub, running


def admit_error(stub: Any, admit: worker_pb2.Admit) -> worker_pb2.RequestError:
    out: queue.Queue[Any] = queue.Queue()
    call = stub.Session(iter(out.get, None))
    out.put(worker_pb2.ControlMessage(admit=admit))
    try:
        for ev in call:
            if ev.WhichOneof("kind") == "error":
                return ev.error
            if ev.WhichOneof("kind") == "delta" and ev.delta.finish_reason:
                raise AssertionError(f"admitted: {ev.delta}")
    finally:
        out.put(None)
    raise AssertionError("the stream ended early")


def refusal(call: Any, request: Any) -> tuple[grpc.StatusCode, str]:
    """(status, the trailing metadata's kind) of a unary call that must fail."""
    with pytest.raises(grpc.RpcError) as info:
        call(request)
    err: Any = info.value
    kinds = [v for k, v in err.trailing_metadata() if k == ERROR_KIND_KEY]
    assert len(kinds) == 1, err.trailing_metadata()
    return err.code(), kinds[0]


def test_session_refusals_carry_their_kind(worker: tuple[Any, Any]) -> None:
    stub, _ = worker
    bad_token = admit_error(stub, worker_pb2.Admit(request_id="v", prompt_token_ids=[1, VOCAB]))
    assert bad_token.kind == KIND.REQUEST_ERROR_KIND_BAD_INPUT
    assert bad_token.message.startswith("prompt token id 320 is outside the vocabulary")
    hot = common_pb2.SamplingParams(max_tokens=2, temperature=200.0)
    assert admit_error(stub, worker_pb2.Admit(request_id="t", prompt_token_ids=[1, 2], sampling=hot)).kind == (
        KIND.REQUEST_ERROR_KIND_BAD_INPUT
    )
    unknown = admit_error(stub, worker_pb2.Admit(request_id="m", model="gone", prompt_token_ids=[1, 2]))
    assert unknown.kind == KIND.REQUEST_ERROR_KIND_UNKNOWN_MODEL
    no_id = admit_error(stub, worker_pb2.Admit(request_id="", prompt_token_ids=[1, 2]))
    assert no_id.kind == KIND.REQUEST_ERROR_KIND_INTERNAL  # the gateway always sets one: not the client's fault


def test_unary_refusals_carry_their_kind_in_trailing_metadata(worker: tuple[Any, Any]) -> None:
    stub, _ = worker
    hot = common_pb2.SamplingParams(max_tokens=2, temperature=200.0)
    assert refusal(stub.Prepare, worker_pb2.PrepareRequest(prompt="hi", sampling=hot)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "REQUEST_ERROR_KIND_BAD_INPUT",
    )
    assert refusal(stub.Prepare, worker_pb2.PrepareRequest(model="gone", prompt="hi")) == (
        grpc.StatusCode.NOT_FOUND,
        "REQUEST_ERROR_KIND_UNKNOWN_MODEL",
    )
    assert refusal(stub.Tokenize, worker_pb2.TokenizeRequest()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "REQUEST_ERROR_KIND_BAD_INPUT",
    )
    assert refusal(stub.Detokenize, common_pb2.DetokenizeRequest(token_ids=[VOCAB])) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "REQUEST_ERROR_KIND_BAD_INPUT",
    )


@pytest.fixture()
def own_worker(tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """A worker of the test's own, for tests that stop it or close a part of it (the module's worker stays whole)."""
    with serving(make_tiny_llama(tmp_path / "model", vocab=VOCAB), kv_cache_bytes=1 << 20) as (stub, running):
        yield stub, running


def test_after_the_grammar_cache_closed_a_structured_request_is_refused_as_a_shutdown(
    own_worker: tuple[Any, Any],
) -> None:
    """It closes the worker's grammar cache (as its shutdown does). Prepare says UNAVAILABLE (the gateway tries another
    worker; before, the uncaught ClosedError was UNKNOWN, a 500) and the Admit SHUTTING_DOWN."""
    pytest.importorskip("xgrammar")
    stub, running = own_worker
    running.loop.engine.grammars.close()
    regex = common_pb2.SamplingParams(max_tokens=2, regex="a+")
    assert refusal(stub.Prepare, worker_pb2.PrepareRequest(prompt="hi", sampling=regex)) == (
        grpc.StatusCode.UNAVAILABLE,
        "REQUEST_ERROR_KIND_SHUTTING_DOWN",
    )
    admit = worker_pb2.Admit(request_id="s", prompt_token_ids=[1, 2], sampling=regex)
    assert admit_error(stub, admit).kind == KIND.REQUEST_ERROR_KIND_SHUTTING_DOWN


def test_an_admit_during_the_shutdown_grace_is_refused_as_a_shutdown(own_worker: tuple[Any, Any]) -> None:
    """RunningWorker.stop refuses new Admits before the server's grace period, during which an open Session still
    carries them: one arriving then is refused SHUTTING_DOWN (the gateway queues it again on another worker). Before,
    it was started here and cut off when the grace ended (SHUTTING_DOWN was unreachable: the grammar cache, whose
    ClosedError was its only source, closed after the server had stopped). The Session is told first: a WorkerState
    with `draining` set arrives as soon as the worker refuses, with no Admit needed to learn it (before, the gateway
    learned it only from a refused run, and kept sending Prepares and Admits here until then)."""
    stub, running = own_worker
    out: queue.Queue[Any] = queue.Queue()
    events = iter(stub.Session(iter(out.get, None)))
    first = next(events)  # the Session is open before the stop begins
    assert first.WhichOneof("kind") == "state" and not first.state.draining
    stopping = threading.Thread(target=running.stop, kwargs={"grace": 5.0})
    stopping.start()
    try:
        # an idle worker publishes no state otherwise: without the change this waits out the grace, then fails
        told = next(ev for ev in events if ev.WhichOneof("kind") != "state" or ev.state.draining)
        assert told.WhichOneof("kind") == "state" and told.state.draining, told
        assert running.loop.refusing and running.loop.latest_state.draining
        late = worker_pb2.Admit(request_id="late", prompt_token_ids=[1, 2], sampling=common_pb2.SamplingParams(max_tokens=2))
        out.put(worker_pb2.ControlMessage(admit=late))
        for ev in events:
            if ev.WhichOneof("kind") == "error":
                assert (ev.error.request_id, ev.error.kind) == ("late", KIND.REQUEST_ERROR_KIND_SHUTTING_DOWN)
                break
            assert not (ev.WhichOneof("kind") == "delta" and ev.delta.finish_reason), f"admitted: {ev.delta}"
        else:
            raise AssertionError("the stream ended before the refusal")
    finally:
        out.put(None)  # the Session ends: the stop need not wait out its grace
        stopping.join(10.0)
    assert not stopping.is_alive()


def test_get_info_says_draining_as_soon_as_the_worker_refuses(own_worker: tuple[Any, Any]) -> None:
    """GetInfo's state says `draining` from refuse_new on, without the engine loop (the gateway starts a Session, and
    refreshInfo reads it, from this state). Before, it was the loop's latest_state, which said false until the loop's
    next publish. The loop is stopped first: it cannot publish here; refuse_new publishes it itself
    (test_draining_published.py)."""
    stub, running = own_worker
    assert not stub.GetInfo(worker_pb2.InfoRequest()).state.draining
    running.loop.stop()
    running.loop.refuse_new()
    assert running.loop.latest_state.draining  # published by refuse_new, not the (stopped) loop
    assert stub.GetInfo(worker_pb2.InfoRequest()).state.draining
