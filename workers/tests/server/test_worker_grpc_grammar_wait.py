"""A Session Admit whose grammar compiles slowly (a compile held in the test) delays only its own request: the
session's other Admits run meanwhile; the slow one runs when its grammar is ready, fails with the compile's error
(naming response_format) on timeout, and is dropped without a trace when aborted or when its client leaves. While
it waits it counts in WorkerState.waiting (what the gateway's scheduler reads) and in the metrics' waiting gauge."""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from factories import make_tiny_llama
from inlaid_worker.config import WorkerConfig
from inlaid_worker.engine.engine import LLMEngine
from inlaid_worker.engine.structured import GrammarState, StructuredOutput
from inlaid_worker.gen.inlaid.v1 import common_pb2, worker_pb2, worker_pb2_grpc
from inlaid_worker.server.app import RunningWorker, build_engine, serve
from waiting import until

pytest.importorskip("xgrammar")

FINISH = common_pb2.FinishReason
SLOW = "slow[0-9]{2}"  # the held compile's regex


@dataclass
class Worker:
    stub: Any
    engine: LLMEngine
    running: RunningWorker


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    model = make_tiny_llama(tmp_path_factory.mktemp("grammar-wait") / "model", max_positions=1024)
    cfg = WorkerConfig(model=str(model), port=0, kv_cache_bytes=4 << 20, grammar_cache_bytes=32 << 20)
    engine = build_engine(cfg, model)
    assert engine.grammars.max_bytes == 32 << 20  # the setting reaches the cache
    running = serve(cfg, engine, model)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    yield Worker(worker_pb2_grpc.WorkerStub(channel), engine, running)
    channel.close()
    running.stop(grace=1)


