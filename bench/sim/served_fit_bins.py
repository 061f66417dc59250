"""Relative error of calibration files' step costs on served cost points, by step kind and decode-row range: what a
single held-out median hides when most points are small decode steps (bench/results/h200-served-2026-11-30-v2.md).

  .venv/bin/python bench/sim/served_fit_bins.py --points bench/results/h200-served-2026-11-30-v2-points.json \
      libs/sim/calibration/h200-served.json OLD.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cost_fit import SIM_TERMS, parse_points, predict  # noqa: E402

ROW_BINS = ((0, 0), (1, 1), (2, 4), (5, 16), (17, 64), (65, 128), (129, 256), (0, 10**6))


def table(files: list[Path], points_path: Path) -> str:
    raw = json.loads(points_path.read_text())
    points = parse_points(raw["cost_points"] if isinstance(raw, dict) else raw)
    coefs = []
    for f in files:
        doc = json.loads(f.read_text())
        coefs.append((doc.get("label", f.stem), {k: float(doc.get(k) or 0.0) for k in SIM_TERMS}))
    head = "| kind | decode rows | points | measured ms median | " + " | ".join(
        f"{f.name}: error median / p90, predicted / measured time" for f in files) + " |"  # fmt: skip
    lines = [head, "|" + "---|" * (4 + len(files))]
    for kind in ("decode", "mixed", "prefill"):
        for lo, hi in ROW_BINS:
            pts = [p for p in points if p.kind == kind and lo <= p.decode_seqs <= hi]
            if not pts:
                continue
            meas = np.array([p.step_s for p in pts])
            cells = []
            for _, coef in coefs:
                pred = predict(coef, pts, "sim", 16)
                err = np.abs(pred - meas) / meas
                cells.append(f"{np.median(err):.0%} / {np.quantile(err, 0.9):.0%}, {pred.sum() / meas.sum():.2f}")
            rows = "all" if hi == 10**6 else f"{lo}" if lo == hi else f"{lo}-{hi}"
            lines.append(f"| {kind} | {rows} | {len(pts)} | {1e3 * np.median(meas):.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=Path, required=True)
    ap.add_argument("files", type=Path, nargs="+", help="calibration JSON files")
    args = ap.parse_args()
    print(table(args.files, args.points))


if __name__ == "__main__":
    main()
