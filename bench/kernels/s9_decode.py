"""Session 9: the 7B int4 decode step with two tuner tables alternating round by round on ONE runner
(bench/engine/pd_decode.py's pattern over bench_decode.py's --fusions alternation): each "fusion" name is a table
(env S9_TABLES="old=PATH,new=PATH"), and each keeps its own shipped-pick lookup, its own quant_matmul pick cache
(quant_matmul_config._TUNED) and its own set of decode graphs, so every table is captured once (after the eager
warm-up that takes its picks) and replayed as captured.
Usage: S9_TABLES=old=/tmp/old.json,new=/tmp/new.json INLAID_QMM_TUNED=1 PYTHONPATH=workers \
       python3 bench/kernels/s9_decode.py <bench_decode.py arguments> --fusions old,new --fusion-rounds 8
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))

import bench_decode  # noqa: E402
import pd_decode  # noqa: E402
from inlaid_worker.kernels import qmm_tuned, quant_matmul_config  # noqa: E402


def tables(spec: str) -> dict[str, dict]:
    """ "name=path,..." -> name -> parsed table (qmm_tuned.parse_table of the file)."""
    import json

    out = {}
    for part in filter(None, spec.split(",")):
        name, path = part.split("=", 1)
        out[name] = qmm_tuned.parse_table(json.loads(Path(path).read_text()))
    return out


TABLES = tables(os.environ.get("S9_TABLES", ""))


def use_table(name: str, caches: dict) -> None:
    """Point the shipped-pick lookup at table `name` and the tuner's pick cache at that table's own dict."""
    table = TABLES[name]
    qmm_tuned.load_table = lambda slug, directory=None: table  # type: ignore[assignment]
    quant_matmul_config._TUNED = caches.setdefault(name, {})


def _use_runner_table(runner, name: str) -> None:  # type: ignore[no-untyped-def]
    use_table(name, runner.__dict__.setdefault("_s9_tuned", {}))  # each table's pick cache kept on the runner


alternating_times = pd_decode.variant_times("s9", "tables", _use_runner_table)  # over S9_TABLES names


if __name__ == "__main__":
    bench_decode.alternating_times = alternating_times
    bench_decode.main()
