"""Checkpoint versions of the served base: version 0 is the checkpoint the worker started with; each
re-quantization publishes `<store>/v0001`, `v0002`, ... and then points `<store>/current.json` at it (written
atomically), so a restarted worker serves the latest published version."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from inlaid_worker.quant.hessian_store import HessianStore


@dataclass(frozen=True)
class Version:
    number: int
    path: Path

    @property
    def tasks(self) -> list[str]:
        return sorted(HessianStore(self.path / "hessians").read_index().tokens)


class CheckpointVersions:
    def __init__(self, initial: str | Path, store: str | Path | None = None) -> None:
        self.initial = Path(initial)
        self.store = Path(store) if store is not None else self.initial.parent / f"{self.initial.name}-versions"

    def current(self) -> Version:
        pointer = self.store / "current.json"
        if not pointer.is_file():
            return Version(0, self.initial)
        raw = json.loads(pointer.read_text())
        return Version(int(raw["version"]), Path(raw["path"]))

    def next_dir(self) -> tuple[int, Path]:
        """(number, directory) for the next version; a leftover unpublished directory is removed."""
        n = self.current().number + 1
        path = self.store / f"v{n:04d}"
        if path.exists():
            shutil.rmtree(path)
        return n, path

    def publish(self, number: int, path: Path) -> Version:
        self.store.mkdir(parents=True, exist_ok=True)
        tmp = self.store / ".current.json.tmp"
        tmp.write_text(json.dumps({"version": number, "path": str(path)}))
        os.replace(tmp, self.store / "current.json")
        return Version(number, path)
