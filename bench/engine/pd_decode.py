"""Session 8 (helper PD): the 7B int4 decode step with the PDL changes of this session off and on, alternating round
by round on ONE runner (bench_decode.py's --fusions alternation, reused): each "fusion" name here is a variant of
module switches, and each variant keeps its own set of decode graphs (the runner's DecodeGraphs dict is swapped, so
every variant is captured once with its switches and replayed as captured; the runner's fusion stays its default).
  old   quant_tcg.BALANCE off, paged_decode.TILES_PREFETCH 0 (HEAD's kernels)
  bal   quant_tcg.BALANCE on (ring GEMVs of one-wave grids padded under PDL)
  pre   paged_decode.TILES_PREFETCH 1 (the tiles attention's first tile before the PDL wait)
  both  both on
Usage: INLAID_QMM_TUNED=1 PYTHONPATH=workers python3 bench/engine/pd_decode.py <bench_decode.py arguments>
       --fusions old,bal,pre --fusion-rounds 3
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_decode  # noqa: E402
from inlaid_worker.kernels import paged_decode, quant_tcg  # noqa: E402
from steps import timed_all  # noqa: E402

SWITCHES = {"old": (False, 0), "bal": (True, 0), "pre": (False, 1), "both": (True, 1)}


def variant_times(tag: str, what: str, apply: Callable[[Any, str], None]) -> Callable[..., list[tuple]]:
    """A bench_decode.alternating_times whose --fusions names are this script's variants (`what`): before each
    variant's reps, `apply(runner, name)` sets it up and the runner's decode graphs are swapped to that variant's own
    set (kept on the DecodeGraphs object under `_<tag>_sets`), so each variant is captured once and replayed."""

    def alternating_times(runner, step, args, attr: str, values: list, rounds: int) -> list[tuple]:  # type: ignore[no-untyped-def]  # noqa: E501
        if attr != "decode_fusion":
            raise ValueError(f"{tag}_decode alternates its {what} through --fusions")
        dg = runner._graphs  # None without CUDA graphs (CPU): the variants' setup alone
        sets = dg.__dict__.setdefault(f"_{tag}_sets", {}) if dg is not None else {}
        per: dict = {v: [] for v in values}
        medians: dict = {v: [] for v in values}
        for _ in range(rounds):
            for v in values:
                apply(runner, v)
                if dg is not None:
                    dg._graphs = sets.setdefault(v, {})
                times = timed_all(lambda: runner.execute(step), args.device_, args.warmup, args.reps)
                per[v] += times
                medians[v].append(round(sorted(times)[len(times) // 2] * 1e3, 4))
        return [(v, sorted(per[v])[len(per[v]) // 2], medians[v]) for v in values]

    return alternating_times


def _switch(runner: Any, name: str) -> None:
    quant_tcg.BALANCE, paged_decode.TILES_PREFETCH = SWITCHES[name]


alternating_times = variant_times("pd", "variants", _switch)  # bench_decode.alternating_times over SWITCHES keys


if __name__ == "__main__":
    bench_decode.alternating_times = alternating_times
    bench_decode.main()
