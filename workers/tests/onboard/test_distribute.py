"""One re-quantization shared by the workers of a checkpoint store: the quantizer stages each layer
(atomically, with a manifest), a follower swaps the staged layers in and ends bit-identical to the quantizer;
a failed, dead or restarted run leaves the follower on its previous weights (or restarts it); a worker that
missed the run catches up from the published version."""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from inlaid_worker.onboard.background import BackgroundLimits
from inlaid_worker.onboard.job import RequantizeJob
from inlaid_worker.onboard.layer_store import LayerStore, Manifest, StagingWriter, pack_layer, unpack_layer
from inlaid_worker.onboard.manager import AddRequest, RequantizeBusy
from inlaid_worker.onboard.versions import CheckpointVersions
from inlaid_worker.quant import (
    PackedLinear,
    QuantSpec,
)
from onboard_store_fixture import StoreFx as Fx
from onboard_store_fixture import Worker, build_store, by_layer, start_worker

SPEC = QuantSpec(bits=4, group_size=32)
LAYERS = 2


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> Fx:
    return build_store(tmp_path_factory.mktemp("distribute"), LAYERS, SPEC, "abc")


def _worker(fx: Fx, store: Path, name: str, follower_opts: dict[str, float] | None = None) -> Worker:
    return start_worker(fx, store, name, BackgroundLimits(mode="thread"), **(follower_opts or {}))


def _same(a: dict[str, PackedLinear], b: dict[str, PackedLinear]) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(getattr(a[k], f), getattr(b[k], f)) for k in a for f in ("qweight", "qzeros", "scales", "g_idx"))


