"""GrammarCache.close / CompilePool.close (the worker's shutdown): the compile, replay and deadline threads end within
a bound, a hung compile does not hold up the caller, every future still waiting fails with ClosedError (none is left
for nobody: a state_async whose replay was queued is settled by close itself, since its queued job only settles it
when it runs), a second close is a no-op, and later calls raise ClosedError. RunningWorker.stop closes the cache."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from engine_helpers import engine_for
from factories import make_tiny_llama
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


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """Held compiles and replays wait on it; opened at teardown so no thread is left blocked."""
    event = threading.Event()
    yield event
    event.set()


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
    started: list[str] = []
    real_compile = cache._compile_now

    def compile_now(so: StructuredOutput) -> Any:
        started.append(so.spec)
        if so.spec == "hung":
            gate.wait()
        return real_compile(so)

    monkeypatch.setattr(cache, "_compile_now", compile_now)
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
    """The worker's shutdown (RunningWorker.stop, after the server and the engine loop stop) closes the cache."""
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

        def stop(self) -> None:
            calls.append("loop")

    RunningWorker(Server(), Loop(), 0).stop(grace=0.1)  # type: ignore[arg-type]
    assert calls == ["server", "loop", "grammars"]
