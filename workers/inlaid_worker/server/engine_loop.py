"""The engine's step loop, on its own thread. It never waits on the network.

Other threads talk to it only through a thread-safe inbox (admit, abort, open/close a session, run a function
on the engine); the loop drains the inbox between steps and pushes events onto per-session outboxes
(unbounded queues, so a slow reader never stalls a step). When the engine is idle the loop blocks on the
inbox. A session that is cancelled has all its requests aborted (their KV blocks freed); a session whose
client only stopped sending is drained: its requests finish, then its outbox is closed. Once the worker stops
(refuse_new), every new Admit is refused SHUTTING_DOWN while the admitted requests run on.

A request whose grammar (structured outputs) still compiles is admitted by `admit_when_ready`: it belongs to its
session at once (an abort or the session's end cancels its wait; a half-closed session waits for it) and enters the
engine when the compile is done, or gets an AdmitError with the compile's error. A resumed structured request waits
the same way for its GrammarState (GrammarCache.state_async: compiled, then its earlier output replayed on the
replay pool), which the loop hands to engine.add_request: the loop thread never replays, and a replay refused
(too slow, or a token the grammar refuses) is that request's AdmitError alone. Nothing blocks meanwhile. Such
requests count in the published state's `waiting` (WorkerState.waiting on the Session stream and in GetInfo, and the
metrics' waiting gauge) with the engine's own waiting sequences: load the worker has taken on and not yet started.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field, replace
from typing import Any

from inlaid_worker.engine.adapters import UnknownModelError
from inlaid_worker.engine.engine import EngineState, LLMEngine, RequestError, RequestOutput
from inlaid_worker.engine.error_kind import ErrorKind, kind_of
from inlaid_worker.engine.grammar_cache import bound
from inlaid_worker.engine.sampling_params import SamplingParams
from inlaid_worker.engine.sequence import FinishReason
from inlaid_worker.engine.structured import GrammarState

log = logging.getLogger(__name__)

STATE_INTERVAL_S = 0.5  # a WorkerState at least this often while busy, and on every change of load


@dataclass(frozen=True)
class AdmitError:
    """A request refused or failed (a RequestError event); `kind` picks the client's status (engine/error_kind.py)."""

    request_id: str
    message: str
    kind: ErrorKind

    @classmethod
    def of(cls, request_id: str, exc: BaseException) -> AdmitError:
        """`exc`'s text and kind (INTERNAL for an error that names none)."""
        return cls(request_id, str(exc), kind_of(exc))


def _in_flight(rid: str) -> AdmitError:
    """An Admit reusing the id of a request still running: the gateway's fault, never the client's."""
    return AdmitError(rid, f"request id {rid!r} is already in flight", ErrorKind.INTERNAL)


def _shutting_down(rid: str) -> AdmitError:
    """An Admit that arrived after refuse_new (the worker is stopping): the gateway queues it again elsewhere."""
    return AdmitError(rid, "the worker is shutting down", ErrorKind.SHUTTING_DOWN)


@dataclass(frozen=True)
class StateEvent:
    state: EngineState
    steps_per_s: float
    draining: bool = False  # refuse_new ran: the gateway sends no new work (WorkerState.draining)


Event = RequestOutput | AdmitError | StateEvent | None  # None closes the outbox


@dataclass(frozen=True)
class _Waiting:
    grammar: Future[Any]  # GrammarCache.compile_async (or, resumed, state_async) of the request's structured output
    prompt_tokens: int
    logprobs_asked: bool  # an abort answers with an empty logprobs list then, as the engine's does


@dataclass
class _Session:
    outbox: queue.Queue[Event]
    requests: set[str] = field(default_factory=set)  # admitted or waiting for their grammar
    draining: bool = False
    waiting: dict[str, _Waiting] = field(default_factory=dict)  # request id -> its grammar's compile