def _wait(job: RequantizeJob, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not job.finished and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.finished, job.events


def test_layer_files_round_trip_and_are_checked(fx: Fx, tmp_path: Path) -> None:
    layer0 = by_layer(fx.updated)[0]
    assert _same(unpack_layer(pack_layer(layer0)), layer0)
    store = LayerStore(tmp_path / "store")
    assert store.store_id() == LayerStore(tmp_path / "store").store_id()  # created once, then read
    w = StagingWriter(store, Manifest(1, "run1", "me", 0, ("a", "b", "c"), ("c",), (), 32, True))
    w.begin()
    w.add_layer(0, LAYERS, layer0)
    m = store.active()
    assert m is not None and m.version == 1 and list(m.layers) == [0] and m.num_layers == LAYERS
    assert _same(store.read_layer(m, 0), layer0)
    assert not list(w.dir.glob(".*.tmp")) and not list(store.root.glob(".*.tmp"))  # every write renamed
    (w.dir / m.layers[0].file).write_bytes(pack_layer(by_layer(fx.ckpt)[0]))  # not what the manifest lists
    with pytest.raises(ValueError, match="corrupt"):
        store.read_layer(m, 0)
    w.end("failed", "boom")
    assert store.manifest(1) == replace(m, status="failed", message="boom")


def test_one_quantizer_and_a_follower_end_bit_identical(fx: Fx, tmp_path: Path) -> None:
    store = tmp_path / "store"
    q, f = _worker(fx, store, "q"), _worker(fx, store, "f")
    try:
        before = f.digest()
        assert q.dist.store_id == f.dist.store_id
        run = q.dist.submit([AddRequest("c", str(fx.adapters["c"]), str(fx.calib["c"]))], [])
        follow = f.dist.follow(["c", "b", "a"])
        assert f.dist.follow(["a", "b", "c"]) is follow  # a retry attaches
        with pytest.raises(RequantizeBusy):
            f.dist.submit([], ["a"])  # a follower is not a quantizer at the same time
        _wait(run)
        _wait(follow)
        fe = follow.events
        assert [e.stage for e in fe] == ["planned"] + ["layer"] * LAYERS + ["done"], fe[-1].message
        assert [e.layer for e in fe if e.stage == "layer"] == list(range(LAYERS))
        assert fe[-1].checkpoint_version == run.events[-1].checkpoint_version == 1
        assert (q.dist.status().version, f.dist.status().version) == (1, 1)
        assert (q.dist.status().quantizer_runs, f.dist.status().quantizer_runs) == (1, 0)
        assert q.digest() == f.digest() != before
        staged = LayerStore(store)
        m = staged.active()
        assert m is not None and m.status == "done" and m.tasks == ("a", "b", "c")
        published, offline = by_layer(store / "v0001"), by_layer(fx.updated)
        for i in range(LAYERS):  # staged = published = offline update, bit for bit
            assert _same(staged.read_layer(m, i), published[i]) and _same(published[i], offline[i])
        late = _worker(fx, tmp_path / "other", "late")  # same weights as a fresh worker on v1 would have
        try:
            assert late.dist.store_id != q.dist.store_id
        finally:
            late.loop.stop()
    finally:
        q.loop.stop()
        f.loop.stop()


def _stage(fx: Fx, store: Path, layers: int, run_id: str = "r1", source: Path | None = None) -> StagingWriter:
    w = StagingWriter(LayerStore(store), Manifest(1, run_id, "q@elsewhere", 0, ("a", "b", "c"), ("c",), (), 32, True))
    w.begin()
    for i in range(layers):
        w.add_layer(i, LAYERS, by_layer(source or fx.updated)[i])
    return w


def _publish(fx: Fx, store: Path) -> None:
    shutil.copytree(fx.updated, store / "v0001")
    CheckpointVersions(fx.ckpt, store).publish(1, store / "v0001")


def test_a_failed_run_restores_the_follower(fx: Fx, tmp_path: Path) -> None:
    store = tmp_path / "store"
    f = _worker(fx, store, "f")
    try:
        before = f.digest()
        w = _stage(fx, store, 1)
        job = f.dist.follow(["a", "b", "c"])
        deadline = time.monotonic() + 30
        while not [e for e in job.events if e.stage == "layer"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert f.digest() != before  # layer 0 swapped in
        w.end("failed", "out of memory on layer 1")
        _wait(job)
        assert job.events[-1].stage == "failed" and "out of memory on layer 1" in job.events[-1].message
        assert f.digest() == before and f.dist.served_version == 0
    finally:
        f.loop.stop()


def test_a_dead_quantizer_restores_the_follower(fx: Fx, tmp_path: Path) -> None:
    store = tmp_path / "store"
    f = _worker(fx, store, "f", {"lease_s": 0.5, "takeover_s": 0.5})
    try:
        before = f.digest()
        w = _stage(fx, store, 1)
        w._stop.set()  # the owner process "dies": its lease is no longer renewed
        job = f.dist.follow(["a", "b", "c"])
        _wait(job)
        assert job.events[-1].stage == "failed" and "stopped" in job.events[-1].message
        assert [e.layer for e in job.events if e.stage == "layer"] == [0]
        assert f.digest() == before
    finally:
        f.loop.stop()


def test_a_restarted_run_is_followed_from_its_first_layer(fx: Fx, tmp_path: Path) -> None:
    store = tmp_path / "store"
    f = _worker(fx, store, "f")
    try:
        # abandoned after layer 0 (failover); made from other inputs (its layer 0 is not the new run's)
        _stage(fx, store, 1, "first", source=fx.ckpt).end("running")
        job = f.dist.follow(["a", "b", "c"])
        while not [e for e in job.events if e.stage == "layer"]:
            time.sleep(0.02)
        w = _stage(fx, store, LAYERS, "second")  # the new owner redoes the version
        _publish(fx, store)
        w.end("done")
        _wait(job)
        assert job.events[-1].stage == "done", job.events[-1].message
        assert [e.layer for e in job.events if e.stage == "layer"] == [0, 0, 1]
        assert f.dist.served_version == 1
        fresh = _worker(fx, store, "fresh")  # a worker started on the published v1
        try:
            assert fresh.dist.served_version == 1 and fresh.digest() == f.digest()
        finally:
            fresh.loop.stop()
    finally:
        f.loop.stop()


def test_a_worker_that_missed_the_run_catches_up_from_the_published_version(fx: Fx, tmp_path: Path) -> None:
    store = tmp_path / "store"
    f = _worker(fx, store, "f")  # started on v0
    try:
        _publish(fx, store)
        with pytest.raises(RequantizeBusy, match="catching up"):  # behind the store: not a quantizer
            f.dist.submit([], ["c"])
        deadline = time.monotonic() + 30
        while f.dist.served_version != 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        job = f.dist.follow(["a", "b", "c"])
        _wait(job)
        assert job.events[-1].stage == "done" and job.events[-1].checkpoint_version == 1
        fresh = _worker(fx, store, "fresh")
        try:
            assert fresh.digest() == f.digest()
        finally:
            fresh.loop.stop()
    finally:
        f.loop.stop()


def test_a_second_worker_cannot_start_a_run_while_the_owner_holds_it(fx: Fx, tmp_path: Path) -> None:
    store = tmp_path / "store"
    _stage(fx, store, 1)  # a live owner elsewhere
    other = _worker(fx, store, "other")
    try:
        with pytest.raises(RequantizeBusy, match="q@elsewhere"):
            other.dist.submit([AddRequest("c", str(fx.adapters["c"]), str(fx.calib["c"]))], [])
        assert other.dist.quantizer_runs == 0 and other.manager.running is None
    finally:
        other.loop.stop()


def test_follow_times_out_when_no_run_appears(fx: Fx, tmp_path: Path) -> None:
    f = _worker(fx, tmp_path / "store", "f", {"wait_s": 0.3})
    try:
        job = f.dist.follow(["a", "b", "zzz"])
        _wait(job)
        assert job.events[-1].stage == "failed" and "no re-quantization" in job.events[-1].message
    finally:
        f.loop.stop()
