"""LoadAdapter's content digest through a real gRPC worker (tiny random Llama): LoadAdapter answers it
(ModelCard.digest) and GetInfo reports it per adapter (WorkerInfo.adapter_digests, beside adapter_paths), from the
bytes that were loaded; an adapter rewritten in place at the same path and loaded again reports the new files'
digest. ValidateAdapter answers the digest of the files it read too (the gateway's reference for the job), without
loading them. Files that keep changing while they are read are answered ABORTED (a retry may succeed), not
INVALID_ARGUMENT. The gateway's catch-up compares a worker's digests with the one its job recorded."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from adapter_writes import counting, write_in_place
from factories import make_random_adapter, make_tiny_llama
from grpc_worker import serving
from inlaid_worker.gen.inlaid.v1 import worker_pb2
from inlaid_worker.lora import adapter as adapter_mod

TARGETS = ["q_proj", "v_proj"]


def files_digest(d: Path) -> str:
    """The digest of the adapter files at `d` as worker.proto documents it (computed here, not by the worker's code)."""
    h = hashlib.sha256(b"inlaid-adapter-digest-v1\0")
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        data = (d / name).read_bytes()
        h.update(name.encode() + b"\0" + len(data).to_bytes(8, "big") + data)
    return h.hexdigest()


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    root = tmp_path_factory.mktemp("digest-grpc")
    model = make_tiny_llama(root / "model")
    make_random_adapter(root / "adapters" / "own", model, rank=2, alpha=4, targets=TARGETS, seed=1)
    make_random_adapter(root / "task", model, rank=4, alpha=8, targets=TARGETS, seed=2)
    with serving(model, adapters_dir=str(root / "adapters"), kv_cache_bytes=4 << 20) as (stub, _running):
        yield stub, root


def info(stub: Any) -> Any:
    return stub.GetInfo(worker_pb2.InfoRequest())


def load(stub: Any, name: str, path: Path) -> Any:
    return stub.LoadAdapter(worker_pb2.LoadAdapterRequest(name=name, path=str(path)))


def unload(stub: Any, name: str) -> None:
    stub.UnloadAdapter(worker_pb2.UnloadAdapterRequest(name=name))


def test_load_adapter_answers_and_get_info_reports_the_digest_of_the_files_loaded(worker: tuple[Any, Path]) -> None:
    stub, root = worker
    expected = files_digest(root / "task")
    card = load(stub, "task", root / "task")
    try:
        assert card.id == "task" and card.digest == expected
        got = info(stub)
        assert dict(got.adapter_digests) == {"task": expected}  # --adapters-dir's "own": no LoadAdapter path, no digest
        assert dict(got.adapter_paths) == {"task": str(root / "task")}
        assert [m.digest for m in got.models] == ["", "", ""]  # the cards the gateway lists to clients carry none
    finally:
        unload(stub, "task")
    assert dict(info(stub).adapter_digests) == {}


def test_identical_files_at_another_path_report_the_same_digest(worker: tuple[Any, Path]) -> None:
    stub, root = worker
    copy = root / "copy-of-task"
    shutil.copytree(root / "task", copy, dirs_exist_ok=True)
    load(stub, "a", root / "task")
    load(stub, "b", copy)
    try:
        digests = dict(info(stub).adapter_digests)
        assert digests["a"] == digests["b"] == files_digest(root / "task")
    finally:
        unload(stub, "a")
        unload(stub, "b")


def test_an_adapter_rewritten_in_place_reports_the_new_digest_once_loaded_again(worker: tuple[Any, Path]) -> None:
    stub, root = worker
    d = root / "rewritten"
    shutil.copytree(root / "task", d, dirs_exist_ok=True)
    first = load(stub, "rw", d).digest
    make_random_adapter(d, root / "model", rank=4, alpha=8, targets=TARGETS, seed=3)  # new weights, same path
    assert dict(info(stub).adapter_digests)["rw"] == first  # still serving what it read: the old files' digest
    unload(stub, "rw")
    second = load(stub, "rw", d).digest
    try:
        assert second != first and second == files_digest(d)
        got = info(stub)
        assert dict(got.adapter_digests)["rw"] == second and dict(got.adapter_paths)["rw"] == str(d)  # same path
    finally:
        unload(stub, "rw")


def test_validate_adapter_answers_the_digest_of_the_files_it_read_without_loading_them(
    worker: tuple[Any, Path],
) -> None:
    stub, root = worker
    d = root / "validated"
    shutil.copytree(root / "task", d, dirs_exist_ok=True)
    card = stub.ValidateAdapter(worker_pb2.LoadAdapterRequest(name="v", path=str(d)))
    assert card.id == "v" and card.rank == 4 and card.digest == files_digest(d)
    assert "v" not in dict(info(stub).adapter_digests)  # validated, not loaded
    held = load(stub, "v", d).digest
    try:
        make_random_adapter(d, root / "model", rank=4, alpha=8, targets=TARGETS, seed=4)  # rewritten in place
        again = stub.ValidateAdapter(worker_pb2.LoadAdapterRequest(name="v", path=str(d))).digest
        assert again == files_digest(d) != held  # what is at the path now
        assert dict(info(stub).adapter_digests)["v"] == held  # while the loaded adapter keeps what it read
    finally:
        unload(stub, "v")


def test_files_that_keep_changing_while_read_are_aborted_not_refused(
    worker: tuple[Any, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each read of the weights preceded by a rewrite of the directory (a hook on the worker's read, in this process:
    the race cannot be produced deterministically otherwise): ABORTED for LoadAdapter and ValidateAdapter, nothing
    loaded; the same files, left alone, load."""
    stub, root = worker
    d = root / "churning"
    shutil.copytree(root / "task", d, dirs_exist_ok=True)
    versions = [root / "adapters" / "own", root / "task"]  # rank 2, rank 4
    read = adapter_mod._read_tensors

    def rewrite(n: int) -> None:
        for i, name in enumerate(("adapter_model.safetensors", "adapter_config.json")):
            tmp = d / f".{name}.tmp"
            shutil.copyfile(versions[(n - 1) % 2] / name, tmp)
            os.utime(tmp, ns=(10**9 * ((n - 1) * 2 + i + 1),) * 2)
            os.replace(tmp, d / name)

    reads = counting(monkeypatch, "_read_tensors", before=rewrite)
    for call in (stub.LoadAdapter, stub.ValidateAdapter):
        with pytest.raises(grpc.RpcError) as err:
            call(worker_pb2.LoadAdapterRequest(name="churn", path=str(d)))
        assert err.value.code() == grpc.StatusCode.ABORTED
        assert "changed while they were read" in err.value.details()
    assert len(reads) == 4 and "churn" not in dict(info(stub).adapter_digests)
    monkeypatch.setattr(adapter_mod, "_read_tensors", read)
    card = load(stub, "churn", d)
    try:
        assert card.digest == files_digest(d)
    finally:
        unload(stub, "churn")


def test_a_file_caught_mid_write_is_aborted_and_a_malformed_one_refused(
    worker: tuple[Any, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """adapter_config.json truncated in place: left alone, LoadAdapter and ValidateAdapter refuse it INVALID_ARGUMENT
    (a bad adapter); still being written at both reads (a hook on the worker's config read, in this process, writes
    more of it after each), ABORTED (retried by the gateway), not INVALID_ARGUMENT (before: INVALID_ARGUMENT, which the
    gateway's catch-up takes as refused for good)."""
    stub, root = worker
    d = root / "half-written"
    shutil.copytree(root / "task", d, dirs_exist_ok=True)
    full = (d / "adapter_config.json").read_bytes()

    def write(n: int) -> None:
        write_in_place(d / "adapter_config.json", full[:n])  # the same inode

    write(len(full) // 2)
    for call in (stub.LoadAdapter, stub.ValidateAdapter):
        with pytest.raises(grpc.RpcError) as err:
            call(worker_pb2.LoadAdapterRequest(name="half", path=str(d)))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "is not valid JSON" in err.value.details()
    # more of it after each read, never whole
    reads = counting(monkeypatch, "_read_config", after=lambda n: write(len(full) // 2 + n))
    for call in (stub.LoadAdapter, stub.ValidateAdapter):
        with pytest.raises(grpc.RpcError) as err:
            call(worker_pb2.LoadAdapterRequest(name="half", path=str(d)))
        assert err.value.code() == grpc.StatusCode.ABORTED and "changed while they were read" in err.value.details()
    assert len(reads) == 4 and "half" not in dict(info(stub).adapter_digests)


def test_unload_marks_its_refusal_in_use_and_refuses_the_base_model_as_invalid(
    worker: tuple[Any, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway retries an unload refused in use (its catch-up holds the name until the requests drain), so that
    refusal is marked (trailing metadata inlaid-refusal: adapter-in-use); the base model's name is INVALID_ARGUMENT,
    unmarked (before: FAILED_PRECONDITION too, which the gateway took for a refusal in use)."""
    from inlaid_worker.engine.engine import LLMEngine

    stub, root = worker
    base = info(stub).models[0].id
    with pytest.raises(grpc.RpcError) as err:
        unload(stub, base)
    assert (err.value.code(), err.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "the base model cannot be unloaded",
    )
    assert ("inlaid-refusal", "adapter-in-use") not in tuple(err.value.trailing_metadata() or ())

    load(stub, "busy", root / "task")
    real = LLMEngine.requests_for
    monkeypatch.setattr(LLMEngine, "requests_for", lambda self, name: ["r1"] if name == "busy" else real(self, name))
    with pytest.raises(grpc.RpcError) as err:
        unload(stub, "busy")
    assert (err.value.code(), err.value.details()) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "adapter 'busy' has 1 requests in flight",
    )
    assert ("inlaid-refusal", "adapter-in-use") in tuple(err.value.trailing_metadata())
    monkeypatch.setattr(LLMEngine, "requests_for", real)
    unload(stub, "busy")
    assert "busy" not in dict(info(stub).adapter_paths)