class EngineLoop:
    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self._inbox: queue.Queue[Callable[[], None]] = queue.Queue()
        self._sessions: dict[int, _Session] = {}
        self._owner: dict[str, int] = {}  # request id -> session id
        self._next_session = 0
        # guards _next_session, and _sessions' membership and latest_state against refuse_new (another thread)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._refusing = threading.Event()  # set by refuse_new: the worker is stopping
        self._steps_per_s = 0.0
        self._last_state: tuple[Any, ...] = ()
        self._last_state_at = 0.0
        self.latest_state = StateEvent(engine.state(), 0.0)  # read by any thread
        self._thread = threading.Thread(target=self._run, name="engine-loop", daemon=True)

    # ---- thread-safe API --------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._inbox.put(lambda: None)
        self._thread.join(timeout)

    def refuse_new(self) -> None:
        """The worker is stopping: every Admit from now on is refused SHUTTING_DOWN (the gateway queues it again, on
        another worker, and admits nothing more here), while the requests already admitted run on (RunningWorker.stop
        calls this before the gRPC server's grace period, during which the Session streams stay open). Every Session
        is told at once, so the gateway stops sending work here before a refusal has to teach it: the draining state
        is published here, on the caller's thread, before this returns (latest_state, and a WorkerState on every open
        Session's outbox). Before, the loop thread published it after its current step: 0.5-1.8 s late mid-step under
        load (bench/results/draining-latency-2026-12-01.md); CI's worker-draining flake was a missed SIGTERM instead
        (stop_signal.py)."""
        self._refusing.set()
        with self._lock:
            self.latest_state = replace(self.latest_state, draining=True)
            self._queue_all(self.latest_state)
        self._inbox.put(lambda: None)  # wakes an idle loop: its next _publish_state keeps the flag set

    @property
    def refusing(self) -> bool:
        return self._refusing.is_set()

    def open_session(self) -> tuple[int, queue.Queue[Event]]:
        with self._lock:
            sid = self._next_session
            self._next_session += 1
        outbox: queue.Queue[Event] = queue.Queue()
        self._inbox.put(lambda: self._open(sid, outbox))
        return sid, outbox

    def close_session(self, sid: int, abort: bool) -> None:
        self._inbox.put(lambda: self._close(sid, abort))

    def admit(
        self,
        sid: int,
        request_id: str,
        prompt: list[int],
        sampling: SamplingParams,
        model: str,
        resumed_output_tokens: int = 0,
    ) -> None:
        """Queues a request for the engine. A resumed structured one goes through admit_when_ready with its
        GrammarState replayed on the replay pool (GrammarCache.state_async): the loop thread never replays."""
        k = resumed_output_tokens
        if sampling.structured is not None and 0 < k < len(prompt):
            state = self.engine.grammars.state_async(sampling.structured, prompt[len(prompt) - k :])
            self.admit_when_ready(sid, request_id, prompt, sampling, model, k, state)
            return
        self._inbox.put(lambda: self._admit(sid, request_id, prompt, sampling, model, resumed_output_tokens))

    def admit_when_ready(
        self,
        sid: int,
        request_id: str,
        prompt: list[int],
        sampling: SamplingParams,
        model: str,
        resumed_output_tokens: int,
        grammar: Future[Any],
    ) -> None:
        """Like admit, once `grammar` is done: the compile of sampling.structured (GrammarCache.compile_async), or, for
        a resumed request, its GrammarState with the earlier output replayed (GrammarCache.state_async), handed to
        engine.add_request as it is; or an AdmitError carrying the future's error. Until then other commands go on; an
        abort or the session's cancellation cancels the wait (the future)."""
        self._inbox.put(lambda: self._wait(sid, request_id, len(prompt), sampling.logprobs is not None, grammar))
        # registered after the _wait command is queued, so _ready always runs after it
        grammar.add_done_callback(
            lambda f: self._inbox.put(
                lambda: self._ready(sid, request_id, prompt, sampling, model, resumed_output_tokens, f)
            )
        )

    def abort(self, sid: int, request_id: str) -> None:
        self._inbox.put(lambda: self._abort(sid, request_id))

    @property
    def in_flight(self) -> int:
        """Requests the sessions hold (in the engine or waiting for their grammar); read from any thread."""
        return len(self._owner)

    def call(self, fn: Callable[[LLMEngine], Any]) -> Future[Any]:
        """Runs fn(engine) on the loop thread between steps; not at all when the caller cancelled the future first
        (e.g. it gave up waiting)."""
        fut: Future[Any] = Future()

        def run() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(fn(self.engine))
            except Exception as exc:  # handed to the caller
                fut.set_exception(exc)

        self._inbox.put(run)
        return fut

    # ---- loop thread --------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._drain(block=not self.engine.has_work)
            if self.engine.has_work:
                t0 = time.perf_counter()
                outputs = self._step()
                dt = time.perf_counter() - t0
                self._steps_per_s = 0.9 * self._steps_per_s + 0.1 / max(dt, 1e-6)
                for out in outputs:
                    self._route(out)
            self._publish_state()

    def _step(self) -> list[RequestOutput]:
        try:
            return self.engine.step()
        except Exception:  # a failing step must not kill the worker: fail what was in flight
            log.exception("engine step failed; aborting all in-flight requests")
            self._fail_running()
            return []

    def _fail_running(self) -> None:
        """Aborts every request the engine runs, each with an AdmitError (after a failed step or command)."""
        for rid in [r for r in self._owner if not self._is_waiting(r)]:
            try:  # an abort may read a step still in flight (async scheduling), which may fail again
                self.engine.abort_request(rid)
            except Exception:
                log.exception("aborting %s after a failure failed", rid)
            self._emit(rid, AdmitError(rid, "the worker failed while running this request", ErrorKind.INTERNAL))
        try:
            self.engine.step()  # collect (and drop) the abort outputs
        except Exception:
            log.exception("the step after a failure failed")

    def _drain(self, block: bool) -> None:
        try:
            cmd = self._inbox.get(timeout=STATE_INTERVAL_S) if block else self._inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            try:
                cmd()
            except Exception:  # e.g. an abort that reads a step in flight (async scheduling) meets a device fault
                log.exception("an engine command failed; aborting all in-flight requests")
                self._fail_running()
            try:
                cmd = self._inbox.get_nowait()
            except queue.Empty:
                return

    def _open(self, sid: int, outbox: queue.Queue[Event]) -> None:
        with self._lock:  # refuse_new either sees this Session or has set latest_state's flag already
            self._sessions[sid] = _Session(outbox)
            outbox.put(self.latest_state)

    def _close(self, sid: int, abort: bool) -> None:
        session = self._sessions.get(sid)
        if session is None:
            return
        try:  # an abort can raise (a failed read of the step in flight): the session still drains and closes
            if abort:
                for rid in list(session.requests):
                    waiting = session.waiting.pop(rid, None)
                    if waiting is not None:
                        waiting.grammar.cancel()  # the grammar cache forgets this waiter
                    else:
                        self.engine.abort_request(rid)
                    self._owner.pop(rid, None)
                    session.requests.discard(rid)  # the rest stay owned: the loop's _fail_running ends them
        finally:
            session.draining = True
            self._maybe_finish_session(sid, session)

    def _admit(
        self, sid: int, rid: str, prompt: list[int], sampling: SamplingParams, model: str, resumed: int = 0
    ) -> None:
        session = self._sessions.get(sid)
        if session is None or session.draining:
            return
        if rid in self._owner:
            session.outbox.put(_in_flight(rid))
            return
        if self._refusing.is_set():
            session.outbox.put(_shutting_down(rid))
            return
        error = self._start(rid, prompt, sampling, model, resumed)
        if error is not None:
            session.outbox.put(error)
            return
        session.requests.add(rid)
        self._owner[rid] = sid

    def _start(
        self,
        rid: str,
        prompt: list[int],
        sampling: SamplingParams,
        model: str,
        resumed: int,
        state: GrammarState | None = None,
    ) -> AdmitError | None:
        try:
            clamped = replace(sampling, max_tokens=self.engine.max_new_tokens(len(prompt), sampling.max_tokens))
            self.engine.add_request(rid, prompt, clamped, model, resumed, state)
        except (UnknownModelError, RequestError, ValueError) as exc:
            return AdmitError.of(rid, exc)
        return None

    def _wait(self, sid: int, rid: str, prompt_tokens: int, logprobs_asked: bool, grammar: Future[Any]) -> None:
        session = self._sessions.get(sid)
        if session is None or session.draining:
            grammar.cancel()
            return
        if rid in self._owner or self._refusing.is_set():
            grammar.cancel()
            session.outbox.put(_in_flight(rid) if rid in self._owner else _shutting_down(rid))
            return
        session.waiting[rid] = _Waiting(grammar, prompt_tokens, logprobs_asked)
        session.requests.add(rid)
        self._owner[rid] = sid

    def _ready(
        self,
        sid: int,
        rid: str,
        prompt: list[int],
        sampling: SamplingParams,
        model: str,
        resumed: int,
        grammar: Future[Any],
    ) -> None:
        session = self._sessions.get(sid)
        waiting = session.waiting.get(rid) if session is not None else None
        if session is None or waiting is None or waiting.grammar is not grammar:
            return  # aborted, or its session ended, while the grammar compiled
        del session.waiting[rid]
        # not cancelled in practice (_abort and _close remove a waiter from session.waiting before cancelling it, _wait
        # cancels only waiters it never adds); kept so a future change cannot raise CancelledError on the loop thread
        exc = CancelledError("the grammar's compile was cancelled") if grammar.cancelled() else grammar.exception()
        if exc is not None:
            error: AdmitError | None = AdmitError.of(rid, exc)
        else:
            got = grammar.result()  # a CompiledGrammar, or a resumed request's replayed GrammarState
            if isinstance(got, GrammarState):
                error = self._start(rid, prompt, bound(sampling, got.compiled), model, resumed, got)
            else:
                error = self._start(rid, prompt, bound(sampling, got), model, resumed)
        if error is not None:
            self._emit(rid, error)

    def _is_waiting(self, rid: str) -> bool:
        session = self._sessions.get(self._owner.get(rid, -1))
        return session is not None and rid in session.waiting

    def _abort(self, sid: int, rid: str) -> None:
        session = self._sessions.get(sid)
        waiting = session.waiting.pop(rid, None) if session is not None else None
        if waiting is not None:  # still compiling: stop waiting, and answer as the engine does
            waiting.grammar.cancel()
            lp = () if waiting.logprobs_asked else None
            self._emit(rid, RequestOutput(rid, "", [], FinishReason.ABORT, waiting.prompt_tokens, 0, logprobs=lp))
            return
        if self._owner.get(rid) == sid:
            self.engine.abort_request(rid)  # its ABORT output is routed after the next step

    def _route(self, out: RequestOutput) -> None:
        self._emit(out.request_id, out)

    def _emit(self, rid: str, event: RequestOutput | AdmitError) -> None:
        sid = self._owner.get(rid)
        session = self._sessions.get(sid) if sid is not None else None
        if session is None:
            return
        session.outbox.put(event)
        finished = isinstance(event, AdmitError) or event.finish_reason is not None
        if finished:
            session.requests.discard(rid)
            del self._owner[rid]
            self._maybe_finish_session(sid, session)  # type: ignore[arg-type]

    def _maybe_finish_session(self, sid: int, session: _Session) -> None:
        if session.draining and not session.requests:
            session.outbox.put(None)
            with self._lock:
                del self._sessions[sid]

    def _grammar_waiters(self) -> int:
        return sum(len(session.waiting) for session in self._sessions.values())

    def _publish_state(self) -> None:
        state = self.engine.state()
        compiling = self._grammar_waiters()
        if compiling:
            state = replace(state, waiting=state.waiting + compiling)
        # The flag read, latest_state set and the state queued all under the lock: a state without the flag is queued
        # before refuse_new's locked section, so before its draining one, never after it (nor over latest_state). The
        # puts cannot block or deadlock: every outbox is an unbounded queue.Queue (open_session), whose put takes only
        # the queue's own mutex, and no reader holds this lock while it waits on an outbox.
        with self._lock:
            draining = self._refusing.is_set()
            self.latest_state = event = StateEvent(state, self._steps_per_s, draining)
            key = (state.running, state.waiting, state.resident_adapters, draining)
            now = time.monotonic()
            if key == self._last_state and (not self.engine.has_work or now - self._last_state_at < STATE_INTERVAL_S):
                return
            self._last_state, self._last_state_at = key, now
            self._queue_all(event)

    def _queue_all(self, event: StateEvent) -> None:
        """Queues a state on every open Session's outbox; the caller holds _lock (a Session closing meanwhile ignores
        what follows its end)."""
        for session in self._sessions.values():
            session.outbox.put(event)
