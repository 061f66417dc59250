"""An adapter's content digest (lora.digest, LoraAdapter.digest): sha256 over the bytes load_adapter read and parsed,
framed by file name and length; the same for identical files anywhere, another for any changed byte of either file."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from adapter_edits import base_with_adapter, edited
from factories import make_random_adapter
from inlaid_worker.lora import adapter as adapter_mod
from inlaid_worker.lora.adapter import load_adapter
from inlaid_worker.lora.digest import adapter_digest

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
    """The weights file rewritten right after it was read (while it is parsed): the digest and the weights are both
    those of the bytes read, so the digest names what is served."""
    model_dir, adapter_dir, config = base
    d = tmp_path / "raced"
    shutil.copytree(adapter_dir, d)
    old = load_adapter(d, config)
    other = make_random_adapter(tmp_path / "other", model_dir, rank=4, alpha=8, targets=["q_proj", "v_proj"], seed=9)
    parse = adapter_mod.load_safetensors
    parsed: list[bytes] = []

    def parse_then_rewrite(data: bytes) -> dict[str, torch.Tensor]:
        parsed.append(data)
        shutil.copyfile(other / WEIGHTS, d / WEIGHTS)  # the file changes once its bytes are in hand
        return parse(data)

    monkeypatch.setattr(adapter_mod, "load_safetensors", parse_then_rewrite)
    got = load_adapter(d, config)
    assert len(parsed) == 1  # one read of the weights
    assert got.digest == old.digest and got.digest != by_hand(d)  # by_hand(d) reads the rewritten file
    assert all(torch.equal(got.weights[k][1], old.weights[k][1]) for k in old.weights)


def test_an_adapter_made_in_memory_has_no_digest(base: tuple[Path, Path, Any]) -> None:
    from factories import make_lora_adapter

    assert make_lora_adapter(base[2], rank=2, targets=("q_proj",)).digest == ""
