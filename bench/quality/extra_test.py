"""Larger test splits for the quality table: the shipped test split plus examples no split uses.

    PYTHONPATH=workers python bench/quality/extra_test.py --tasks nq_open,asdiv,csqa --n 512 \
        [--wheels ~/.cache/inlaid/wheels] [--out bench/quality/test_extra]

The task builder (inlaid_worker.tasks.build, seed 0) shuffles each task's de-duplicated pool once and cuts
test, calib and train as consecutive slices from its front. The rest of the pool is unused, so the examples
right after the train slice are disjoint from every split (and from the adapters' training data). Writes
<out>/<task>/test.jsonl.xz (xz keeps the device call's working tree small): the shipped test split unchanged
(its first lines), then extra examples up to --n. Refuses when the rebuilt splits differ from the shipped
files (other wheels or seed). full.py --test-dir <out> evaluates on these files where they exist.
"""

from __future__ import annotations

import argparse
import lzma
import random
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "workers"))

from inlaid_worker.tasks import builders, sources  # noqa: E402
from inlaid_worker.tasks.example import Example, load_split, write_jsonl  # noqa: E402
from inlaid_worker.tasks.spec import SPLITS, get_task  # noqa: E402
from inlaid_worker.tasks.splits import dedupe  # noqa: E402


def extended_test(examples: list[Example], shipped: dict[str, list[Example]], sizes: tuple[int, int, int],
                  seed: int, n: int) -> list[Example]:
    """Shipped test + the pool's examples after train, up to n in all (pure; checks the shipped splits)."""
    pool = dedupe(examples, key=lambda e: e.id)
    random.Random(seed).shuffle(pool)
    n_train, n_calib, n_test = sizes
    cut = {"test": pool[:n_test], "calib": pool[n_test : n_test + n_calib],
           "train": pool[n_test + n_calib : n_test + n_calib + n_train]}
    for name in SPLITS:
        if [e.id for e in cut[name]] != [e.id for e in shipped[name]]:
            raise ValueError(f"rebuilt {name} split differs from the shipped one: other data or seed")
    rest = pool[sum(sizes):]
    if n - n_test > len(rest):
        raise ValueError(f"only {len(rest)} unused examples, {n - n_test} asked")
    return list(shipped["test"]) + rest[: n - n_test]


def unpack(test_dir: Path) -> Path:
    """A temporary tasks dir with <task>/test.jsonl for every <test_dir>/<task>/test.jsonl.xz."""
    out = Path(tempfile.mkdtemp(prefix="inlaid-test-extra-"))
    for f in sorted(test_dir.glob("*/test.jsonl.xz")):
        (out / f.parent.name).mkdir()
        (out / f.parent.name / "test.jsonl").write_bytes(lzma.decompress(f.read_bytes()))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="nq_open,asdiv,csqa")
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--wheels", type=Path, default=Path.home() / ".cache" / "inlaid" / "wheels")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "test_extra")
    args = ap.parse_args(argv)
    for t in [t for t in args.tasks.split(",") if t]:
        if t == "en_es":
            raise ValueError("en_es needs Apertium for its references; not supported here")
        spec = get_task(t)
        examples = builders.BUILDERS[t](sources.read_raw(t, args.wheels))
        shipped = {s: load_split(t, s) for s in SPLITS}
        test = extended_test(examples, shipped, spec.sizes, args.seed, args.n)
        with tempfile.TemporaryDirectory() as tmp:
            write_jsonl(Path(tmp) / "test.jsonl", test)
            data = (Path(tmp) / "test.jsonl").read_bytes()
        (args.out / t).mkdir(parents=True, exist_ok=True)
        (args.out / t / "test.jsonl.xz").write_bytes(lzma.compress(data, preset=9))
        print(f"{t}: {len(test)} test examples ({len(shipped['test'])} shipped + {len(test) - len(shipped['test'])})")


if __name__ == "__main__":
    main()
