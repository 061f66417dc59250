"""Giving freed memory back to the OS (onboard/memory.py): glibc's malloc_trim really returns free heap pages;
the quantizer child runs its release steps after each layer it sent; the manager trims once a job's host
copies are dropped (committed or restored)."""

from __future__ import annotations

import ctypes
import gc
import pickle
import weakref
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from inlaid_worker.onboard import manager as manager_mod
from inlaid_worker.onboard import memory
from inlaid_worker.onboard import quantizer_process as qp
from inlaid_worker.onboard.background import BackgroundLimits
from inlaid_worker.quant import LayerResult

BLOCK = 64 << 10  # under glibc's mmap threshold: served from the heap
BLOCKS = 1600  # 100 MiB, half of it freed


def _rss_anon_mib() -> float:
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("RssAnon:")) / 1024


@pytest.mark.skipif(memory._malloc_trim() is None, reason="the C library has no malloc_trim (not glibc)")
def test_trim_heap_returns_free_heap_pages_to_the_os() -> None:
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = []
    for _ in range(BLOCKS):
        blocks.append(libc.malloc(BLOCK))
        ctypes.memset(blocks[-1], 1, BLOCK)  # resident
    freed, pins = blocks[::2], blocks[1::2]  # every other block stays live: the freed ones cannot merge
    try:
        for b in freed:
            libc.free(b)
        held = _rss_anon_mib()
        assert memory.trim_heap()
        released = held - _rss_anon_mib()
    finally:
        for p in pins:
            libc.free(p)
    mib = len(freed) * BLOCK / (1 << 20)
    assert released > 0.6 * mib, f"only {released:.0f} MiB of the {mib:.0f} MiB freed returned"

def test_release_runs_a_collection_and_refuses_unknown_steps() -> None:
    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # type: ignore[attr-defined]  # a cycle: only a collection frees it
    ref = weakref.ref(a)
    del a, b
    was = gc.isenabled()
    gc.disable()
    try:
        assert ref() is not None
        memory.release(["gc"])
        assert ref() is None
    finally:
        if was:
            gc.enable()
    with pytest.raises(ValueError, match="release steps must be among gc, trim, got 'free'"):
        memory.release(["free"])


class _Conn:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    def send_bytes(self, data: bytes) -> None:
        self.sent.append(pickle.loads(data))

    def close(self) -> None:
        pass


def test_the_child_releases_memory_after_each_layer_it_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = _Conn()
    calls: list[tuple[tuple[str, ...], int]] = []  # (steps, messages sent when they ran)
    monkeypatch.setattr(qp, "release", lambda steps: calls.append((tuple(steps), len(conn.sent))))

    def fake_update(*_args: Any, on_layer: Any, **_kw: Any) -> None:
        for i in range(3):
            on_layer(LayerResult(i, 3, {}, {}, None, {}, 0.0))

    import inlaid_worker.quant as quant

    monkeypatch.setattr(quant, "update_checkpoint", fake_update)
    payload = pickle.dumps({"ckpt": "c", "model_dir": "m", "out": "o", "add": [], "remove": [], "device": "cpu",
                            "limits": BackgroundLimits(threads=1), "reuse": None, "after_layer": ("gc", "trim")})
    qp._child(conn, payload)  # type: ignore[arg-type]
    assert [m[0] for m in conn.sent] == ["layer", "layer", "layer", "done"]
    assert calls == [(("gc", "trim"), 1), (("gc", "trim"), 2), (("gc", "trim"), 3)]


def test_a_quantizer_process_refuses_unknown_release_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qp, "AFTER_LAYER", ("trim", "compact"))
    with pytest.raises(ValueError, match=r"AFTER_LAYER steps must be among gc, trim, got \['compact'\]"):
        qp.QuantizerProcess(Path("c"), Path("m"), Path("o"), [], [], "cpu", BackgroundLimits(threads=1))


def _done(fn: Any) -> Future[Any]:
    fut: Future[Any] = Future()
    fut.set_result(fn(SimpleNamespace(base_weights_changed=lambda: None)))
    return fut


def test_the_manager_drops_host_copies_and_releases_memory_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    m = manager_mod.OnboardManager(_done, SimpleNamespace(weights=SimpleNamespace(layers=())), None,  # type: ignore[arg-type]
                                   "model", None)
    released: list[tuple[str, ...]] = []
    monkeypatch.setattr(manager_mod, "release", lambda steps: released.append(tuple(steps)))
    assert manager_mod.AFTER_JOB == ()  # off by default: malloc_trim would hold the engine thread's arena
    m._undo = {0: "host copy", 1: "host copy"}
    m.commit_layers()
    assert m._undo == {}
    m._undo = {0: "host copy"}
    m.restore_layers([])
    m.release_job_memory()
    assert m._undo == {} and released == []
    monkeypatch.setattr(manager_mod, "AFTER_JOB", ("trim",))
    m.release_job_memory()
    assert released == [("trim",)]


def test_a_failing_release_is_logged_not_raised(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    m = manager_mod.OnboardManager(_done, SimpleNamespace(weights=SimpleNamespace(layers=())), None,  # type: ignore[arg-type]
                                   "model", None)

    def boom(steps: Any) -> None:
        raise ValueError("no")

    monkeypatch.setattr(manager_mod, "AFTER_JOB", ("trim",))
    monkeypatch.setattr(manager_mod, "release", boom)
    m.release_job_memory()  # must not raise: the job's outcome is already published
    assert "releasing the job's memory failed" in caplog.text
