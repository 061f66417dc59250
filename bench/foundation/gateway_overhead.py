"""Latency the gateway adds: a 1-token completion through the gateway's OpenAI HTTP API vs the same request
sent straight to the worker (Prepare + Admit on a long-lived Session stream), interleaved, same run.

Usage: .venv/bin/python bench/foundation/gateway_overhead.py [--n 100] [--out bench/results]
Needs `npx tsc -b tsconfig.build.json` (the gateway's dist), Postgres and Redis on their default ports.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import queue
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import grpc
from inlaid_worker.gen.inlaid.v1 import common_pb2, worker_pb2, worker_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "The capital of France is"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout}s")


def http_once(base: str, model: str) -> float:
    body = json.dumps({"model": model, "prompt": PROMPT, "max_tokens": 1, "temperature": 0}).encode()
    req = urllib.request.Request(f"{base}/v1/completions", body, {"content-type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(req, timeout=30) as r:
        json.loads(r.read())
    return time.perf_counter() - start


class DirectClient:
    def __init__(self, addr: str) -> None:
        self.stub = worker_pb2_grpc.WorkerStub(grpc.insecure_channel(addr))
        self.outbox: queue.Queue[worker_pb2.ControlMessage] = queue.Queue()
        self.events = self.stub.Session(iter(self.outbox.get, None))

    def once(self, model: str) -> float:
        sampling = common_pb2.SamplingParams(max_tokens=1, temperature=0.0)
        start = time.perf_counter()
        prep = self.stub.Prepare(worker_pb2.PrepareRequest(model=model, prompt=PROMPT, sampling=sampling))
        rid = uuid.uuid4().hex
        admit = worker_pb2.Admit(request_id=rid, model=model, prompt_token_ids=prep.prompt_token_ids, sampling=sampling)
        self.outbox.put(worker_pb2.ControlMessage(admit=admit))
        for ev in self.events:
            if ev.WhichOneof("kind") == "delta" and ev.delta.request_id == rid and ev.delta.finish_reason:
                return time.perf_counter() - start
        raise RuntimeError("session ended")


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--out", default=str(ROOT / "bench/results"))
    args = ap.parse_args()
    wport, hport, gport = free_port(), free_port(), free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "inlaid_worker.server", "--model", "smollm2", "--port", str(wport),
         "--kv-cache-bytes", str(32 << 20)], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    gw = None
    try:
        ready = json.loads(worker.stdout.readline())  # type: ignore[union-attr]
        model = ready["model"]
        genv = {**env, "PORT": str(hport), "GRPC_PORT": str(gport), "WORKER_ADDRS": f"127.0.0.1:{wport}",
                "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/inlaid_bench"}
        gw = subprocess.Popen(["node", str(ROOT / "apps/gateway/dist/main.js")], env=genv,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{hport}"
        wait_ready(f"{base}/readyz", 60)
        direct = DirectClient(f"127.0.0.1:{wport}")
        for _ in range(5):  # warm-up both paths
            http_once(base, model), direct.once(model)
        via_gw, via_worker = [], []
        for _ in range(args.n):
            via_gw.append(http_once(base, model))
            via_worker.append(direct.once(model))
    finally:
        for p in (gw, worker):
            if p is not None:
                p.terminate()
                p.wait(10)
    diffs = [a - b for a, b in zip(via_gw, via_worker)]
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cmd = " ".join(["python", *sys.argv])
    md = (
        f"# Latency added by the gateway ({date})\n\n- Command: `{cmd}`\n- Device: CPU ({platform.machine()}), "
        f"{os.cpu_count()} cores, worker on SmolLM2-135M-Instruct fp32, 1 thread\n- {args.n} interleaved pairs; "
        "each a 1-token greedy completion of a 6-token prompt (prefill + 1 token)\n\n"
        "| path | p50 ms | p90 ms | mean ms |\n|---|---|---|---|\n"
        f"| HTTP -> gateway -> worker | {pct(via_gw, .5):.1f} | {pct(via_gw, .9):.1f} | {statistics.mean(via_gw)*1000:.1f} |\n"
        f"| gRPC straight to the worker | {pct(via_worker, .5):.1f} | {pct(via_worker, .9):.1f} | {statistics.mean(via_worker)*1000:.1f} |\n"
        f"| added by the gateway (pairwise) | {pct(diffs, .5):.1f} | {pct(diffs, .9):.1f} | {statistics.mean(diffs)*1000:.1f} |\n"
    )
    out = Path(args.out)
    stamp = dt.date.today().isoformat()
    (out / f"gateway-overhead-{stamp}.md").write_text(md)
    (out / f"gateway-overhead-{stamp}.json").write_text(json.dumps(
        {"date": date, "command": cmd, "gateway_ms": [x * 1000 for x in via_gw],
         "worker_ms": [x * 1000 for x in via_worker]}, indent=1))
    print(md)


if __name__ == "__main__":
    main()
