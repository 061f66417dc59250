"""A real gRPC worker (serve + build_engine) on a free port, for tests that talk to it through a WorkerStub."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from inlaid_worker.config import WorkerConfig
from inlaid_worker.gen.inlaid.v1 import common_pb2, worker_pb2, worker_pb2_grpc
from inlaid_worker.server.app import RunningWorker, build_engine, serve


@contextmanager
def serving(model: Path, **options: Any) -> Iterator[tuple[Any, RunningWorker]]:
    """(stub, running worker) for the model with WorkerConfig options; stopped when the block ends."""
    cfg = WorkerConfig(model=str(model), port=0, **options)
    running = serve(cfg, build_engine(cfg, model), model)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield worker_pb2_grpc.WorkerStub(channel), running
    finally:
        channel.close()
        running.stop(grace=1)


def one_request(
    stub: Any, prompt: list[int], params: common_pb2.SamplingParams, request_id: str = "r"
) -> tuple[list[Any], Any]:
    """One Admit (the base model) on a Session of its own: (its deltas, its error or None), read until a delta with a
    finish reason or an error; AssertionError if the stream ends before either."""
    out: queue.Queue[Any] = queue.Queue()
    call = stub.Session(iter(out.get, None))
    admit = worker_pb2.Admit(request_id=request_id, model="", prompt_token_ids=prompt, sampling=params)
    out.put(worker_pb2.ControlMessage(admit=admit))
    got: list[Any] = []
    try:
        for ev in call:
            kind = ev.WhichOneof("kind")
            if kind == "error":
                return got, ev.error
            if kind == "delta":
                got.append(ev.delta)
                if ev.delta.finish_reason != common_pb2.FINISH_REASON_UNSPECIFIED:
                    return got, None
    finally:
        out.put(None)
    raise AssertionError("the stream ended early")
