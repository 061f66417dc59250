"""SIGTERM -> WorkerState.draining latency of a real worker process, as the gateway's Session sees it.

Starts `python -m inlaid_worker.server` on a small random Llama (CPU), opens a Session (as the gateway does), optionally
keeps the engine loop busy with long prefills (`--busy N`: N requests of `--prompt` tokens each, admitted just before
the signal), sends SIGTERM and times the arrival of the first state with `draining` set on the Session. Prints one line
per trial and the summary. Usage:

  PYTHONPATH=workers:workers/tests .venv/bin/python bench/engine/draining_latency.py --trials 5 --busy 0
  PYTHONPATH=workers:workers/tests .venv/bin/python bench/engine/draining_latency.py --trials 5 --busy 4
"""

from __future__ import annotations

import argparse
import json
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
from factories import make_tiny_llama
from inlaid_worker.gen.inlaid.v1 import common_pb2, worker_pb2, worker_pb2_grpc


def trial(model: Path, busy: int, prompt: int) -> tuple[float, bool]:
    """(ms from SIGTERM to the draining state on the Session, whether a request was still running then)."""
    cmd = [
        sys.executable,
        "-m",
        "inlaid_worker.server",
        "--model",
        str(model),
        "--port",
        "0",
        "--kv-cache-bytes",
        str(256 << 20),
        "--block-size",
        "16",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        port = json.loads(proc.stdout.readline())["port"]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = worker_pb2_grpc.WorkerStub(channel)
            out: queue.Queue[Any] = queue.Queue()
            events: queue.Queue[tuple[float, Any]] = queue.Queue()

            def read() -> None:
                try:
                    for ev in stub.Session(iter(out.get, None)):
                        events.put((time.perf_counter(), ev))
                except grpc.RpcError:
                    pass
                events.put((time.perf_counter(), None))

            threading.Thread(target=read, daemon=True).start()
            _, first = events.get(timeout=30)  # the Session's first state
            if first is None or first.WhichOneof("kind") != "state":
                raise RuntimeError(f"the Session did not start with a state: {first}")
            for i in range(busy):
                ids = [(7 * i + j) % 300 + 3 for j in range(prompt)]
                sampling = common_pb2.SamplingParams(max_tokens=64, temperature=0)
                out.put(
                    worker_pb2.ControlMessage(
                        admit=worker_pb2.Admit(request_id=f"b{i}", prompt_token_ids=ids, sampling=sampling)
                    )
                )
            if busy:
                while True:  # the loop is stepping: the first delta of any request
                    _, ev = events.get(timeout=60)
                    if ev is not None and ev.WhichOneof("kind") == "delta":
                        break
            t0 = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            running = False
            while True:
                try:
                    at, ev = events.get(timeout=60)
                except queue.Empty:
                    raise RuntimeError("no draining state within 60 s of SIGTERM") from None
                if ev is None:
                    raise RuntimeError("the Session ended before a draining state")
                if ev.WhichOneof("kind") == "state" and ev.state.draining:
                    running = ev.state.running > 0
                    out.put(None)
                    return (at - t0) * 1000, running
    finally:
        proc.kill()
        proc.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--busy", type=int, default=0, help="requests admitted before the signal (0: idle worker)")
    ap.add_argument("--prompt", type=int, default=1500, help="prompt tokens of each busy request")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny_llama(
            Path(tmp) / "model", hidden=256, layers=8, heads=8, kv_heads=4, intermediate=768, max_positions=4096
        )
        times = []
        for i in range(args.trials):
            ms, running = trial(model, args.busy, args.prompt)
            times.append(ms)
            print(f"trial {i}: SIGTERM -> draining state {ms:.1f} ms (requests still running: {running})", flush=True)
    print(
        f"busy={args.busy} prompt={args.prompt}: median {statistics.median(times):.1f} ms, "
        f"min {min(times):.1f}, max {max(times):.1f} over {len(times)} trials"
    )


if __name__ == "__main__":
    main()
