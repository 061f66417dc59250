"""The Hessian store under incremental updates: an add reads only the running aggregate (not the kept tasks'
Hessians), tasks fold in insertion order, new versions hard-link kept files, a removal refolds, and version 1
stores are migrated on their first update."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import Tiny
from inlaid_worker.quant import QuantSpec, quantize_checkpoint, update_checkpoint
from inlaid_worker.quant.hessian_store import HessianStore
from test_incremental import _same

SPEC = QuantSpec(bits=4, group_size=32, act_order=True, static_groups=True)


def test_add_reads_only_the_running_aggregate_and_links_kept_files(tiny: Tiny, tmp_path: Path) -> None:
    quantize_checkpoint(tiny.base, tmp_path / "ba", "mlgptq", SPEC, tiny.tasks("ba"))
    quantize_checkpoint(tiny.base, tmp_path / "bac", "mlgptq", SPEC, tiny.tasks("bac"))
    src = tmp_path / "ba" / "hessians"
    assert json.loads((src / "index.json").read_text())["order"] == ["b", "a"]  # insertion order, not names
    kept = src / "tasks" / "a" / "layer-00000.safetensors"
    kept.write_bytes(b"not a safetensors file")  # an add must not read it (it only links it)
    update_checkpoint(tmp_path / "ba", tiny.base, tmp_path / "ba+c", add=tiny.tasks("c"))
    assert _same(tmp_path / "ba+c", tmp_path / "bac")  # incremental = full, in insertion order b, a, c
    new = tmp_path / "ba+c" / "hessians"
    assert HessianStore(new).read_index().order == ["b", "a", "c"]
    assert (new / "tasks" / "a" / "layer-00000.safetensors").stat().st_ino == kept.stat().st_ino
    assert (new / "tasks" / "b" / "layer-00001.safetensors").samefile(src / "tasks" / "b" / "layer-00001.safetensors")
    assert not (tmp_path / "ba+c" / "hessians" / "aggregate").exists()
    _, meta = HessianStore(new).read_tensors("running", 1)
    assert json.loads(meta["tasks"]) == ["b", "a", "c"] and meta["aggregation"] == "diagmax"


def test_removing_the_first_task_refolds_the_rest(tiny: Tiny, tmp_path: Path) -> None:
    quantize_checkpoint(tiny.base, tmp_path / "abc", "mlgptq", SPEC, tiny.tasks("abc"))
    quantize_checkpoint(tiny.base, tmp_path / "bc", "mlgptq", SPEC, tiny.tasks("bc"))
    update_checkpoint(tmp_path / "abc", tiny.base, tmp_path / "abc-a", remove=["a"])
    assert _same(tmp_path / "abc-a", tmp_path / "bc")
    _, meta = HessianStore(tmp_path / "abc-a" / "hessians").read_tensors("running", 0)
    assert json.loads(meta["tasks"]) == ["b", "c"]  # the next add continues from the refolded aggregate


def test_version1_store_is_migrated_on_its_first_update(tiny: Tiny, tmp_path: Path) -> None:
    quantize_checkpoint(tiny.base, tmp_path / "ba", "mlgptq", SPEC, tiny.tasks("ba"))
    quantize_checkpoint(tiny.base, tmp_path / "abc", "mlgptq", SPEC, tiny.tasks("abc"))
    hess = tmp_path / "ba" / "hessians"
    index = json.loads((hess / "index.json").read_text())
    v1 = {k: v for k, v in index.items() if k != "order"} | {"version": 1}  # v1: no order, aggregate/ files
    (hess / "index.json").write_text(json.dumps(v1))
    shutil.move(hess / "running", hess / "aggregate")
    assert HessianStore(hess).read_index().order == ["a", "b"]  # version 1 aggregated in name order
    update_checkpoint(tmp_path / "ba", tiny.base, tmp_path / "ab+c", add=tiny.tasks("c"))
    assert _same(tmp_path / "ab+c", tmp_path / "abc")
    index2 = json.loads((tmp_path / "ab+c" / "hessians" / "index.json").read_text())
    assert index2["version"] == 2 and index2["order"] == ["a", "b", "c"]
    assert (tmp_path / "ab+c" / "hessians" / "running" / "layer-00001.safetensors").is_file()
    (hess / "index.json").write_text(json.dumps(v1 | {"version": 7}))
    with pytest.raises(ValueError, match="unsupported Hessian index version 7.*re-quantize"):
        update_checkpoint(tmp_path / "ba", tiny.base, tmp_path / "x", add=tiny.tasks("c"))
    assert not (tmp_path / "x").exists()