@pytest.fixture
def gate(worker: Worker, monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Compiles of a regex starting with "slow" wait for the gate (opened at teardown), as a slow compile would."""
    cache = worker.engine.grammars
    real = cache._compile_now
    event = threading.Event()

    def compile_now(so: StructuredOutput) -> Any:
        if so.kind == "regex" and so.spec.startswith("slow"):
            event.wait()
        return real(so)

    monkeypatch.setattr(cache, "_compile_now", compile_now)
    yield event
    event.set()


class Live:
    """One Session: messages are sent as the test goes; events are read on a thread."""

    def __init__(self, stub: Any) -> None:
        self.sent: queue.Queue[Any] = queue.Queue()
        self.events: queue.Queue[Any] = queue.Queue()
        self.text: dict[str, str] = {}  # request id -> its output so far
        self.waiting: list[int] = []  # WorkerState.waiting of every state event, in order
        self.call = stub.Session(iter(self.sent.get, None))
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for ev in self.call:
                if ev.WhichOneof("kind") == "state":
                    self.waiting.append(ev.state.waiting)
                else:
                    self.events.put(ev)
        except grpc.RpcError:
            pass
        self.events.put(None)

    def admit(self, rid: str, prompt: list[int], **sampling: Any) -> None:
        admit = worker_pb2.Admit(
            request_id=rid, prompt_token_ids=prompt, sampling=common_pb2.SamplingParams(**sampling)
        )
        self.sent.put(worker_pb2.ControlMessage(admit=admit))

    def abort(self, rid: str) -> None:
        self.sent.put(worker_pb2.ControlMessage(abort=worker_pb2.Abort(request_id=rid)))

    def finished(self, timeout_s: float) -> tuple[str, Any] | None:
        """The next request to finish (its final delta or its error); None when the stream ends or time runs out."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                ev = self.events.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                return None
            if ev is None:
                return None
            if ev.WhichOneof("kind") == "error":
                return ev.error.request_id, ev.error
            self.text[ev.delta.request_id] = self.text.get(ev.delta.request_id, "") + ev.delta.text
            if ev.delta.finish_reason != FINISH.FINISH_REASON_UNSPECIFIED:
                return ev.delta.request_id, ev.delta


def prompt(worker: Worker) -> list[int]:
    return list(worker.stub.Prepare(worker_pb2.PrepareRequest(model="", prompt="Hello")).prompt_token_ids)


def test_other_admits_go_on_while_a_grammar_compiles(worker: Worker, gate: threading.Event) -> None:
    ids = prompt(worker)
    choice = common_pb2.StringChoices(values=["left", "right"])
    worker.stub.Prepare(
        worker_pb2.PrepareRequest(model="", prompt="Hello", sampling=common_pb2.SamplingParams(choice=choice))
    )
    live = Live(worker.stub)
    live.admit("slow", ids, max_tokens=20, regex=SLOW)
    live.admit("plain", ids, max_tokens=5, ignore_eos=True)
    live.admit("cached", ids, max_tokens=20, temperature=0, choice=choice)
    live.admit("fresh", ids, max_tokens=20, regex="[a-c]{3}")  # another compile, not held
    done = dict(d for d in (live.finished(8.0) for _ in range(3)) if d is not None)  # the hold would time out at 10 s
    assert set(done) == {"plain", "cached", "fresh"}, done
    assert done["plain"].finish_reason == FINISH.FINISH_REASON_LENGTH
    assert done["cached"].finish_reason == done["fresh"].finish_reason == FINISH.FINISH_REASON_STOP
    assert live.text["cached"] in ("left", "right") and re.fullmatch("[a-c]{3}", live.text["fresh"])
    assert "slow" not in live.text  # still compiling: nothing of it yet
    gate.set()
    rid, last = live.finished(8.0) or ("", None)
    assert rid == "slow" and last.finish_reason == FINISH.FINISH_REASON_STOP
    assert re.fullmatch(SLOW, live.text["slow"])
    live.sent.put(None)  # half-close: the stream ends
    assert live.finished(5.0) is None


def test_a_compile_past_the_timeout_fails_only_its_request(
    worker: Worker, gate: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker.engine.grammars, "timeout_s", 0.5)
    ids = prompt(worker)
    live = Live(worker.stub)
    live.admit("slow", ids, max_tokens=20, regex=SLOW + "x")
    live.admit("plain", ids, max_tokens=5, ignore_eos=True)
    done = dict(d for d in (live.finished(5.0) for _ in range(2)) if d is not None)
    assert set(done) == {"plain", "slow"} and done["plain"].finish_reason == FINISH.FINISH_REASON_LENGTH
    assert isinstance(done["slow"], worker_pb2.RequestError)
    assert done["slow"].message == "response_format: the regex took longer than 0.5 s to compile"
    live.call.cancel()


def test_an_abort_or_a_client_leaving_frees_a_request_waiting_for_its_grammar(
    worker: Worker, gate: threading.Event
) -> None:
    cache, loop = worker.engine.grammars, worker.running.loop
    ids = prompt(worker)
    aborted, left = StructuredOutput("regex", SLOW + "a"), StructuredOutput("regex", SLOW + "b")
    live = Live(worker.stub)
    live.admit("aborted", ids, max_tokens=20, regex=aborted.spec, logprobs=2)
    assert until(lambda: cache.waiting(aborted) == 1 and loop.in_flight == 1)
    live.abort("aborted")
    rid, last = live.finished(5.0) or ("", None)
    assert rid == "aborted" and last.finish_reason == FINISH.FINISH_REASON_ABORT and last.completion_tokens == 0
    assert last.HasField("logprobs") and len(last.logprobs.tokens) == 0  # asked for: empty, as the engine answers
    assert until(lambda: cache.waiting(aborted) == 0 and loop.in_flight == 0)
    live.admit("left", ids, max_tokens=20, regex=left.spec)
    assert until(lambda: cache.waiting(left) == 1 and loop.in_flight == 1)
    live.call.cancel()  # the client leaves
    assert until(lambda: cache.waiting(left) == 0 and loop.in_flight == 0)
    gate.set()  # the compiles end (and are cached); neither request ever reaches the engine
    assert until(lambda: aborted in cache and left in cache)
    time.sleep(0.2)
    state = worker.engine.state()
    assert state.running == 0 and state.waiting == 0 and loop.in_flight == 0


def test_a_half_closed_session_waits_for_a_compiling_request(worker: Worker, gate: threading.Event) -> None:
    ids = prompt(worker)
    live = Live(worker.stub)
    live.admit("late", ids, max_tokens=20, regex=SLOW + "c")
    live.sent.put(None)  # the client stops sending; its request must still run
    assert live.finished(0.5) is None and live.events.empty()
    gate.set()
    rid, last = live.finished(8.0) or ("", None)
    assert rid == "late" and last.finish_reason == FINISH.FINISH_REASON_STOP
    assert re.fullmatch(SLOW + "c", live.text["late"])
    assert live.finished(5.0) is None  # then the stream ends


def test_requests_waiting_for_their_grammar_count_in_worker_state_waiting(worker: Worker, gate: threading.Event) -> None:
    loop = worker.running.loop
    ids = prompt(worker)
    live = Live(worker.stub)
    assert until(lambda: live.waiting[:1] == [0])  # the state sent when the session opens
    live.admit("w1", ids, max_tokens=20, regex=SLOW + "d")
    live.admit("w2", ids, max_tokens=20, regex=SLOW + "e")
    assert until(lambda: loop.in_flight == 2 and live.waiting[-1:] == [2])
    assert worker.engine.state().waiting == 0  # the engine holds neither: the loop counts them
    assert loop.latest_state.state.waiting == 2  # what the metrics port reads
    assert worker.stub.GetInfo(worker_pb2.InfoRequest()).state.waiting == 2
    live.abort("w2")
    rid, _ = live.finished(5.0) or ("", None)
    assert rid == "w2" and until(lambda: live.waiting[-1:] == [1])
    gate.set()
    rid, last = live.finished(8.0) or ("", None)
    assert rid == "w1" and last.finish_reason == FINISH.FINISH_REASON_STOP
    assert until(lambda: loop.latest_state.state.waiting == 0 and live.waiting[-1:] == [0])
    live.sent.put(None)
    assert live.finished(5.0) is None


def test_a_prepare_cancelled_while_its_grammar_compiles_stops_waiting(
    worker: Worker, gate: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gRPC does not interrupt a handler whose call was cancelled (the gateway cancels a Prepare whose client left):
    the call's callback cancels Prepare's wait, so the compile loses its waiter and the handler's thread returns at
    once (not when the compile ends or times out)."""
    from inlaid_worker.server.servicer import WorkerServicer

    cache, so = worker.engine.grammars, StructuredOutput("regex", SLOW + "p")
    real, returned = WorkerServicer._await_compile, threading.Event()

    def await_compile(self: Any, *args: Any) -> None:
        try:
            real(self, *args)
        finally:
            returned.set()

    monkeypatch.setattr(WorkerServicer, "_await_compile", await_compile)
    gated, started = cache._compile_now, []

    def compile_now(s: StructuredOutput) -> Any:  # (the gate fixture's compile, noting which spec has started)
        started.append(s.spec)
        return gated(s)

    monkeypatch.setattr(cache, "_compile_now", compile_now)
    request = worker_pb2.PrepareRequest(model="", prompt="Hello", sampling=common_pb2.SamplingParams(regex=so.spec))
    call = worker.stub.Prepare.future(request, timeout=15)
    assert until(lambda: cache.waiting(so) == 1)
    # cancelled only once its compile runs: a compile still queued (behind an earlier test's, under load) would be
    # dropped with its entry (waiting None), which is not what this test is about
    assert until(lambda: so.spec in started)
    call.cancel()  # what the gateway's WorkerConnection.prepare does when its client leaves
    assert until(lambda: cache.waiting(so) == 0, timeout_s=5.0) and returned.wait(5.0)
    assert not gate.is_set() and call.cancelled()
    gate.set()  # the compile still ends and is cached (nobody waits for it)
    assert until(lambda: so in cache)
    assert worker.stub.Prepare(request).max_tokens > 0


def _resumed_admit(rid: str, ids: list[int], earlier: list[int], **sampling: Any) -> worker_pb2.ControlMessage:
    """An Admit whose prompt ends with `earlier`, its own output from an earlier run (a gateway-side resume)."""
    admit = worker_pb2.Admit(
        request_id=rid,
        prompt_token_ids=ids + earlier,
        sampling=common_pb2.SamplingParams(**sampling),
        resumed_output_tokens=len(earlier),
    )
    return worker_pb2.ControlMessage(admit=admit)


def test_a_resumed_replay_runs_off_the_engine_thread(worker: Worker, monkeypatch: pytest.MonkeyPatch) -> None:
    """A resumed structured Admit replays its earlier output through the grammar on the replay pool
    (GrammarCache.state_async), never on the engine thread: while a replay is held until the engine has stepped a
    neighbour on (without the move it would wait in vain: the engine thread itself replays), the neighbour streams;
    then the resumed request continues from the replayed state (at most 3 more a's after its 5)."""
    engine, ids = worker.engine, prompt(worker)
    a = engine.tokenizer.hf.convert_tokens_to_ids("a")
    real = GrammarState._replay
    seen: dict[str, Any] = {}

    def held_replay(state: GrammarState, replay: Any) -> None:
        seen["thread"] = threading.current_thread().name
        steps = engine.num_steps
        seen["stepped"] = until(lambda: engine.num_steps >= steps + 5, timeout_s=3.0)
        real(state, replay)

    monkeypatch.setattr(GrammarState, "_replay", held_replay)
    live = Live(worker.stub)
    live.admit("plain", ids, max_tokens=600, ignore_eos=True, temperature=0)
    first = live.events.get(timeout=5.0)
    assert first.WhichOneof("kind") == "delta" and first.delta.request_id == "plain"
    live.sent.put(_resumed_admit("resumed", ids, [a] * 5, max_tokens=20, regex="a{0,8}b"))
    done = dict(d for d in (live.finished(10.0) for _ in range(2)) if d is not None)
    assert seen["thread"].startswith("grammar-replay-") and seen["stepped"], seen
    assert set(done) == {"plain", "resumed"}, done
    assert done["resumed"].finish_reason == FINISH.FINISH_REASON_STOP
    assert re.fullmatch("a{0,3}b", live.text["resumed"]), live.text["resumed"]
    assert done["plain"].finish_reason == FINISH.FINISH_REASON_LENGTH
    live.sent.put(None)
    assert live.finished(5.0) is None


def test_a_request_aborted_during_its_replay_never_reaches_the_engine(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An abort while a resumed request's replay runs on the replay pool answers ABORT at once; the replay ends on
    its own and its state is dropped. A refused replay (a token the grammar refuses) is that request's error alone."""
    engine, loop, ids = worker.engine, worker.running.loop, prompt(worker)
    a = engine.tokenizer.hf.convert_tokens_to_ids("a")
    real = GrammarState._replay
    held, ended = threading.Event(), threading.Event()

    def held_replay(state: GrammarState, replay: Any) -> None:
        held.wait(10.0)
        try:
            real(state, replay)
        finally:
            ended.set()

    monkeypatch.setattr(GrammarState, "_replay", held_replay)
    live = Live(worker.stub)
    live.sent.put(_resumed_admit("held", ids, [a] * 5, max_tokens=20, regex="a{0,8}c"))
    assert until(lambda: loop.in_flight == 1)
    live.abort("held")
    rid, last = live.finished(5.0) or ("", None)
    assert rid == "held" and last.finish_reason == FINISH.FINISH_REASON_ABORT and last.completion_tokens == 0
    assert until(lambda: loop.in_flight == 0)
    held.set()
    assert ended.wait(5.0)
    time.sleep(0.2)
    state = engine.state()
    assert state.running == 0 and state.waiting == 0 and loop.in_flight == 0
    # 9 a's: the grammar refuses the 9th
    live.sent.put(_resumed_admit("wrong", ids, [a] * 9, max_tokens=20, regex="a{0,8}c"))
    rid, error = live.finished(5.0) or ("", None)
    assert rid == "wrong" and isinstance(error, worker_pb2.RequestError)
    assert error.message.startswith("response_format: the resumed output's token 8")
    live.sent.put(None)
    assert live.finished(5.0) is None


def test_engine_loop_admit_replays_a_resumed_request_off_its_thread(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EngineLoop.admit itself sends a resumed structured request through state_async (not only the servicer does):
    the replay runs on a replay-pool thread and the request then runs from the replayed state."""
    from inlaid_worker.engine.sampling_params import SamplingParams
    from inlaid_worker.server.engine_loop import RequestOutput

    engine, loop, ids = worker.engine, worker.running.loop, prompt(worker)
    a = engine.tokenizer.hf.convert_tokens_to_ids("a")
    real, threads = GrammarState._replay, []

    def replay(state: GrammarState, earlier: Any) -> None:
        threads.append(threading.current_thread().name)
        real(state, earlier)

    monkeypatch.setattr(GrammarState, "_replay", replay)
    sid, outbox = loop.open_session()
    sampling = SamplingParams(max_tokens=20, structured=StructuredOutput("regex", "a{0,8}b"))
    loop.admit(sid, "direct", ids + [a] * 5, sampling, "", 5)
    outs: list[Any] = []
    while not (outs and outs[-1].finish_reason is not None):
        ev = outbox.get(timeout=10)
        assert not hasattr(ev, "message"), ev  # no AdmitError
        if isinstance(ev, RequestOutput):
            outs.append(ev)
    loop.close_session(sid, abort=False)
    assert len(threads) == 1 and threads[0].startswith("grammar-replay-"), threads
    assert re.fullmatch("a{0,3}b", "".join(o.text for o in outs)), outs
