"""Resuming a shared re-quantization whose quantizer died (or failed) after k of n layers: the next owner reuses
the k layers staged in the store (same run inputs, sha256 checked), quantizes only the n - k others, and the
published version is bit-identical to an uninterrupted run; a follower that already swapped the k layers keeps
them. Staged layers that are corrupt or come from other inputs (another task set, other calibration data)
are not reused."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from inlaid_worker.onboard import distribute
from inlaid_worker.onboard.background import BackgroundLimits
from inlaid_worker.onboard.job import RequantizeJob
from inlaid_worker.onboard.layer_store import LayerStore, Manifest, StagingWriter, pack_layer
from inlaid_worker.onboard.manager import AddRequest
from inlaid_worker.onboard.run_inputs import run_inputs
from inlaid_worker.quant import (
    QuantSpec,
    layerwise,
)
from onboard_store_fixture import StoreFx as Fx
from onboard_store_fixture import Worker, build_store, by_layer, start_worker, task_data
from safetensors import safe_open

SPEC = QuantSpec(bits=4, group_size=32, act_order=True, static_groups=True)
N = 4  # decoder layers
K = 2  # layers the first owner stages before it dies
LEASE = 0.4  # seconds (the store's lease, shortened for the tests)
TASKS = ("a", "b", "c")


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> Fx:
    return build_store(tmp_path_factory.mktemp("resume"), N, SPEC, "abcx")


@pytest.fixture(autouse=True)
def short_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distribute, "LEASE_S", LEASE)


@pytest.fixture
def gptq_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """One entry per GPTQ layer quantization in this process (thread-mode quantizers)."""
    calls: list[int] = []
    real = layerwise._quantize_layer

    def counting(layer: Any, *args: Any) -> Any:
        calls.append(len(calls))
        return real(layer, *args)

    monkeypatch.setattr(layerwise, "_quantize_layer", counting)
    yield calls


def _worker(fx: Fx, store: Path, name: str, mode: str = "thread", **follow: float) -> Worker:
    return start_worker(fx, store, name, BackgroundLimits(mode=mode, threads=1), **follow)  # type: ignore[arg-type]


@contextmanager
def _resumed(fx: Fx, store: Path) -> Iterator[Worker]:
    """Worker "b" on `store` after its run adding task c ended "done"; stopped when the block ends."""
    b = _worker(fx, store, "b")
    try:
        run = b.dist.submit(_add_c(fx), [])
        _wait(run)
        assert run.events[-1].stage == "done", run.events[-1].message
        yield b
    finally:
        b.loop.stop()


def _add_c(fx: Fx) -> list[AddRequest]:
    return [AddRequest("c", str(fx.adapters["c"]), str(fx.calib["c"]))]


def _assert_same_checkpoint(published: Path, reference: Path) -> None:
    """Packed weights equal tensor for tensor, and the Hessian store file for file (tensors, metadata)."""
    got, want = by_layer(published), by_layer(reference)
    assert got.keys() == want.keys() == set(range(N))
    for i in range(N):
        assert got[i].keys() == want[i].keys()
        for k in got[i]:
            for f in ("qweight", "qzeros", "scales", "g_idx"):
                assert torch.equal(getattr(got[i][k], f), getattr(want[i][k], f)), (i, k, f)
    ref, pub = reference / "hessians", published / "hessians"
    files = sorted(p.relative_to(ref) for p in ref.rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(pub) for p in pub.rglob("*") if p.is_file())
    for f in files:
        if f.suffix == ".json":
            assert json.loads((ref / f).read_text()) == json.loads((pub / f).read_text()), f
            continue
        with safe_open(str(ref / f), "pt") as x, safe_open(str(pub / f), "pt") as y:
            # (the metadata is a map: its order in the file header may differ, its content may not)
            assert x.metadata() == y.metadata() and sorted(x.keys()) == sorted(y.keys()), f
            assert all(torch.equal(x.get_tensor(k), y.get_tensor(k)) for k in x.keys()), f


def _wait(job: RequantizeJob, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not job.finished and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.finished, job.events


def _until(cond: Any, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _layers(job: RequantizeJob) -> list[int]:
    return [e.layer for e in job.events if e.stage == "layer"]


class Dies:
    """An on_layer_swapped hook: after layer k - 1 is staged and swapped in, the owner "dies" (its lease stops
    being renewed and its quantizer thread hangs) until `release()`."""

    def __init__(self, w: Worker, k: int) -> None:
        self.w, self.k = w, k
        self.dead, self._go = threading.Event(), threading.Event()
        w.manager.on_layer_swapped = self

    def __call__(self, layer: int) -> None:
        if layer == self.k - 1:
            writer = self.w.dist._writer
            assert writer is not None
            writer._stop.set()  # no more lease renewals
            self.dead.set()
            self._go.wait(60)

    def release(self) -> None:
        self._go.set()


def test_a_new_owner_resumes_at_layer_k_and_the_follower_keeps_its_layers(fx: Fx, tmp_path: Path,
                                                                           gptq_calls: list[int]) -> None:
    store = tmp_path / "store"
    a = _worker(fx, store, "a")
    b = _worker(fx, store, "b")
    f = _worker(fx, store, "f", lease_s=LEASE, takeover_s=60)
    dies = Dies(a, K)
    try:
        before = a.digest()
        run_a = a.dist.submit(_add_c(fx), [])
        follow = f.dist.follow(list(TASKS))
        assert dies.dead.wait(60), run_a.events
        first = LayerStore(store).active()
        assert first is not None and first.owner == a.dist.owner and sorted(first.layers) == list(range(K))
        assert first.inputs  # the run's inputs are fingerprinted
        _until(lambda: len(_layers(follow)) == K, what="the follower swapping the k staged layers")
        _until(lambda: LayerStore(store).lease_age(1) > LEASE, what="the dead owner's lease to run out")
        calls_by_a = len(gptq_calls)
        assert calls_by_a == K

        run_b = b.dist.submit(_add_c(fx), [])  # the gateway's retry on the next worker: it takes the run over
        _wait(run_b)
        assert run_b.events[-1].stage == "done", run_b.events[-1].message
        assert run_b.events[-1].checkpoint_version == 1
        assert _layers(run_b) == list(range(N))  # B still serves every layer (the k kept ones swapped in too)
        assert len(gptq_calls) - calls_by_a == N - K  # ... but ran GPTQ for the n - k missing ones only
        assert (b.dist.layers_quantized, b.dist.layers_reused) == (N - K, K)

        m = LayerStore(store).manifest(1)
        assert m is not None and m.owner == b.dist.owner and m.status == "done"
        assert m.resumed_from == first.run_id and m.reused == tuple(range(K))
        assert all(m.layers[i] == first.layers[i] for i in range(K))  # the dead owner's files, same sha256
        _assert_same_checkpoint(store / "v0001", fx.updated)  # = an uninterrupted run, bit for bit

        _wait(follow)
        assert follow.events[-1].stage == "done", follow.events[-1].message
        assert _layers(follow) == list(range(N))  # each layer swapped once: the k kept ones not again
        assert f.dist.follower.layers_kept == K
        assert f.digest() == b.digest() != before
        fresh = _worker(fx, store, "fresh")  # a worker started on the published v1
        try:
            assert fresh.digest() == b.digest()
        finally:
            fresh.loop.stop()

        dies.release()  # the presumed-dead owner wakes up: it must not touch the run B published
        _wait(run_a)
        assert run_a.events[-1].stage == "failed" and "taken over" in run_a.events[-1].message
        assert a.digest() == before  # its previous weights serve again
        after = LayerStore(store).manifest(1)
        assert after is not None and after.run_id == m.run_id and after.status == "done"
    finally:
        dies.release()
        for w in (a, b, f):
            w.loop.stop()


def test_a_failed_run_is_resumed_by_its_own_worker_in_the_quantizer_process(fx: Fx, tmp_path: Path) -> None:
    store = tmp_path / "store"
    a = _worker(fx, store, "a")

    def fail(layer: int) -> None:
        if layer == K - 1:
            raise RuntimeError("CUDA out of memory (simulated)")

    a.manager.on_layer_swapped = fail
    try:
        before = a.digest()
        run = a.dist.submit(_add_c(fx), [])
        _wait(run)
        assert run.events[-1].stage == "failed" and a.digest() == before
        first = LayerStore(store).manifest(1)
        assert first is not None and first.status == "failed" and sorted(first.layers) == list(range(K))

        a.manager.on_layer_swapped = None
        a.manager.background = BackgroundLimits(mode="process", threads=1)  # the default mode of a worker
        retry = a.dist.submit(_add_c(fx), [])
        _wait(retry, 180)
        assert retry.events[-1].stage == "done", retry.events[-1].message
        assert (a.dist.layers_quantized, a.dist.layers_reused) == (K + N - K, K)  # K in the failed run, N - K now
        m = LayerStore(store).manifest(1)
        assert m is not None and m.resumed_from == first.run_id and m.reused == tuple(range(K))
        _assert_same_checkpoint(store / "v0001", fx.updated)
    finally:
        a.loop.stop()


def _manifest_for(fx: Fx, run_id: str, tasks: tuple[str, ...] = TASKS, added: tuple[str, ...] = ("c",),
                  calib: str = "c") -> Manifest:
    """What a quantizer of +c on v0 writes (the same fingerprint as Distributor.begin computes)."""
    inputs = run_inputs(0, fx.ckpt, fx.base, [task_data(fx, added[0], calib)], [], "cpu")
    return Manifest(1, run_id, "dead@elsewhere", 0, tasks, added, (), SPEC.group_size, SPEC.sym, inputs=inputs)


def _stage(fx: Fx, store: Path, m: Manifest, layers: int) -> StagingWriter:
    w = StagingWriter(LayerStore(store), m)
    w.begin()
    for i in range(layers):
        w.add_layer(i, N, by_layer(fx.updated)[i])
    w._stop.set()  # dead owner
    return w


def test_only_valid_staged_layers_are_reused(fx: Fx, tmp_path: Path) -> None:
    store = LayerStore(tmp_path / "store")
    want = _manifest_for(fx, "new")
    assert want.inputs == _manifest_for(fx, "again").inputs  # deterministic
    w = _stage(fx, store.root, _manifest_for(fx, "old"), 3)
    assert sorted(store.reusable(want)) == [0, 1, 2]
    assert store.reusable(replace(want, run_id="old")) == {}  # a run never "resumes" itself

    bad = w.dir / w.manifest.layers[1].file  # other bytes: the sha256 no longer matches
    bad.write_bytes(pack_layer(by_layer(fx.ckpt)[1]))
    assert sorted(store.reusable(want)) == [0, 2]

    # a different task set, other calibration data for the same task name, another base, another packing,
    # a manifest without a fingerprint (an older writer): nothing is reused
    other_tasks = _manifest_for(fx, "new", tasks=("a", "b", "x"), added=("c",))
    assert store.reusable(other_tasks) == {}
    other_data = _manifest_for(fx, "new", calib="x")
    assert other_data.inputs != want.inputs and store.reusable(other_data) == {}
    for changed in (replace(want, base_version=1), replace(want, group_size=64), replace(want, sym=not want.sym)):
        assert store.reusable(changed) == {}
    _stage(fx, store.root, replace(_manifest_for(fx, "old2"), inputs=""), 2)
    assert store.reusable(want) == {}


def test_a_corrupt_staged_layer_is_quantized_again(fx: Fx, tmp_path: Path, gptq_calls: list[int]) -> None:
    store = tmp_path / "store"
    w = _stage(fx, store, _manifest_for(fx, "old"), K)
    (w.dir / w.manifest.layers[0].file).write_bytes(pack_layer(by_layer(fx.ckpt)[0]))
    _until(lambda: LayerStore(store).lease_age(1) > LEASE, what="the lease to run out")
    with _resumed(fx, store) as b:
        assert (b.dist.layers_quantized, b.dist.layers_reused) == (N - K + 1, K - 1)
        assert len(gptq_calls) == N - K + 1
        m = LayerStore(store).manifest(1)
        assert m is not None and m.reused == tuple(range(1, K)) and m.resumed_from == "old"
        _assert_same_checkpoint(store / "v0001", fx.updated)


def test_runs_from_other_inputs_are_not_resumed(fx: Fx, tmp_path: Path, gptq_calls: list[int]) -> None:
    store = tmp_path / "store"
    _stage(fx, store, _manifest_for(fx, "old", calib="x"), K)  # c with other calibration data
    _until(lambda: LayerStore(store).lease_age(1) > LEASE, what="the lease to run out")
    with _resumed(fx, store) as b:
        assert (b.dist.layers_quantized, b.dist.layers_reused) == (N, 0) and len(gptq_calls) == N
        m = LayerStore(store).manifest(1)
        assert m is not None and m.reused == () and m.resumed_from == ""
        assert not [p for p in (store / "v0001.staging").iterdir() if p.name.endswith("-old.safetensors")]
        _assert_same_checkpoint(store / "v0001", fx.updated)
