"""The shipped splits are disjoint and sized as specified; the splitter is deterministic."""

import json
from pathlib import Path

import pytest
from inlaid_worker.tasks.example import default_tasks_dir, load_split
from inlaid_worker.tasks.spec import SPLITS, TASKS
from inlaid_worker.tasks.splits import split


@pytest.mark.parametrize("task", sorted(TASKS))
def test_shipped_splits_are_disjoint_and_sized(task: str) -> None:
    parts = {s: load_split(task, s) for s in SPLITS}
    assert tuple(len(parts[s]) for s in SPLITS) == TASKS[task].sizes
    for a, b in (("train", "calib"), ("train", "test"), ("calib", "test")):
        assert not {e.id for e in parts[a]} & {e.id for e in parts[b]}, f"{task}: ids in {a} and {b}"
        assert not {e.prompt for e in parts[a]} & {e.prompt for e in parts[b]}, (
            f"{task}: prompts in {a} and {b}"
        )
    for ex in parts["test"]:
        assert ex.prompt.strip() and ex.target.strip()


def test_manifest_hashes_match_files() -> None:
    import hashlib

    root = default_tasks_dir()
    manifest = json.loads((root / "manifest.json").read_text())
    assert set(manifest["tasks"]) == set(TASKS)
    for task, info in manifest["tasks"].items():
        for s, meta in info["splits"].items():
            data = (root / task / f"{s}.jsonl").read_bytes()
            assert hashlib.sha256(data).hexdigest() == meta["sha256"], (
                f"{task}/{s} changed since it was built"
            )


def test_split_is_deterministic_order_independent_and_disjoint() -> None:
    items = [f"item-{i:03d}" for i in range(50)] + ["item-007"]  # one duplicate
    a = split(items, key=str, sizes=(30, 5, 10), seed=3)
    b = split(list(reversed(items)), key=str, sizes=(30, 5, 10), seed=3)
    c = split(items, key=str, sizes=(30, 5, 10), seed=4)
    assert a == b and a != c
    assert [len(p) for p in a] == [30, 5, 10]
    flat = [x for p in a for x in p]
    assert len(flat) == len(set(flat))
    # growing train keeps the test split
    assert split(items, key=str, sizes=(35, 5, 10), seed=3)[2] == a[2]


def test_split_refuses_too_few_items() -> None:
    with pytest.raises(ValueError, match="need 12 distinct"):
        split(["a", "b", "a"], key=str, sizes=(10, 1, 1), seed=0)


def test_default_tasks_dir_is_in_repo() -> None:
    assert default_tasks_dir() == Path(__file__).resolve().parents[3] / "assets" / "tasks"
