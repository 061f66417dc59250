"""Held-out error of a CPU calibration (bench/sim/calibrate_cpu.py) from its raw points, without re-timing anything.

calibrate_cpu.py reports the error of its fit on the shapes it was fitted on. This script rebuilds the same shapes
from `<calibration>.points.json` (prefill steps as they are, each run of decode steps as its median), holds out every
5th shape of a deterministic order (sorted by kind and shape, as bench/sim/cost_fit.py does), fits the same
non-negative least squares on the rest and reports the relative error on the held-out shapes, plus the fitted terms
of that training fit. With --write the result goes into the calibration's `fit_error.held_out` (nothing else changes).

  .venv/bin/python bench/sim/cpu_fit_holdout.py libs/sim/calibration/cpu-tiny-measured-s7.json [--write]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from calibrate_cpu import FEATURES, nnls_fit, per_shape_medians  # noqa: E402

HOLDOUT_EVERY = 5


def design(shapes: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    x = np.array(
        [[1, q["prefill_tokens"], q["decode_rows"], q["adapters"], q["kv_tokens"]] for q in shapes], dtype=float
    )
    return x, np.array([q["step_s"] for q in shapes])


def summary(rel: np.ndarray) -> dict:
    return {
        "median_rel": float(np.median(rel)),
        "p90_rel": float(np.quantile(rel, 0.9)),
        "mean_rel": float(np.mean(rel)),
        "n": int(rel.size),
    }


def held_out(points: list[dict]) -> dict:
    shapes = per_shape_medians(points)
    order = sorted(
        shapes,
        key=lambda q: (q["decode_rows"] > 0, q["decode_rows"], q["adapters"], q["prefill_tokens"], q["kv_tokens"]),
    )
    pick = HOLDOUT_EVERY // 2
    train = [q for i, q in enumerate(order) if i % HOLDOUT_EVERY != pick]
    held = [q for i, q in enumerate(order) if i % HOLDOUT_EVERY == pick]
    xt, yt = design(train)
    xh, yh = design(held)
    coef = nnls_fit(xt, yt)
    xa, ya = design(shapes)
    coef_all = nnls_fit(xa, ya)
    return {
        "method": f"every {HOLDOUT_EVERY}th shape (sorted by kind and shape) held out, non-negative least squares on the rest",
        "held_out": summary(np.abs(xh @ coef - yh) / yh),
        "in_sample_all_shapes": summary(np.abs(xa @ coef_all - ya) / ya),
        "train_fit": dict(zip(FEATURES, (float(c) for c in coef))),
        "n_train": len(train),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("calibration", type=Path)
    p.add_argument(
        "--write", action="store_true", help="store the result as fit_error.held_out in the calibration file"
    )
    args = p.parse_args()
    points = json.loads(args.calibration.with_name(args.calibration.name.replace(".json", ".points.json")).read_text())
    res = held_out(points)
    print(json.dumps(res, indent=1))
    if args.write:
        cal = json.loads(args.calibration.read_text())
        cal["fit_error"]["held_out"] = {**res["held_out"], "method": res["method"], "train_fit": res["train_fit"]}
        args.calibration.write_text(json.dumps(cal, indent=2) + "\n")


if __name__ == "__main__":
    main()
