"""refuse_new publishes the draining state itself, on the caller's thread: latest_state and every open Session see it
before the call returns, even while the engine loop is busy (a long step under load). Before, the loop thread published
it after its current step (0.5-1.8 s mid-step under load)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from factories import make_tiny_llama
from grpc_worker import serving
from inlaid_worker.gen.inlaid.v1 import worker_pb2

VOCAB = 300


@pytest.fixture()
def worker(tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    with serving(make_tiny_llama(tmp_path / "model", vocab=VOCAB), kv_cache_bytes=1 << 20) as (stub, running):
        yield stub, running


def _reader(call: Any) -> queue.Queue[Any]:
    """The Session's events on a queue (read on a thread of its own), so the test can wait with a timeout."""
    events: queue.Queue[Any] = queue.Queue()

    def read() -> None:
        try:
            for ev in call:
                events.put(ev)
        except Exception as exc:  # the channel closed at the end of the test
            events.put(exc)

    threading.Thread(target=read, daemon=True).start()
    return events


def test_refuse_new_publishes_draining_before_it_returns_while_the_loop_is_busy(worker: tuple[Any, Any]) -> None:
    stub, running = worker
    out: queue.Queue[Any] = queue.Queue()
    events = _reader(stub.Session(iter(out.get, None)))
    first = events.get(timeout=10)
    assert first.WhichOneof("kind") == "state" and not first.state.draining
    busy, release = threading.Event(), threading.Event()

    def long_step(engine: Any) -> None:  # holds the loop thread, as a long step under load does
        busy.set()
        release.wait(20)

    running.loop.call(long_step)
    assert busy.wait(10)
    try:
        t0 = time.perf_counter()
        running.loop.refuse_new()
        assert running.loop.latest_state.draining  # before: False until the loop's next publish (after the step)
        while True:  # the Session is told while the loop is still held (before: only after release)
            ev = events.get(timeout=2)
            assert not isinstance(ev, Exception), ev
            if ev.WhichOneof("kind") == "state" and ev.state.draining:
                break
        seen_ms = (time.perf_counter() - t0) * 1000
        assert not release.is_set()
        print(f"refuse_new -> draining state on the Session: {seen_ms:.2f} ms (engine loop busy)")
        assert stub.GetInfo(worker_pb2.InfoRequest()).state.draining
    finally:
        release.set()
        out.put(None)


def test_a_session_opened_after_refuse_new_starts_draining(worker: tuple[Any, Any]) -> None:
    """A Session the loop opens after refuse_new gets the draining state as its first event (latest_state)."""
    stub, running = worker
    running.loop.refuse_new()
    out: queue.Queue[Any] = queue.Queue()
    events = _reader(stub.Session(iter(out.get, None)))
    try:
        first = events.get(timeout=10)
        assert first.WhichOneof("kind") == "state" and first.state.draining
    finally:
        out.put(None)
