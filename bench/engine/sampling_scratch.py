"""Peak scratch and time of one device_sampler.sample_batch call on CPU tensors (a stand-in for the GPU's scratch).

Peak: the most tensor bytes allocated by the call and alive at once, checked after every op through a dispatch mode
(tests/engine/device_sampler_cases.PeakBytes; the logits themselves and an op's internal buffers are not
counted). Time: median of --reps calls without the meter. --module loads another device_sampler.py (e.g. HEAD's, from
`git show HEAD:workers/inlaid_worker/engine/device_sampler.py > /tmp/ds_head.py`) for a before/after comparison.

    PYTHONPATH=workers:workers/tests/engine nice -n 10 .venv/bin/python bench/engine/sampling_scratch.py \
        --kind worst --rows 256 --vocab 32000 [--module /tmp/ds_head.py]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from types import ModuleType

import torch
from _modules import load_module
from device_sampler_cases import PeakBytes, generators, mixed_batch, mixed_case, worst_case


def load(path: str | None) -> ModuleType:
    if path is None:
        from inlaid_worker.engine import device_sampler

        return device_sampler
    return load_module("inlaid_worker.engine.device_sampler_other", path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", choices=["worst", "mixed", "plain"], default="worst")
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--module", default=None)
    args = ap.parse_args()
    ds = load(args.module)
    make = {"worst": lambda: worst_case(args.rows, args.vocab), "mixed": lambda: mixed_batch(7, args.rows, args.vocab),
            "plain": lambda: mixed_case(7, args.rows, args.vocab)}[args.kind]  # fmt: skip
    case = make()

    def call():  # type: ignore[no-untyped-def]
        return ds.sample_batch(case.logits, case.params, generators(case), case.histories, nucleus="sort",
                               banned=case.banned)  # fmt: skip

    with PeakBytes() as meter:
        out = call()
    times = []
    for _ in range(args.reps):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    bound = ds.sampler_scratch_bytes(args.vocab, args.rows) if hasattr(ds, "sampler_scratch_bytes") else None
    print(json.dumps({
        "module": args.module or "working tree", "kind": args.kind, "rows": args.rows, "vocab": args.vocab,
        "peak_mib": round(meter.peak / 2**20, 1), "bound_mib": None if bound is None else round(bound / 2**20, 1),
        "logits_mib": round(case.logits.numel() * 4 / 2**20, 1), "median_ms": round(statistics.median(times) * 1e3, 1),
        "token_checksum": sum(out.tokens), "threads": torch.get_num_threads(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
