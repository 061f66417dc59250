"""One task example and its JSONL form (the files under assets/tasks/<task>/<split>.jsonl)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Example:
    id: str
    prompt: str  # the user message (rendered to ChatML by chat.render_prompt)
    target: str  # the reference assistant answer, trained on
    refs: list[str]  # the references the metric compares against
    meta: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Example:
        missing = {"id", "prompt", "target", "refs"} - d.keys()
        if missing:
            raise ValueError(f"example is missing {sorted(missing)}: {str(d)[:120]}")
        return Example(str(d["id"]), d["prompt"], d["target"], list(d["refs"]), dict(d.get("meta", {})))


def write_jsonl(path: Path, examples: list[Example]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps(asdict(ex), ensure_ascii=False, sort_keys=True) + "\n")


def read_jsonl(path: Path) -> list[Example]:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found (build it: python -m inlaid_worker.tasks.build --out assets/tasks)"
        )
    with path.open(encoding="utf-8") as f:
        return [Example.from_dict(json.loads(line)) for line in f if line.strip()]


def default_tasks_dir() -> Path:
    """assets/tasks of the repository this package sits in."""
    return Path(__file__).resolve().parents[3] / "assets" / "tasks"


def load_split(task: str, split: str, tasks_dir: Path | None = None) -> list[Example]:
    return read_jsonl((tasks_dir or default_tasks_dir()) / task / f"{split}.jsonl")
