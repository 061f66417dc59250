"""Threads for grammar compiles that a compile which never ends cannot use up, and one timer thread for deadlines.

A running compile (xgrammar's C++, GIL released) cannot be interrupted. `CompilePool` keeps `threads` workers
that are not stuck: once a worker's job has run for `stuck_after_s`, the worker counts as stuck and a replacement
starts, up to `max_threads` threads in all. A stuck worker whose job ends after all goes back to work if the pool
is short of live workers and exits otherwise. So hung compiles take one thread each (never the whole pool) until
`max_threads - threads` of them hang at once; past that the pool runs on whatever live workers are left.
Jobs that are still queued can be cancelled (`Future.cancel()`); running ones cannot. `close()` (at shutdown)
cancels the queued jobs, lets idle workers exit at once and waits a bounded time for busy ones: a hung compile's
thread (a daemon) is left to end on its own rather than hold up the worker's exit.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from inlaid_worker.engine.error_kind import ErrorKind

log = logging.getLogger(__name__)

CLOSE_WAIT_S = 1.0  # close() waits this long in all for busy threads to end their jobs


class ClosedError(RuntimeError):
    """A CompilePool (or the GrammarCache that owns it) was used after close(): the worker is shutting down."""

    kind = ErrorKind.SHUTTING_DOWN


class Timers:
    """`call_later(delay, fn)` runs fn on one daemon thread after `delay` seconds unless cancelled first. After
    `close()` pending callbacks never run and call_later hands back a timer that never fires (a pool worker that took
    a job just as its pool closed still asks for one). When the thread cannot start (no more threads), call_later
    raises and keeps nothing: the next call tries again."""

    def __init__(self, name: str = "timers") -> None:
        self._name = name
        self._cv = threading.Condition()
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> Timer:
        timer = Timer(fn)
        with self._cv:
            if self._closed:
                timer.cancel()
                return timer
            if self._thread is None:  # started before the callback is queued: a failed start leaves nothing behind
                thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                try:
                    thread.start()
                except Exception as exc:  # (e.g. no more threads)
                    raise RuntimeError(f"timer thread {self._name} could not start: {exc}") from exc
                self._thread = thread
            heapq.heappush(self._heap, (time.monotonic() + max(delay_s, 0.0), next(self._seq), timer))
            self._cv.notify()
        return timer

    def close(self, timeout_s: float = CLOSE_WAIT_S) -> None:
        """Drops the pending callbacks and ends the timer thread (waiting at most `timeout_s` for a callback that
        runs). Idempotent."""
        with self._cv:
            self._closed = True
            self._heap.clear()
            thread = self._thread
            self._cv.notify()
        # only a started thread can be joined (ident is set by start)
        if thread is not None and thread.ident is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._heap and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                when, _, timer = self._heap[0]
                wait = when - time.monotonic()
                if wait > 0:
                    self._cv.wait(wait)
                    continue
                heapq.heappop(self._heap)
            if not timer.cancelled:
                try:
                    timer.fn()
                except Exception:  # a failing callback must not stop the other timers
                    log.exception("timer callback failed")


class Timer:
    __slots__ = ("cancelled", "fn")

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass(eq=False)
class _Worker:
    job: _Job | None = None
    stuck: bool = False
    thread: threading.Thread | None = None


@dataclass(eq=False)
class _Job:
    fn: Callable[[], Any]
    future: Future[Any]


class CompilePool:
    def __init__(
        self, threads: int, max_threads: int, stuck_after_s: float, timers: Timers, name: str = "grammar"
    ) -> None:
        if not 1 <= threads <= max_threads:
            raise ValueError(f"need 1 <= threads ({threads}) <= max_threads ({max_threads})")
        self.threads = threads
        self.max_threads = max_threads
        self.stuck_after_s = stuck_after_s
        self._timers = timers
        self._name = name
        self._cv = threading.Condition()
        self._queue: deque[_Job] = deque()
        self._workers: set[_Worker] = set()
        self._ids = itertools.count()
        self._closed = False

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        """`fn` run on a worker; its future. Raises ClosedError after close(), or the thread's error when no worker
        could start and none runs (the job is then not left queued)."""
        job = _Job(fn, Future())
        with self._cv:
            if self._closed:
                raise ClosedError(f"compile pool {self._name} is closed")
            self._queue.append(job)
            if self.live < self.threads and len(self._workers) < self.max_threads:
                try:
                    self._spawn()
                except Exception:
                    if self.live == 0:  # no thread could start and none runs: not left queued for nobody
                        self._queue.remove(job)
                        raise
                    log.warning("compile pool %s: a thread could not start; %d live run the queue", self._name,
                                self.live)  # fmt: skip
            self._cv.notify()
        return job.future

    @property
    def live(self) -> int:
        """Workers not stuck (idle or running a job for less than stuck_after_s)."""
        with self._cv:  # an RLock: also read under it
            return sum(1 for w in self._workers if not w.stuck)

    @property
    def stuck(self) -> int:
        """Workers whose job has run for stuck_after_s or longer."""
        with self._cv:
            return sum(1 for w in self._workers if w.stuck)

    @property
    def size(self) -> int:
        """Threads in all (live and stuck); at most max_threads."""
        with self._cv:
            return len(self._workers)

    def close(self, timeout_s: float = CLOSE_WAIT_S) -> None:
        """Stops the pool (at shutdown): later submits raise ClosedError, queued jobs are cancelled, idle workers exit
        at once and busy ones once their job ends; waits at most `timeout_s` in all for them (a compile that never
        ends keeps its daemon thread, never the caller). Idempotent: a second call returns at once."""
        with self._cv:
            if self._closed:
                return
            self._closed = True
            queued = list(self._queue)
            self._queue.clear()
            threads = [w.thread for w in self._workers if w.thread is not None]
            self._cv.notify_all()
        for job in queued:
            job.future.cancel()
        deadline = time.monotonic() + timeout_s
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(deadline - time.monotonic(), 0.0))

    def _spawn(self) -> None:  # under _cv
        worker = _Worker()
        self._workers.add(worker)
        name = f"{self._name}-{next(self._ids)}"
        worker.thread = threading.Thread(target=self._work, args=(worker,), name=name, daemon=True)
        try:
            worker.thread.start()
        except Exception:  # (e.g. no more threads): not counted as a live worker
            self._workers.discard(worker)
            raise

    def _work(self, worker: _Worker) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if self._closed:
                    self._workers.discard(worker)
                    return
                job = self._queue.popleft()
                if not job.future.set_running_or_notify_cancel():
                    continue  # cancelled while queued
                worker.job = job
            try:
                timer: Timer | None = self._timers.call_later(
                    self.stuck_after_s, lambda w=worker, j=job: self._check(w, j)
                )
            except Exception:  # no timer thread: the job still runs (and settles its future), unwatched
                log.warning("compile pool %s: no stuck check for a job (the timer thread could not start)", self._name)
                timer = None
            try:
                job.future.set_result(job.fn())
            except BaseException as exc:  # handed to whoever waits on the future
                job.future.set_exception(exc)
            if timer is not None:
                timer.cancel()
            with self._cv:
                worker.job = None
                if self._closed:
                    self._workers.discard(worker)
                    return
                if worker.stuck:
                    worker.stuck = False
                    if self.live > self.threads:  # a replacement took this worker's place
                        self._workers.discard(worker)
                        return

    def _check(self, worker: _Worker, job: _Job) -> None:
        """The job has run for stuck_after_s: count its worker as stuck and start a replacement (within the cap)."""
        with self._cv:
            if worker.job is not job or worker.stuck:
                return
            worker.stuck = True
            if not self._closed and self.live < self.threads and len(self._workers) < self.max_threads:
                self._spawn()
