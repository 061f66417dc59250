"""Many tasks: 1,000 adapters registered through the worker's gRPC LoadAdapter keep memory bounded (host tier,
at most `max_gpu_adapters` resident in device slots), every registration stays fast, and requests for random
registered adapters, interleaved with the registrations, keep completing without errors."""

from __future__ import annotations

import queue
import random
import shutil
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch
from factories import make_random_adapter, make_tiny_llama
from inlaid_worker.config import WorkerConfig
from inlaid_worker.engine.factory import EngineOptions, create_engine
from inlaid_worker.gen.inlaid.v1 import common_pb2, worker_pb2, worker_pb2_grpc
from inlaid_worker.server.app import RunningWorker, serve
from safetensors.torch import load_file, save_file

N_ADAPTERS = 1000
SLOTS = 8  # device adapter slots (engine option max_gpu_adapters)
WARMUP = 50  # registrations before the RSS baseline (allocator arenas, gRPC buffers, first-call caches)
# Allowed bytes per adapter beyond its own weights (tensor headers, dicts, cards, gRPC leftovers): measured
# ~21 KiB; a second full copy per adapter (a device slot for everyone, i.e. no LRU) would exceed the bound.
PER_ADAPTER_OVERHEAD = 20 << 10
RSS_SLACK = 6 << 20  # allocator noise over the whole run


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _write_adapters(root: Path, model: Path, n: int) -> tuple[list[Path], int]:
    """n PEFT adapters (rank 8 on q_proj) with distinct random weights; returns their dirs and weight bytes."""
    proto = make_random_adapter(root / "proto", model, rank=8, alpha=16, targets=["q_proj"], seed=0)
    tensors = load_file(str(proto / "adapter_model.safetensors"))
    nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
    gen = torch.Generator().manual_seed(1)
    dirs = []
    for i in range(n):
        d = root / f"t{i:04d}"
        d.mkdir()
        shutil.copy(proto / "adapter_config.json", d / "adapter_config.json")
        save_file({k: 0.05 * torch.randn(v.shape, generator=gen) for k, v in tensors.items()},
                  str(d / "adapter_model.safetensors"))
        dirs.append(d)
    return dirs, nbytes


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, RunningWorker, list[Path], int]]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("many")
    model = make_tiny_llama(root / "model", hidden=128, intermediate=256, max_positions=512)
    dirs, nbytes = _write_adapters(root / "adapters", model, N_ADAPTERS)
    cfg = WorkerConfig(model=str(model), port=0, kv_cache_bytes=4 << 20)
    engine = create_engine(model, EngineOptions(kv_cache_bytes=4 << 20, max_gpu_adapters=SLOTS))
    running = serve(cfg, engine, model)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    yield worker_pb2_grpc.WorkerStub(channel), running, dirs, nbytes
    channel.close()
    running.stop(grace=1)


class Load:
    """One Session keeping `width` short requests in flight, each for a random adapter registered so far."""

    def __init__(self, stub: Any, registered: list[str], width: int = 4) -> None:
        self._out: queue.Queue[Any] = queue.Queue()
        self._registered, self._width = registered, width
        self.sent = self.finished = self.errors = 0
        self.models: set[str] = set()
        self._rng = random.Random(0)
        self._stop = threading.Event()
        self._call = stub.Session(iter(self._out.get, None))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _admit(self) -> None:
        model = self._rng.choice(self._registered)
        self.models.add(model)
        params = common_pb2.SamplingParams(max_tokens=4, ignore_eos=True)
        admit = worker_pb2.Admit(request_id=f"r{self.sent}", model=model, prompt_token_ids=[5, 6, 7], sampling=params)
        self._out.put(worker_pb2.ControlMessage(admit=admit))
        self.sent += 1

    def _run(self) -> None:
        for _ in range(self._width):
            self._admit()
        for ev in self._call:
            kind = ev.WhichOneof("kind")
            if kind == "error":
                self.errors += 1
            elif kind == "delta" and ev.delta.finish_reason != common_pb2.FINISH_REASON_UNSPECIFIED:
                self.finished += 1
            else:
                continue
            if self._stop.is_set():
                if self.finished + self.errors == self.sent:
                    self._out.put(None)
                continue
            self._admit()

    def stop(self, timeout: float = 20.0) -> None:
        self._stop.set()
        self._thread.join(timeout)


def test_thousand_adapters_bounded_memory_fast_registration_serving_continues(worker: Any) -> None:
    stub, running, dirs, nbytes = worker
    registered: list[str] = []
    latencies: list[float] = []

    def register(i: int) -> None:
        t0 = time.perf_counter()
        card = stub.LoadAdapter(worker_pb2.LoadAdapterRequest(name=f"t{i:04d}", path=str(dirs[i])))
        latencies.append(time.perf_counter() - t0)
        assert card.id == f"t{i:04d}" and card.rank == 8
        registered.append(card.id)

    for i in range(WARMUP):
        register(i)
    load = Load(stub, registered)
    rss0 = _rss()
    for i in range(WARMUP, N_ADAPTERS):
        register(i)
    rss1 = _rss()
    time.sleep(0.3)  # a few more steps on the last adapters
    load.stop()

    t0 = time.perf_counter()
    info = stub.GetInfo(worker_pb2.InfoRequest())
    info_s = time.perf_counter() - t0
    stats = running.loop.engine.runner.adapter_stats()
    growth, n = rss1 - rss0, N_ADAPTERS - WARMUP
    bound = n * (nbytes + PER_ADAPTER_OVERHEAD) + RSS_SLACK
    early, late = statistics.median(latencies[:100]), statistics.median(latencies[-100:])
    print(f"\nadapter weights {nbytes} B; RSS growth {growth / n:.0f} B/adapter over {n} ({growth >> 20} MiB, "
          f"bound {bound >> 20} MiB); LoadAdapter median first/last 100 {early * 1e3:.1f}/{late * 1e3:.1f} ms, "
          f"max {max(latencies) * 1e3:.1f} ms; GetInfo {info_s * 1e3:.1f} ms ({len(info.models)} cards); "
          f"requests {load.finished} finished / {load.errors} errors over {len(load.models)} adapters; {stats}")

    assert len(info.models) == N_ADAPTERS + 1  # every adapter plus the base
    assert stats.registered == N_ADAPTERS and stats.resident <= SLOTS == stats.capacity
    assert len(running.loop.engine.runner.adapter_slots) <= SLOTS
    assert growth <= bound, f"RSS grew {growth} B for {n} adapters of {nbytes} B (bound {bound})"
    assert load.errors == 0
    assert load.finished >= 50 and len(load.models) >= 40  # served while registering, across many adapters
    assert stats.misses > SLOTS and stats.evictions > 0  # requests really went through the LRU
    assert max(latencies) < 1.0 and late < 3 * early + 0.005  # no registration stalls, no O(n) growth
    assert info_s < 1.0
