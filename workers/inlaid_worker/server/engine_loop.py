"""The engine's step loop, on its own thread. It never waits on the network.

Other threads talk to it only through a thread-safe inbox (admit, abort, open/close a session, run a function
on the engine); the loop drains the inbox between steps and pushes events onto per-session outboxes
(unbounded queues, so a slow reader never stalls a step). When the engine is idle the loop blocks on the
inbox. A session that is cancelled has all its requests aborted (their KV blocks freed); a session whose
client only stopped sending is drained: its requests finish, then its outbox is closed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

from inlaid_worker.engine.adapters import UnknownModelError
from inlaid_worker.engine.engine import EngineState, LLMEngine, RequestError, RequestOutput
from inlaid_worker.engine.sampling_params import SamplingParams

log = logging.getLogger(__name__)

STATE_INTERVAL_S = 0.5  # a WorkerState at least this often while busy, and on every change of load


@dataclass(frozen=True)
class AdmitError:
    request_id: str
    message: str


@dataclass(frozen=True)
class StateEvent:
    state: EngineState
    steps_per_s: float


Event = RequestOutput | AdmitError | StateEvent | None  # None closes the outbox


@dataclass
class _Session:
    outbox: queue.Queue[Event]
    requests: set[str] = field(default_factory=set)
    draining: bool = False


class EngineLoop:
    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self._inbox: queue.Queue[Callable[[], None]] = queue.Queue()
        self._sessions: dict[int, _Session] = {}
        self._owner: dict[str, int] = {}  # request id -> session id
        self._next_session = 0
        self._lock = threading.Lock()  # guards _next_session only
        self._stop = threading.Event()
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
        self._inbox.put(lambda: self._admit(sid, request_id, prompt, sampling, model, resumed_output_tokens))

    def abort(self, sid: int, request_id: str) -> None:
        self._inbox.put(lambda: self._abort(sid, request_id))

    def call(self, fn: Callable[[LLMEngine], Any]) -> Future[Any]:
        """Runs fn(engine) on the loop thread between steps."""
        fut: Future[Any] = Future()

        def run() -> None:
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
            for rid in list(self._owner):
                self.engine.abort_request(rid)
                self._emit(rid, AdmitError(rid, "the worker failed while running this request"))
            self.engine.step()  # collect (and drop) the abort outputs
            return []

    def _drain(self, block: bool) -> None:
        try:
            cmd = self._inbox.get(timeout=STATE_INTERVAL_S) if block else self._inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            cmd()
            try:
                cmd = self._inbox.get_nowait()
            except queue.Empty:
                return

    def _open(self, sid: int, outbox: queue.Queue[Event]) -> None:
        self._sessions[sid] = _Session(outbox)
        outbox.put(self.latest_state)

    def _close(self, sid: int, abort: bool) -> None:
        session = self._sessions.get(sid)
        if session is None:
            return
        if abort:
            for rid in list(session.requests):
                self.engine.abort_request(rid)
                self._owner.pop(rid, None)
            session.requests.clear()
        session.draining = True
        self._maybe_finish_session(sid, session)

    def _admit(
        self, sid: int, rid: str, prompt: list[int], sampling: SamplingParams, model: str, resumed: int = 0
    ) -> None:
        session = self._sessions.get(sid)
        if session is None or session.draining:
            return
        if rid in self._owner:
            session.outbox.put(AdmitError(rid, f"request id {rid!r} is already in flight"))
            return
        try:
            clamped = replace(
                sampling, max_tokens=self.engine.max_new_tokens(len(prompt), sampling.max_tokens)
            )
            self.engine.add_request(rid, prompt, clamped, model, resumed)
        except (UnknownModelError, RequestError, ValueError) as exc:
            session.outbox.put(AdmitError(rid, str(exc)))
            return
        session.requests.add(rid)
        self._owner[rid] = sid

    def _abort(self, sid: int, rid: str) -> None:
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
            del self._sessions[sid]

    def _publish_state(self) -> None:
        state = self.engine.state()
        self.latest_state = StateEvent(state, self._steps_per_s)
        key = (state.running, state.waiting, state.resident_adapters)
        now = time.monotonic()
        if key == self._last_state and (
            not self.engine.has_work or now - self._last_state_at < STATE_INTERVAL_S
        ):
            return
        self._last_state, self._last_state_at = key, now
        for session in self._sessions.values():
            session.outbox.put(self.latest_state)
