"""An adapter's content digest (lora.digest, LoraAdapter.digest): sha256 over the bytes load_adapter read and parsed,
framed by file name and length; the same for identical files anywhere, another for any changed byte of either file.
The weights file's bytes are dropped once hashed, before the tensors are paired; and the two files rewritten between
their reads (the race forced through a hook on the weights' read, the only way to make it deterministic) are read
again, once, then refused; so is a file caught mid-write in place (it fails to parse and its stat changed), while a
malformed file left alone is refused as such. stat and fstat are each compared with their own kind (overlay
filesystems make them disagree)."""

from __future__ import annotations

import gc
import hashlib
import os
import shutil
import tracemalloc
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from adapter_edits import base_with_adapter, edited
from adapter_writes import counting, write_in_place
from factories import make_random_adapter, make_tiny_llama
from inlaid_worker.lora import adapter as adapter_mod
from inlaid_worker.lora.adapter import SUPPORTED_MODULES, AdapterChanging, AdapterError, load_adapter
from inlaid_worker.lora.digest import adapter_digest
from inlaid_worker.model.config import load_model_config

CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Any]:
    return base_with_adapter(tmp_path_factory.mktemp("digest"), ["q_proj", "v_proj"])


def by_hand(d: Path) -> str:
    """The documented format (worker.proto adapter_digests), computed here without lora.digest."""
    h = hashlib.sha256(b"inlaid-adapter-digest-v1\0")
    for name in (CONFIG, WEIGHTS):
        data = (d / name).read_bytes()
        h.update(name.encode() + b"\0" + len(data).to_bytes(8, "big") + data)
    return h.hexdigest()


def test_the_digest_is_over_the_adapter_files_bytes(base: tuple[Path, Path, Any]) -> None:
    _, adapter_dir, config = base
    a = load_adapter(adapter_dir, config)
    assert len(a.digest) == 64 and int(a.digest, 16) >= 0
    assert a.digest == by_hand(adapter_dir)
    files = {CONFIG: (adapter_dir / CONFIG).read_bytes(), WEIGHTS: (adapter_dir / WEIGHTS).read_bytes()}
    assert adapter_digest(files) == a.digest
    assert adapter_digest(dict(reversed(files.items()))) == a.digest  # name order, not the order given


def test_identical_files_anywhere_give_the_same_digest(base: tuple[Path, Path, Any], tmp_path: Path) -> None:
    _, adapter_dir, config = base
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(adapter_dir, copy)
    (copy / "README.md").write_text("not part of the adapter")
    assert load_adapter(copy, config).digest == load_adapter(adapter_dir, config).digest


def test_a_changed_byte_in_either_file_changes_the_digest(base: tuple[Path, Path, Any], tmp_path: Path) -> None:
    _, adapter_dir, config = base
    before = load_adapter(adapter_dir, config).digest

    def nudge(tensors: dict[str, torch.Tensor]) -> None:
        name = sorted(tensors)[0]
        tensors[name] = tensors[name].clone()
        tensors[name].view(-1)[0] += 1e-3

    weights = load_adapter(edited(adapter_dir, tmp_path / "w", nudge), config).digest
    alpha = load_adapter(edited(adapter_dir, tmp_path / "c", config_change={"lora_alpha": 9}), config).digest
    assert len({before, weights, alpha}) == 3


def test_an_adapter_rewritten_in_place_gets_the_new_files_digest(base: tuple[Path, Path, Any], tmp_path: Path) -> None:
    model_dir, adapter_dir, config = base
    d = tmp_path / "inplace"
    shutil.copytree(adapter_dir, d)
    first = load_adapter(d, config).digest
    make_random_adapter(d, model_dir, rank=4, alpha=8, targets=["q_proj", "v_proj"], seed=7)  # same path, new weights
    second = load_adapter(d, config)
    assert second.digest != first and second.digest == by_hand(d)


