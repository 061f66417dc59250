"""A device fault first seen when an async step's tokens are read (the next step already launched ahead) must not kill
the engine loop: every running request gets an AdmitError and the loop thread lives on, as with the synchronous
engine (review of session 11's async scheduling)."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import FAULT, drain_outbox, engine_for
from factories import make_tiny_llama
from inlaid_worker.engine import async_step
from inlaid_worker.engine.sampling_params import SamplingParams
from inlaid_worker.server.engine_loop import EngineLoop


@contextmanager
def _live_loop(engine: Any) -> Iterator[EngineLoop]:
    """A started engine loop on `engine`; when the block ends without an error, its thread must still live (checked
    0.3 s later); stopped in every case."""
    loop = EngineLoop(engine)
    loop.start()
    try:
        yield loop
        time.sleep(0.3)
        assert loop._thread.is_alive()  # noqa: SLF001
    finally:
        loop.stop(1.0)


def _failed(events: list[Any]) -> set[str]:
    """The request ids of the AdmitError events."""
    return {ev.request_id for ev in events if type(ev).__name__ == "AdmitError"}


@pytest.mark.parametrize("async_on", [False, True])
def test_sticky_fault_fails_the_requests_and_the_loop_lives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, async_on: bool
) -> None:
    model = make_tiny_llama(tmp_path / "m")
    engine = engine_for(model, kv_cache_bytes=1 << 20, max_num_seqs=4)
    engine.async_scheduling = async_on
    state = {"reads": 0, "execs": 0, "faulted": False}
    real_read, real_exec = async_step.PendingCopy.read, engine.runner.execute

    def read(self: Any) -> Any:  # the fault shows first at a token read (event.synchronize on CUDA)
        state["reads"] += 1
        if state["faulted"] or state["reads"] >= 6:
            state["faulted"] = True
            raise RuntimeError(FAULT)
        return real_read(self)

    def execute(step: Any) -> Any:  # ... and is sticky: every later device call fails too
        state["execs"] += 1
        if state["faulted"] or (not async_on and state["execs"] > 6):
            state["faulted"] = True
            raise RuntimeError(FAULT)
        return real_exec(step)

    monkeypatch.setattr(async_step.PendingCopy, "read", read)
    monkeypatch.setattr(engine.runner, "execute", execute)
    if hasattr(engine.runner, "execute_device"):
        monkeypatch.setattr(engine.runner, "execute_device", execute)
    with _live_loop(engine) as loop:
        sid, outbox = loop.open_session()
        params = SamplingParams(temperature=0, max_tokens=30, ignore_eos=True)
        for rid in ("a", "b"):
            loop.admit(sid, rid, engine.tokenizer.encode_prompt("Hello there"), params, "")
        failed = _failed(drain_outbox(outbox, lambda evs: _failed(evs) == {"a", "b"}))
        assert state["faulted"]
        assert failed == {"a", "b"}


def _faulting_abort_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, dict[str, bool]]:
    """An async engine whose token reads fault first inside an abort (the read of the step in flight), then stay
    faulty; state["faulted"] says whether it happened."""
    model = make_tiny_llama(tmp_path / "m")
    engine = engine_for(model, kv_cache_bytes=1 << 20, max_num_seqs=4)
    engine.async_scheduling = True
    state = {"in_abort": False, "faulted": False}
    real_read, real_abort = async_step.PendingCopy.read, engine.abort_request

    def read(self: Any) -> Any:
        if state["faulted"] or state["in_abort"]:
            state["faulted"] = True
            raise RuntimeError(FAULT)
        return real_read(self)

    def abort(rid: str) -> bool:
        state["in_abort"] = True
        try:
            return real_abort(rid)
        finally:
            state["in_abort"] = False

    monkeypatch.setattr(async_step.PendingCopy, "read", read)
    monkeypatch.setattr(engine, "abort_request", abort)
    return engine, state


def _two_running(loop: EngineLoop, engine: Any) -> tuple[int, queue.Queue[Any]]:
    """A session with requests "a" and "b" admitted and a few tokens out: steps go ahead, one is in flight."""
    sid, outbox = loop.open_session()
    params = SamplingParams(temperature=0, max_tokens=200, ignore_eos=True)
    for rid in ("a", "b"):
        loop.admit(sid, rid, engine.tokenizer.encode_prompt("Hello there"), params, "")
    tokens = 0
    while tokens < 6:
        ev = outbox.get(timeout=20)
        tokens += getattr(ev, "token_ids", None) is not None
    return sid, outbox


def test_fault_first_seen_by_an_abort_fails_the_others_and_the_loop_lives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An abort reads the step in flight first (async scheduling): when that read is where a device fault shows, the
    loop must fail the other running requests (AdmitError) and live on, not die inside the command (review)."""
    engine, state = _faulting_abort_engine(tmp_path, monkeypatch)
    with _live_loop(engine) as loop:
        sid, outbox = _two_running(loop, engine)
        loop.abort(sid, "a")
        failed = _failed(drain_outbox(outbox, lambda evs: "b" in _failed(evs)))
        assert state["faulted"]
        assert "b" in failed


def test_a_fault_at_a_session_close_still_closes_the_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review of session 12: closing a session with abort reads the step in flight; when that read faults, the session
    must still drain and close (its outbox ends with None, the loop forgets it), not stay open forever."""
    engine, state = _faulting_abort_engine(tmp_path, monkeypatch)
    with _live_loop(engine) as loop:  # its thread checked 0.3 s after the session closed (no wait before)
        sid, outbox = _two_running(loop, engine)
        loop.close_session(sid, abort=True)
        events = drain_outbox(outbox, lambda evs: bool(evs) and evs[-1] is None)
        assert state["faulted"]
        assert events and events[-1] is None, events[-5:]  # the session closed
        assert sid not in loop._sessions  # noqa: SLF001
