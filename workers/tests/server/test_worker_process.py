"""`python -m inlaid_worker.server` as a process: the ready line, serving, graceful SIGTERM, bad flags."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import grpc
from factories import make_tiny_llama
from inlaid_worker.gen.inlaid.v1 import worker_pb2, worker_pb2_grpc


def test_worker_process_announces_ready_and_stops_on_sigterm(tmp_path: Path) -> None:
    model = make_tiny_llama(tmp_path / "model")
    cmd = [
        sys.executable,
        "-m",
        "inlaid_worker.server",
        "--model",
        str(model),
        "--port",
        "0",
        "--kv-cache-bytes",
        "1000000",
        "--block-size",
        "8",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        assert ready["event"] == "ready" and ready["port"] > 0
        with grpc.insecure_channel(f"127.0.0.1:{ready['port']}") as channel:
            info = worker_pb2_grpc.WorkerStub(channel).GetInfo(worker_pb2.InfoRequest(), timeout=10)
        assert info.base_model == "model" and info.state.block_size == 8
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()


def test_bad_flags_exit_with_a_message(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "inlaid_worker.server", "--model", str(tmp_path), "--port", "0"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "no config.json" in res.stderr
