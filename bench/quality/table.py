"""The quality table (pure): cells of (method, bits, seed, task) -> mean/std per task, mean relative drop.

A cell's value is the task's headline metric. Rows: fp (unquantized), rtn, gptq (GPTQ-tweaked, pooled),
mlgptq, gptq-task (per-task GPTQ). Relative drop of a task = (fp - q) / fp; a row's last column is the
mean of those drops over tasks (in percent). For a lower-is-better metric (answer NLL) the drop is the
relative increase (q - fp) / fp.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence

ROW_ORDER = (
    "fp", "mlgptq", "mlgptq-max", "mlgptq-mean", "mlgptq-trace", "mlgptq-ao", "mlgptq-damp", "gptq", "rtn",
    "gptq-task",
)
ROW_NAMES = {
    "fp": "unquantized",
    "mlgptq": "MLGPTQ",
    "mlgptq-max": "MLGPTQ, element-wise max (paper)",
    "mlgptq-mean": "MLGPTQ, mean of task Hessians",
    "mlgptq-trace": "MLGPTQ, trace-normalised mean",
    "mlgptq-ao": "MLGPTQ, act-order",
    "mlgptq-damp": "MLGPTQ, damping 0.1",
    "gptq": "GPTQ-tweaked (pooled)",
    "rtn": "RTN",
    "gptq-task": "per-task GPTQ",
}


def cell_key(method: str, bits: int | None, seed: int | None, task: str) -> str:
    return f"{method}|{bits}|{seed}|{task}"


def summarize(
    cells: dict[str, float], tasks: Sequence[str], bits: int, lower_is_better: bool = False
) -> dict[str, dict]:
    """{method: {"tasks": {task: (mean, std, n)}, "mean_rel_drop": pct, "std_rel_drop": pct}}."""
    by: dict[tuple[str, str], list[float]] = defaultdict(list)
    drops_by_seed: dict[tuple[str, int | None], dict[str, float]] = defaultdict(dict)
    fp = {t: cells[cell_key("fp", None, None, t)] for t in tasks if cell_key("fp", None, None, t) in cells}
    for key, value in cells.items():
        method, b, seed, task = key.split("|")
        if task not in tasks or (method != "fp" and b != str(bits)):
            continue
        by[(method, task)].append(value)
        if task in fp and fp[task] > 0:
            worse = value - fp[task] if lower_is_better else fp[task] - value
            drops_by_seed[(method, None if seed == "None" else int(seed))][task] = worse / fp[task]
    out: dict[str, dict] = {}
    for method in ROW_ORDER:
        row = {t: _stats(by[(method, t)]) for t in tasks if by.get((method, t))}
        if not row:
            continue
        per_seed = [
            100 * statistics.fmean(d.values())
            for (m, _s), d in drops_by_seed.items()
            if m == method and len(d) == sum(1 for v in fp.values() if v > 0)
        ]
        out[method] = {
            "tasks": row,
            "mean_rel_drop": _stats(per_seed)[0] if per_seed else None,
            "std_rel_drop": _stats(per_seed)[1] if per_seed else None,
        }
    return out


def _stats(xs: Iterable[float]) -> tuple[float, float, int]:
    xs = list(xs)
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0), len(xs)


def markdown(
    summary: dict[str, dict], tasks: Sequence[str], headlines: dict[str, str], bits: int, group_size: int,
    last: str = "mean rel. drop",
) -> str:
    head = "| method | " + " | ".join(f"{t} ({headlines[t]})" for t in tasks) + f" | {last} |"
    lines = [f"### {bits}-bit, group size {group_size}", "", head, "|" + "---|" * (len(tasks) + 2)]
    for method, row in summary.items():
        vals = []
        for t in tasks:
            if t not in row["tasks"]:
                vals.append("-")
                continue
            mean, std, n = row["tasks"][t]
            vals.append(f"{mean:.2f}" + (f" ± {std:.2f}" if n > 1 else ""))
        drop = row["mean_rel_drop"]
        drop_s = "-" if drop is None or method == "fp" else f"{drop:.2f}% ± {row['std_rel_drop']:.2f}"
        lines.append(f"| {ROW_NAMES[method]} | " + " | ".join(vals) + f" | {drop_s} |")
    return "\n".join(lines) + "\n"
