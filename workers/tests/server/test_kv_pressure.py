"""Fault: a worker out of KV memory. Through the real gRPC Session, requests on a worker with a KV cache far
too small for all of them are preempted (recompute) and resumed, never dropped, and their greedy outputs
are identical to a worker with plenty of KV."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch
from factories import make_random_adapter, make_tiny_llama
from inlaid_worker.config import WorkerConfig
from inlaid_worker.gen.inlaid.v1 import common_pb2, worker_pb2, worker_pb2_grpc
from inlaid_worker.server.app import build_engine, serve

MAX_TOKENS = 40
REQUESTS = [("task-a", 0), ("task-b", 1), ("", 2), ("task-a", 3), ("task-b", 4), ("", 5)]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("kv")
    model = make_tiny_llama(root / "model", max_positions=512)
    make_random_adapter(root / "adapters" / "task-a", model, rank=4, alpha=8, targets=["q_proj", "v_proj"], seed=1)
    make_random_adapter(root / "adapters" / "task-b", model, rank=8, alpha=16, targets=["up_proj"], seed=2)
    return model, root / "adapters"


def run_all(model: Path, adapters: Path, kv_bytes: int) -> tuple[dict[str, list[int]], dict[str, int], int, int]:
    """Admits every request at once on one Session; returns tokens and finish reason per request."""
    cfg = WorkerConfig(model=str(model), adapters_dir=str(adapters), port=0, kv_cache_bytes=kv_bytes, block_size=16)
    engine = build_engine(cfg, model)
    running = serve(cfg, engine, model)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        stub = worker_pb2_grpc.WorkerStub(channel)
        out: queue.Queue[Any] = queue.Queue()
        call = stub.Session(iter(out.get, None))
        for model_id, i in REQUESTS:
            prompt = [(7 * i + j) % 200 + 3 for j in range(24)]
            params = common_pb2.SamplingParams(max_tokens=MAX_TOKENS, ignore_eos=True, temperature=0.0)
            admit = worker_pb2.Admit(request_id=f"r{i}", model=model_id, prompt_token_ids=prompt, sampling=params)
            out.put(worker_pb2.ControlMessage(admit=admit))
        tokens: dict[str, list[int]] = {f"r{i}": [] for _, i in REQUESTS}
        finish: dict[str, int] = {}
        events: Iterator[Any] = iter(call)
        while len(finish) < len(REQUESTS):
            ev = next(events)
            kind = ev.WhichOneof("kind")
            assert kind != "error", ev
            if kind == "delta":
                tokens[ev.delta.request_id] += list(ev.delta.token_ids)
                if ev.delta.finish_reason != common_pb2.FINISH_REASON_UNSPECIFIED:
                    finish[ev.delta.request_id] = ev.delta.finish_reason
        out.put(None)
        return tokens, finish, engine.num_preemptions, engine.limits.num_kv_blocks
    finally:
        channel.close()
        running.stop(grace=1)


def test_out_of_kv_requests_are_preempted_resumed_and_identical(models: tuple[Path, Path]) -> None:
    model, adapters = models
    torch.set_num_threads(1)
    plenty, plenty_finish, plenty_preempt, plenty_blocks = run_all(model, adapters, 8 << 20)
    assert plenty_preempt == 0
    bytes_per_block = (8 << 20) // plenty_blocks
    # Each request needs ceil((24 + 40) / 16) = 4 blocks; 6 requests need 24; give 8.
    tight, tight_finish, tight_preempt, tight_blocks = run_all(model, adapters, 8 * bytes_per_block + 1)
    assert tight_blocks <= 8
    assert tight_preempt > 0
    assert set(tight_finish.values()) == {common_pb2.FINISH_REASON_LENGTH}
    assert tight_finish == plenty_finish
    assert all(len(t) == MAX_TOKENS for t in tight.values())
    assert tight == plenty
