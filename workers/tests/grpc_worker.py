"""A real gRPC worker (serve + build_engine) on a free port, for tests that talk to it through a WorkerStub."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from inlaid_worker.config import WorkerConfig
from inlaid_worker.gen.inlaid.v1 import worker_pb2_grpc
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