def test_the_digest_is_of_the_bytes_parsed_not_of_a_later_read(
    base: tuple[Path, Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The digest is sha256 over exactly the bytes safetensors parsed (framed as lora.digest says); the weights file
    rewritten once they are parsed and hashed (while the tensors are paired, their bytes dropped): the digest and the
    weights are both those of the bytes read, so the digest names what is served, not what is at the path now."""
    model_dir, adapter_dir, config = base
    d = tmp_path / "raced"
    shutil.copytree(adapter_dir, d)
    old = load_adapter(d, config)
    other = make_random_adapter(tmp_path / "other", model_dir, rank=4, alpha=8, targets=["q_proj", "v_proj"], seed=9)
    parse, pair = adapter_mod.load_safetensors, adapter_mod._pair_tensors
    parsed: list[bytes] = []

    def recorded(data: bytes) -> dict[str, torch.Tensor]:
        parsed.append(data)
        return parse(data)

    def rewrite_then_pair(*args: Any, **kwargs: Any) -> Any:
        shutil.copyfile(other / WEIGHTS, d / WEIGHTS)  # the file changes once its bytes are parsed and hashed
        return pair(*args, **kwargs)

    monkeypatch.setattr(adapter_mod, "load_safetensors", recorded)
    monkeypatch.setattr(adapter_mod, "_pair_tensors", rewrite_then_pair)
    got = load_adapter(d, config)
    assert len(parsed) == 1  # one read of the weights
    assert got.digest == adapter_digest({CONFIG: (d / CONFIG).read_bytes(), WEIGHTS: parsed[0]})
    assert got.digest == old.digest and got.digest != by_hand(d)  # by_hand(d) reads the rewritten file
    assert all(torch.equal(got.weights[k][1], old.weights[k][1]) for k in old.weights)


def test_an_adapter_made_in_memory_has_no_digest(base: tuple[Path, Path, Any]) -> None:
    from factories import make_lora_adapter

    assert make_lora_adapter(base[2], rank=2, targets=("q_proj",)).digest == ""


def test_the_weights_bytes_are_dropped_before_the_tensors_are_paired(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python memory (tracemalloc: the file's bytes and the parsed tensors' buffers) when the tensors are paired: one
    copy of the weights (the tensors), not two (before, the file's bytes stayed alive through the pairing: +the file's
    size at the load's peak, 305 MiB for a 305 MiB adapter); and the digest is still that of the bytes parsed."""
    model = make_tiny_llama(tmp_path / "base", hidden=256, intermediate=512)
    d = make_random_adapter(tmp_path / "big", model, rank=64, alpha=64, targets=list(SUPPORTED_MODULES), seed=3)
    size = (d / WEIGHTS).stat().st_size
    assert size > 2 << 20  # large enough that the interpreter's own allocations do not matter
    pair = adapter_mod._pair_tensors
    at_pairing: list[int] = []

    def measured(*args: Any, **kwargs: Any) -> Any:
        at_pairing.append(tracemalloc.get_traced_memory()[0])
        return pair(*args, **kwargs)

    monkeypatch.setattr(adapter_mod, "_pair_tensors", measured)
    config = load_model_config(model)
    gc.collect()
    tracemalloc.start()
    try:
        got = load_adapter(d, config)
    finally:
        tracemalloc.stop()
    assert len(at_pairing) == 1
    assert size * 3 // 4 < at_pairing[0] < size * 3 // 2, (at_pairing[0], size)  # before: over 2 * size
    assert got.digest == by_hand(d)


def _rewrite(d: Path, src: Path) -> None:
    """`src`'s adapter files into `d`, each by an atomic rename (a new inode) with an mtime of its own."""
    for i, name in enumerate((WEIGHTS, CONFIG)):
        tmp = d / f".{name}.tmp"
        shutil.copyfile(src / name, tmp)
        os.utime(tmp, ns=(1_000_000_000 * (i + 1), 1_000_000_000 * (i + 1)))
        os.replace(tmp, d / name)


@pytest.fixture(scope="module")
def rank2(base: tuple[Path, Path, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another adapter for the same base, of another rank (a torn read pairs a rank-4 config with rank-2 weights)."""
    return make_random_adapter(
        tmp_path_factory.mktemp("rank2") / "ad", base[0], rank=2, alpha=4, targets=["q_proj", "v_proj"], seed=5
    )


def test_files_rewritten_between_the_config_and_the_weights_are_read_again(
    base: tuple[Path, Path, Any], rank2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The directory rewritten with another adapter after the config was read and before the weights are: the first
    read holds the old config and the new weights (before, served as such: a rank-4 config with rank-2 weights, or a
    mix of two versions under one digest); the stats before and after differ, so both are read again: the new adapter,
    whole, and its digest."""
    _, adapter_dir, config = base
    d = tmp_path / "torn"
    shutil.copytree(adapter_dir, d)
    # the first read: between the config's read and the weights'
    calls = counting(monkeypatch, "_read_tensors", before=lambda n: n == 1 and _rewrite(d, rank2))
    got = load_adapter(d, config)
    assert len(calls) == 2
    assert got.rank == 2 and got.digest == by_hand(rank2) == by_hand(d)
    want = load_adapter(rank2, config)
    assert got.weights.keys() == want.weights.keys()
    assert all(torch.equal(got.weights[k][i], want.weights[k][i]) for k in want.weights for i in (0, 1))


def test_files_that_keep_changing_while_read_are_refused(
    base: tuple[Path, Path, Any], rank2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, adapter_dir, config = base
    d = tmp_path / "churn"
    shutil.copytree(adapter_dir, d)
    versions = [rank2, adapter_dir]
    calls = counting(monkeypatch, "_read_tensors", before=lambda n: _rewrite(d, versions[(n - 1) % 2]))
    with pytest.raises(
        AdapterChanging, match=r"changed while they were read, 2 times in a row; retry once they are written"
    ) as refused:
        load_adapter(d, config)
    assert len(calls) == 2
    assert isinstance(refused.value, AdapterError)  # a refusal like any other where AdapterError is caught


def test_an_unchanged_adapter_is_read_once(base: tuple[Path, Path, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    _, adapter_dir, config = base
    calls = counting(monkeypatch, "_read_tensors")
    assert load_adapter(adapter_dir, config).digest == by_hand(adapter_dir)
    assert len(calls) == 1


def test_a_config_caught_mid_write_in_place_is_read_again(
    base: tuple[Path, Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """adapter_config.json rewritten in place while it is read: the first read holds half of it, not JSON, and the
    writer finishes before the check; its path no longer stats as before the open, so both files are read again: the
    whole adapter (before: refused as not valid JSON, INVALID_ARGUMENT, which the gateway takes as a bad adapter for
    good)."""
    _, adapter_dir, config = base
    d = tmp_path / "midwrite"
    shutil.copytree(adapter_dir, d)
    full = (d / CONFIG).read_bytes()
    inode = (d / CONFIG).stat().st_ino
    write_in_place(d / CONFIG, full[: len(full) // 2])  # the writer is half way
    # ...and done, once the half was read
    calls = counting(monkeypatch, "_read_config", after=lambda n: n == 1 and write_in_place(d / CONFIG, full))
    got = load_adapter(d, config)
    assert len(calls) == 2 and (d / CONFIG).stat().st_ino == inode
    assert got.digest == by_hand(d) == by_hand(adapter_dir)


def test_weights_caught_mid_write_in_place_are_read_again(
    base: tuple[Path, Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The weights file rewritten in place while it is read: the first read holds a truncated safetensors file (its
    parse fails), the writer finishes meanwhile; read again: the whole adapter, not INVALID_ARGUMENT."""
    _, adapter_dir, config = base
    d = tmp_path / "midwrite-w"
    shutil.copytree(adapter_dir, d)
    full = (d / WEIGHTS).read_bytes()
    write_in_place(d / WEIGHTS, full[: len(full) // 2])
    parse = adapter_mod.load_safetensors
    parsed: list[int] = []

    def writer_done_while_parsed(data: bytes) -> Any:
        parsed.append(len(data))
        if len(parsed) == 1:
            write_in_place(d / WEIGHTS, full)
        return parse(data)

    monkeypatch.setattr(adapter_mod, "load_safetensors", writer_done_while_parsed)
    got = load_adapter(d, config)
    assert parsed == [len(full) // 2, len(full)]
    assert got.digest == by_hand(adapter_dir)


def test_a_file_still_being_written_at_both_reads_is_refused_as_changing(
    base: tuple[Path, Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The config caught mid-write at both reads (another length each time): AdapterChanging (ABORTED: retried), which
    names the last parse's failure, not a malformed adapter."""
    _, adapter_dir, config = base
    d = tmp_path / "still-writing"
    shutil.copytree(adapter_dir, d)
    full = (d / CONFIG).read_bytes()
    write_in_place(d / CONFIG, full[:10])
    # more of it after each read, never whole
    calls = counting(monkeypatch, "_read_config", after=lambda n: write_in_place(d / CONFIG, full[: 10 + 5 * n]))
    with pytest.raises(AdapterChanging, match=r"changed while they were read, 2 times in a row; .*is not valid JSON"):
        load_adapter(d, config)
    assert len(calls) == 2


@pytest.mark.parametrize("name", [CONFIG, WEIGHTS])
def test_a_malformed_file_that_does_not_change_is_refused_at_once(
    name: str, base: tuple[Path, Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A truncated file left alone: refused as malformed (AdapterError, INVALID_ARGUMENT), after one read, not
    AdapterChanging."""
    _, adapter_dir, config = base
    d = tmp_path / "malformed"
    shutil.copytree(adapter_dir, d)
    full = (d / name).read_bytes()
    write_in_place(d / name, full[: len(full) // 2])
    calls = counting(monkeypatch, "_read_config")
    with pytest.raises(
        AdapterError, match="is not valid JSON" if name == CONFIG else "is not a safetensors file"
    ) as err:
        load_adapter(d, config)
    assert not isinstance(err.value, AdapterChanging) and len(calls) == 1


def test_stat_and_fstat_that_disagree_on_the_file_identity_are_not_a_change(
    base: tuple[Path, Path, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On some overlay filesystems fstat of an open file reports another device and inode than stat of its path: the
    checks compare a stat with a stat and an fstat with an fstat, so the adapter is read once (before, fstat at the
    open against stat afterwards: every read looked changed, and every load was refused ABORTED)."""
    _, adapter_dir, config = base
    real_fstat = os.fstat

    def overlay_fstat(fd: int) -> Any:
        st = real_fstat(fd)
        return SimpleNamespace(
            st_dev=st.st_dev + 1, st_ino=st.st_ino + 1, st_size=st.st_size, st_mtime_ns=st.st_mtime_ns,
            st_ctime_ns=st.st_ctime_ns,
        )  # fmt: skip

    calls = counting(monkeypatch, "_read_tensors")
    monkeypatch.setattr(os, "fstat", overlay_fstat)
    got = load_adapter(adapter_dir, config)
    assert len(calls) == 1 and got.digest == by_hand(adapter_dir)


def test_weights_over_the_size_limit_are_refused_before_they_are_read(
    base: tuple[Path, Path, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, adapter_dir, config = base
    size = (adapter_dir / WEIGHTS).stat().st_size
    monkeypatch.setattr(adapter_mod, "MAX_WEIGHTS_BYTES", size)
    assert load_adapter(adapter_dir, config).digest == by_hand(adapter_dir)  # at the limit: loaded
    monkeypatch.setattr(adapter_mod, "MAX_WEIGHTS_BYTES", size - 1)
    reads: list[int] = []
    real_open = Path.open

    def counting_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        f = real_open(self, *args, **kwargs)
        if self.name == WEIGHTS:
            real_read = f.read
            f.read = lambda *a: reads.append(1) or real_read(*a)  # type: ignore[method-assign]
        return f

    monkeypatch.setattr(Path, "open", counting_open)
    with pytest.raises(
        AdapterError, match=rf"{WEIGHTS} is {size} bytes, over the {size - 1}-byte limit on adapter weights"
    ):
        load_adapter(adapter_dir, config)
    assert reads == []  # refused at open: nothing read into memory
