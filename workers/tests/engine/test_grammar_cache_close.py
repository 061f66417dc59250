"""GrammarCache.close / CompilePool.close (the worker's shutdown): the compile, replay and deadline threads end within
a bound, a hung compile does not hold up the caller, every future still waiting fails with ClosedError (none is left
for nobody: a state_async whose replay was queued is settled by close itself, since its queued job only settles it
when it runs), a second close is a no-op, and later calls raise ClosedError. RunningWorker.stop closes the cache.
Races with close (a compile asked for, or just ended, as it runs) and threads that cannot start (the deadline thread,
a pool's close that fails) never leave a future waiting for nobody nor blame the request's response_format."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from engine_helpers import engine_for
from factories import make_tiny_llama
from grammar_helpers import held_compiles
from inlaid_worker.engine.compile_pool import ClosedError, CompilePool, Timers
from inlaid_worker.engine.engine import LLMEngine
from inlaid_worker.engine.grammar_cache import GrammarCache
from inlaid_worker.engine.structured import GrammarState, StructuredOutput
from inlaid_worker.server.app import RunningWorker
from waiting import until

pytest.importorskip("xgrammar")

SO = StructuredOutput("regex", "a*b")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> LLMEngine:
    return engine_for(make_tiny_llama(tmp_path_factory.mktemp("close") / "model"), kv_cache_bytes=1 << 20)


def threads_since(before: set[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before and t.name.startswith("grammar")]


def test_close_ends_every_thread_and_later_calls_raise(engine: LLMEngine) -> None:
    before = set(threading.enumerate())
    cache = GrammarCache(engine.tokenizer.hf, engine.eos_token_ids)
    a = engine.tokenizer.hf.convert_tokens_to_ids("a")
    assert cache.state_async(SO, [a] * 3).result(timeout=10).replayed == 3  # a compile, a replay and a deadline
    mine = threads_since(before)
    kinds = {"grammar-deadlines" if t.name == "grammar-deadlines" else t.name.rsplit("-", 1)[0] for t in mine}
    assert kinds == {"grammar", "grammar-replay", "grammar-deadlines"}, [t.name for t in mine]
    t0 = time.monotonic()
    cache.close()
    assert until(lambda: not any(t.is_alive() for t in mine), timeout_s=2.0)
    assert time.monotonic() - t0 < 2.0
    t0 = time.monotonic()
    cache.close()  # a no-op
    assert time.monotonic() - t0 < 0.1
    for call in (lambda: cache.state_async(SO, [a]), lambda: cache.compile_async(SO), lambda: cache.compile(SO)):
        with pytest.raises(ClosedError, match="grammar cache is closed"):
            call()
    assert not threads_since(before)  # the refused calls started nothing


def test_close_fails_waiting_futures_and_does_not_wait_on_a_hung_compile(
    engine: LLMEngine, gate: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = set(threading.enumerate())
    cache = GrammarCache(
        engine.tokenizer.hf, engine.eos_token_ids, threads=1, max_threads=1, replay_threads=1, max_replay_threads=1
    )
    cache.compile(SO)
    started = held_compiles(cache, monkeypatch, gate, "hung")
    replayed: list[int] = []
    real_replay = GrammarState._replay

    def held(state: GrammarState, earlier: Any) -> None:
        replayed.append(len(earlier))
        gate.wait()
        real_replay(state, earlier)

    monkeypatch.setattr(GrammarState, "_replay", held)
    a = engine.tokenizer.hf.convert_tokens_to_ids("a")
    hung = cache.compile_async(StructuredOutput("regex", "hung"))
    assert until(lambda: started == ["hung"])
    queued = cache.compile_async(StructuredOutput("regex", "queued"))  # behind the hung one on the only thread
    resumed = cache.state_async(StructuredOutput("regex", "hung"), [a])  # waits on the hung compile
    running = cache.state_async(SO, [a] * 2)  # cached: its replay runs (held)
    assert until(lambda: replayed == [2])
    behind = cache.state_async(SO, [a] * 3)  # its replay waits for the only replay thread
    mine = threads_since(before)
    t0 = time.monotonic()
    cache.close(timeout_s=0.3)
    assert time.monotonic() - t0 < 1.0  # the hung compile and the held replay did not hold it up
    for fut in (hung, queued, resumed, running, behind):
        with pytest.raises(ClosedError, match="closed while this request waited"):
            fut.result(timeout=1)
    gate.set()  # the hung compile and the held replay end: their threads leave, nothing else runs
    assert until(lambda: not any(t.is_alive() for t in mine), timeout_s=3.0)
    assert started == ["hung"] and replayed == [2]


def test_compile_pool_close_cancels_queued_jobs_and_refuses_new_ones() -> None:
    pool = CompilePool(1, 1, 5.0, Timers())
    release = threading.Event()
    busy = pool.submit(release.wait)
    queued = pool.submit(lambda: 1)
    assert until(lambda: busy.running())
    t0 = time.monotonic()
    pool.close(timeout_s=0.2)
    assert 0.15 < time.monotonic() - t0 < 1.0  # waited its bound for the busy worker, no longer
    assert queued.cancelled() and pool.size == 1
    with pytest.raises(ClosedError, match="compile pool grammar is closed"):
        pool.submit(lambda: 2)
    release.set()
    assert busy.result(timeout=1) is True
    assert until(lambda: pool.size == 0)  # the busy worker left once its job ended
    pool.close()  # a no-op


def test_closed_timers_never_fire() -> None:
    timers = Timers("close-test-timers")
    fired: list[str] = []
    timers.call_later(0.05, lambda: fired.append("pending"))
    timers.close()
    later = timers.call_later(0.0, lambda: fired.append("later"))
    time.sleep(0.2)
    assert fired == [] and later.cancelled
    assert not any(t.name == "close-test-timers" for t in threading.enumerate())


def test_running_worker_stop_closes_the_grammar_cache() -> None:
    """The worker's shutdown (RunningWorker.stop, after the server and the engine loop stop) closes the cache; new Admits
    are refused first (the server's grace period keeps Sessions open)."""
    calls: list[str] = []

    class Stopped:
        def wait(self) -> None:
            calls.append("server")

    class Server:
        def stop(self, grace: float) -> Stopped:
            return Stopped()

    class Grammars:
        def close(self) -> None:
            calls.append("grammars")

    class Engine:
        grammars = Grammars()

    class Loop:
        engine = Engine()

        def refuse_new(self) -> None:
            calls.append("refuse")

        def stop(self) -> None:
            calls.append("loop")

    RunningWorker(Server(), Loop(), 0).stop(grace=0.1)  # type: ignore[arg-type]
    assert calls == ["refuse", "server", "loop", "grammars"]


def test_a_compile_asked_for_as_close_runs_is_refused(
    engine: LLMEngine, gate: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() runs between compile_async's first check (in _ensure) and its in-flight entry: the call raises
    ClosedError (once it queued a compile that close() then cancelled, and its future waited for nobody)."""
    cache = GrammarCache(engine.tokenizer.hf, engine.eos_token_ids, threads=1, max_threads=1, timeout_s=5.0)
    cache.compile(SO)
    started = held_compiles(cache, monkeypatch, gate, "hung")
    hung = cache.compile_async(StructuredOutput("regex", "hung"))  # holds the only thread: a new compile queues
    assert until(lambda: started == ["hung"])
    pool = cache.pool
    in_close, submitted = threading.Event(), threading.Event()
    real_pool_close, real_ensure = pool.close, cache._ensure

    def pool_close(timeout_s: float) -> None:  # close() has marked the cache closed and copied its waiters
        in_close.set()
        submitted.wait(2.0)
        real_pool_close(timeout_s)

    closer = threading.Thread(target=cache.close, kwargs={"timeout_s": 0.2})

    def ensure() -> CompilePool:
        got = real_ensure()  # passes: not closed yet
        closer.start()
        assert in_close.wait(2.0)
        return got

    monkeypatch.setattr(pool, "close", pool_close)
    monkeypatch.setattr(cache, "_ensure", ensure)
    try:
        with pytest.raises(ClosedError, match="grammar cache is closed"):
            cache.compile_async(StructuredOutput("regex", "late"))
    finally:
        submitted.set()
        closer.join(3.0)
    assert "late" not in started and not cache._inflight
    with pytest.raises(ClosedError):
        hung.result(timeout=1)


def test_a_compile_pool_closed_under_the_cache_fails_its_waiters_with_closed_error(
    engine: LLMEngine, gate: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queued compile cancelled by its pool's close while callers wait for it fails them with ClosedError at once
    (they once waited out timeout_s and were told their response_format took too long), and a compile asked for
    afterwards fails with the pool's ClosedError, never "response_format: the compile could not start"."""
    cache = GrammarCache(engine.tokenizer.hf, engine.eos_token_ids, threads=1, max_threads=1, timeout_s=5.0)
    started = held_compiles(cache, monkeypatch, gate, "hung")
    hung = cache.compile_async(StructuredOutput("regex", "hung"))
    assert until(lambda: started == ["hung"])
    so = StructuredOutput("regex", "queued")
    queued = cache.compile_async(so)
    real_close = cache.pool.close
    real_close(0.1)
    with pytest.raises(ClosedError, match="its pool closed"):
        queued.result(timeout=1)
    assert cache.waiting(so) is None
    with pytest.raises(ClosedError, match="compile pool grammar is closed"):
        cache.compile_async(StructuredOutput("regex", "fresh")).result(timeout=1)
    gate.set()
    assert hung.result(timeout=5) is not None  # the running compile ended and settled its caller
    cache.close()


def test_timers_whose_thread_cannot_start_keep_nothing_and_start_on_the_next_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """call_later when its thread cannot start raises a clear error and keeps neither the unstarted thread (no timer
    ever fired again) nor the callback; the next call starts the thread; close() after a failed start returns (it
    once joined the unstarted thread and raised)."""
    fired: list[str] = []
    real_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        if self.name == "start-fail-timers":
            raise RuntimeError("can't start new thread")
        real_start(self)

    timers, never_started = Timers("start-fail-timers"), Timers("start-fail-timers")
    with monkeypatch.context() as m:
        m.setattr(threading.Thread, "start", start)
        for t in (timers, never_started):
            with pytest.raises(RuntimeError, match="timer thread start-fail-timers could not start: can't start new"):
                t.call_later(0.0, lambda: fired.append("refused"))
    never_started.close(timeout_s=0.1)
    timers.call_later(0.0, lambda: fired.append("later"))
    assert until(lambda: fired == ["later"], timeout_s=1.0)
    time.sleep(0.05)
    assert fired == ["later"]  # the refused callback never runs
    timers.close(timeout_s=0.5)


def test_a_pool_job_runs_when_its_stuck_check_cannot_start() -> None:
    """A worker whose stuck-check timer cannot start still runs the job and settles its future (the worker once
    died with the job marked running, its future never settled, the thread still counted live)."""

    class NoTimers(Timers):
        def call_later(self, delay_s: float, fn: Any) -> Any:
            raise RuntimeError("timer thread no-timers could not start: can't start new thread")

    pool = CompilePool(1, 1, 5.0, NoTimers())
    assert pool.submit(lambda: 7).result(timeout=1) == 7
    assert pool.submit(lambda: 8).result(timeout=1) == 8  # the same worker goes on
    pool.close()


def test_close_settles_every_waiter_even_when_a_pool_fails_to_close(
    engine: LLMEngine, gate: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop that raises in close() (here the compile pool's) still lets the deadline thread stop and every waiter
    fail with ClosedError; close then raises that error (it once stopped there, its waiters left waiting)."""
    cache = GrammarCache(engine.tokenizer.hf, engine.eos_token_ids, threads=1, max_threads=1, timeout_s=5.0)
    started = held_compiles(cache, monkeypatch, gate, "hung")
    hung = cache.compile_async(StructuredOutput("regex", "hung"))
    assert until(lambda: started == ["hung"])
    pool = cache.pool
    real_close = pool.close

    def broken(timeout_s: float) -> None:
        raise RuntimeError("pool close failed")

    monkeypatch.setattr(pool, "close", broken)
    with pytest.raises(RuntimeError, match="pool close failed"):
        cache.close(timeout_s=0.2)
    with pytest.raises(ClosedError, match="closed while this request waited"):
        hung.result(timeout=1)
    assert cache._timers._closed
    gate.set()
    real_close(1.0)


def test_a_replay_whose_deadline_cannot_start_fails_and_is_dropped(
    engine: LLMEngine, gate: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    """_on_compiled when the replay's deadline cannot be set (the timer thread cannot start): state_async's future
    fails with that error at once and the queued replay is cancelled (the error once escaped the compile's
    done-callback and the future waited, unbounded, behind the busy replay thread)."""
    cache = GrammarCache(
        engine.tokenizer.hf, engine.eos_token_ids, replay_timeout_s=0.7, replay_threads=1, max_replay_threads=1
    )
    cache.compile(SO)
    pool = cache._replays()
    busy = pool.submit(gate.wait)  # holds the only replay thread: the next replay queues
    jobs: list[Any] = []
    real_submit, real_call_later = pool.submit, cache._timers.call_later

    def submit(fn: Any) -> Any:
        jobs.append(real_submit(fn))
        return jobs[-1]

    def call_later(delay_s: float, fn: Any) -> Any:
        if delay_s == 0.7:  # the replay's deadline
            raise RuntimeError("timer thread grammar-deadlines could not start: can't start new thread")
        return real_call_later(delay_s, fn)

    monkeypatch.setattr(pool, "submit", submit)
    monkeypatch.setattr(cache._timers, "call_later", call_later)
    a = engine.tokenizer.hf.convert_tokens_to_ids("a")
    out = cache.state_async(SO, [a])
    with pytest.raises(RuntimeError, match="grammar-deadlines could not start"):
        out.result(timeout=1)
    assert len(jobs) == 1 and jobs[0].cancelled()
    gate.set()
    busy.result(timeout=1)
    cache.close()


def test_close_as_a_compile_ends_fails_its_resumed_request_with_closed_error(
    engine: LLMEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() lands while a resumed request's compile hands it on (its in-flight entry already gone): the request
    fails with ClosedError (once "response_format: the resumed output's replay could not start: ClosedError", which
    the gateway reports as the client's invalid response_format)."""
    cache = GrammarCache(engine.tokenizer.hf, engine.eos_token_ids)
    real_on = cache._on_compiled
    entered = threading.Event()

    def on_compiled(compiled: Any, out: Any, tokens: list[int], kind: str) -> None:
        entered.set()
        until(lambda: cache._closed, timeout_s=2.0)  # close() joins this compile thread meanwhile
        real_on(compiled, out, tokens, kind)

    monkeypatch.setattr(cache, "_on_compiled", on_compiled)
    a = engine.tokenizer.hf.convert_tokens_to_ids("a")
    out = cache.state_async(StructuredOutput("regex", "k+"), [a])
    assert entered.wait(5.0)
    closer = threading.Thread(target=cache.close, kwargs={"timeout_s": 1.0})
    closer.start()
    with pytest.raises(ClosedError):
        out.result(timeout=3)
    closer.join(3.0)


def test_state_async_futures_leave_the_pending_set_as_they_end(engine: LLMEngine) -> None:
    """close() fails state_async's futures still waiting; one that ended (settled or cancelled) leaves the set at once,
    held by its caller or not (a weak set kept every future its caller held, and GC could shrink it under close)."""
    cache = GrammarCache(engine.tokenizer.hf, engine.eos_token_ids)
    cache.compile(SO)
    a = engine.tokenizer.hf.convert_tokens_to_ids("a")
    done = cache.state_async(SO, [a])
    assert done.result(timeout=5).replayed == 1
    cancelled = cache.state_async(StructuredOutput("regex", "p+"), [a])
    assert cancelled.cancel()
    assert until(lambda: not cache._pending, timeout_s=1.0), cache._pending
    cache.close()


def test_a_compile_whose_deadline_cannot_start_fails_its_caller_and_is_dropped(
    engine: LLMEngine, gate: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    """compile_async when the caller's deadline cannot be set (the timer thread cannot start): its future fails with
    that error (compile_async once raised it, its waiter left on the compile with no bound), the waiter leaves the
    compile, and a queued compile nobody else waits for is cancelled."""
    cache = GrammarCache(engine.tokenizer.hf, engine.eos_token_ids, threads=1, max_threads=1, timeout_s=5.0)
    started = held_compiles(cache, monkeypatch, gate, "hung")
    hung = cache.compile_async(StructuredOutput("regex", "hung"))  # holds the only thread: the next compile queues
    assert until(lambda: started == ["hung"])

    def call_later(delay_s: float, fn: Any) -> Any:
        raise RuntimeError("timer thread grammar-deadlines could not start: can't start new thread")

    so = StructuredOutput("regex", "queued")
    with monkeypatch.context() as m:
        m.setattr(cache._timers, "call_later", call_later)
        waiter = cache.compile_async(so)
    with pytest.raises(RuntimeError, match="grammar-deadlines could not start"):
        waiter.result(timeout=1)
    assert cache.waiting(so) is None
    gate.set()
    assert hung.result(timeout=5) is not None
    time.sleep(0.1)
    assert started == ["hung"]  # the dropped compile never ran
    cache.close()
