"""Build every task's splits: `python -m inlaid_worker.tasks.build --out assets/tasks [--tasks a,b] [--seed 0]`.

Reproducible: the same wheels, Apertium version and seed give byte-identical files. Writes
`<out>/<task>/{train,calib,test}.jsonl` and `<out>/manifest.json` (sources, sizes, sha256 of each file).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from . import builders, sources
from .example import Example, write_jsonl
from .spec import SPLITS, TASKS, get_task
from .splits import split


def build_task(name: str, raw: list[dict], seed: int) -> dict[str, list[Example]]:
    """Pure core: raw records -> the three disjoint splits of task `name`."""
    spec = get_task(name)
    examples = builders.BUILDERS[name](raw)
    parts = split(examples, key=lambda e: e.id, sizes=spec.sizes, seed=seed)
    return dict(zip(SPLITS, parts))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--wheels", type=Path, default=Path.home() / ".cache" / "inlaid" / "wheels")
    args = ap.parse_args(argv)
    names = [t for t in args.tasks.split(",") if t]
    for n in names:
        get_task(n)
    manifest_path = args.out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"tasks": {}}
    manifest["seed"] = args.seed
    for name in names:
        spec = get_task(name)
        splits = build_task(name, sources.read_raw(name, args.wheels), args.seed)
        files = {}
        for split_name, examples in splits.items():
            path = args.out / name / f"{split_name}.jsonl"
            write_jsonl(path, examples)
            files[split_name] = {"n": len(examples), "sha256": _sha256(path)}
        source = spec.source + (
            f" (apertium-eng-spa {sources.apertium_version()})" if name == "en_es" else ""
        )
        manifest["tasks"][name] = {
            "kind": spec.kind,
            "metric": spec.metric,
            "max_new_tokens": spec.max_new_tokens,
            "source": source,
            "splits": files,
        }
        print(f"{name}: " + ", ".join(f"{k}={v['n']}" for k, v in files.items()))
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
