"""How re-quantization children start (quantizer_process.py): from a fork server that preloaded the heavy
model-independent modules without initialising CUDA, or spawned (--quantizer-start spawn); a child
killed before it says a word is reported with its exit code either way.

This module imports only the standard library and pytest at the top: the probe below runs in a child forked
from the fork server, which imports this module to find it, so what the probe sees loaded came from there."""

from __future__ import annotations

import os
import signal
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest


def _probe(conn: Connection) -> None:
    """In the child: what it inherited from the fork server (its parent)."""
    preloaded = {m: m in sys.modules for m in ("torch", "transformers", "inlaid_worker.quant")}
    maps = Path(f"/proc/{os.getppid()}/maps").read_text()
    status = Path(f"/proc/{os.getppid()}/status").read_text()
    server_threads = int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))
    import torch

    torch.set_num_threads(2)
    x = torch.ones(256, 256)
    got = {
        "preloaded": preloaded,
        "server_maps_libtorch": "libtorch" in maps,
        "server_threads": server_threads,  # a fork copies only the forking thread: any other one's locks stay held
        # a CUDA build of torch maps the driver library at import on a GPU host; what must not happen before the
        # fork is CUDA's initialisation (a forked child could not use CUDA then)
        "cuda_initialized": torch.cuda.is_initialized(),
        "bad_fork": torch.cuda._is_in_bad_fork(),
        "matmul": float((x @ x)[0, 0]),  # an intra-op parallel op runs (no thread pool inherited mid-state)
    }
    # on a GPU host the child itself can use CUDA (as a re-quantization on the GPU does)
    got["cuda_matmul"] = float((x.cuda() @ x.cuda())[0, 0]) if torch.cuda.is_available() else None
    conn.send(got)
    conn.close()


def test_the_start_method_is_forkserver_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """The method comes from WorkerConfig.quantizer_start (read once at start-up), not from the environment."""
    from inlaid_worker.onboard.quantizer_process import child_context

    monkeypatch.setenv("INLAID_QUANTIZER_START", "spawn")  # read by config.load_config only
    assert child_context().get_start_method() == "forkserver"
    assert child_context("spawn").get_start_method() == "spawn"
    with pytest.raises(ValueError, match="must be one of forkserver, spawn, got 'fork'"):
        child_context("fork")


def test_the_worker_config_reaches_the_quantizer_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The manager (given cfg.quantizer_start by onboard/setup.py) starts its QuantizerProcess with it."""
    from inlaid_worker.onboard import manager as manager_mod

    seen: list[str] = []

    class FakeProcess:
        def __init__(self, *args: Any, start: str = "forkserver") -> None:
            seen.append(start)

        def layers(self) -> Any:
            return iter(())

        def close(self) -> None:
            pass

    monkeypatch.setattr(manager_mod, "QuantizerProcess", FakeProcess)
    monkeypatch.setattr(manager_mod, "packing_of", lambda ckpt: (128, True))
    m = manager_mod.OnboardManager(lambda fn: None, None, None, "model", None,  # type: ignore[arg-type]
                                   quantizer_start="spawn")
    m._requantize(None, Path("ckpt"), Path("out"), [], [], [])  # type: ignore[arg-type]
    assert seen == ["spawn"]


def test_the_fork_server_preloads_torch_and_the_quantizer_without_initialising_cuda() -> None:
    from inlaid_worker.onboard.quantizer_process import child_context

    ctx = child_context("forkserver")
    recv, send = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_probe, args=(send,), daemon=True)
    p.start()
    send.close()
    try:
        got: dict[str, Any] = recv.recv()
    finally:
        p.join(30)
    assert p.exitcode == 0
    import torch

    assert got == {
        "preloaded": {"torch": True, "transformers": True, "inlaid_worker.quant": True},
        "server_maps_libtorch": True, "server_threads": 1,
        "cuda_initialized": False, "bad_fork": False, "matmul": 256.0,
        "cuda_matmul": 256.0 if torch.cuda.is_available() else None,
    }


def test_a_child_killed_before_its_first_word_is_reported_with_its_exit_code(tmp_path: Path) -> None:
    from inlaid_worker.onboard.background import BackgroundLimits
    from inlaid_worker.onboard.quantizer_process import QuantizerProcess

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    os.mkfifo(ckpt / "config.json")  # the child's first read (plan_update) blocks here: it is alive and silent
    q = QuantizerProcess(ckpt, tmp_path / "model", tmp_path / "out", [], [], "cpu", BackgroundLimits(threads=1))
    try:
        assert type(q._proc).__name__ == "ForkServerProcess"
        os.kill(q._proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
        with pytest.raises(RuntimeError, match=r"the quantizer process died \(exit code -9\)"):
            next(q.layers())
    finally:
        q.close()
