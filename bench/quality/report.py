"""Markdown + JSON report of full.py's state: the two tables, the goal check, timings, the HF cross-check."""

from __future__ import annotations

import json
from pathlib import Path

from inlaid_worker.tasks.spec import get_task
from table import ROW_NAMES, ROW_ORDER, markdown, summarize


def goal_check(summary: dict, row: str = "mlgptq") -> dict:
    """`row`'s mean relative drop against half of GPTQ-tweaked's and of RTN's (None where a row is missing);
    drops are reported under the keys mlgptq (= row), gptq, rtn."""
    drop = {m: (summary.get(r) or {}).get("mean_rel_drop")
            for m, r in (("mlgptq", row), ("gptq", "gptq"), ("rtn", "rtn"))}
    if any(v is None for v in drop.values()):
        return {"drops": drop, "met": None}
    met = drop["mlgptq"] <= 0.5 * drop["gptq"] and drop["mlgptq"] <= 0.5 * drop["rtn"]
    return {"drops": drop, "met": bool(met)}


def heldout_rows(values: dict[str, float], tasks: list[str], bits: int) -> dict[str, float]:
    """{method: mean over tasks and seeds of the held-out relative layer error} (heldout.py)."""
    summary = summarize(values, tasks, bits)
    return {m: sum(v[0] for v in row["tasks"].values()) / len(row["tasks"])
            for m, row in summary.items() if m != "fp"}


def write_report(out: Path, state: dict, tasks: list[str], bits_list: list[int], group_size: int,
                 methods: list[str]) -> None:
    meta = state.get("meta", {})
    heads = {t: get_task(t).metric for t in tasks}
    summaries = {b: summarize(state["cells"], tasks, b) for b in bits_list}
    goals = {b: goal_check(summaries[b]) for b in bits_list}
    variant_goals = {b: {m: goal_check(summaries[b], m) for m in summaries[b] if m.startswith("mlgptq")}
                     for b in bits_list}
    shipped = state.get("cells_shipped")
    if shipped:  # enlarged tasks scored on their shipped test split only, the others as they are
        shipped = {**state["cells"], **shipped}
    shipped_summaries = {b: summarize(shipped, tasks, b) for b in bits_list} if shipped else {}
    heldout = {b: heldout_rows(state["heldout"], tasks, b) for b in bits_list} if state.get("heldout") else {}
    md = [
        f"# Quality table, all tasks, task metrics ({meta.get('date', '?')}, {meta.get('device', '?')})",
        "",
        f"Command: `{meta.get('command', '')}`",
        "",
        f"Setup: {json.dumps({k: meta.get(k) for k in ('calib_n', 'group_size', 'limit', 'seeds', 'torch', 'act_order', 'test_sizes')})}; "
        "cells are mean ± standard deviation over calibration seeds (RTN and unquantized have none); "
        "last column: mean over tasks of the relative drop against unquantized, mean ± std over seeds.",
        "",
    ]
    for b in bits_list:
        md.append(markdown(summaries[b], tasks, heads, b, group_size))
        g = goals[b]
        d = g["drops"]
        if g["met"] is not None:
            md.append(
                f"Goal at {b}-bit (MLGPTQ's drop at most half of GPTQ-tweaked's and RTN's): "
                f"MLGPTQ {d['mlgptq']:.2f}% vs GPTQ-tweaked {d['gptq']:.2f}% and RTN {d['rtn']:.2f}%: "
                f"**{'met' if g['met'] else 'not met'}**.\n"
            )
        others = [f"{ROW_NAMES[m]} {v['drops']['mlgptq']:.2f}% ({'met' if v['met'] else 'not met'})"
                  for m, v in variant_goals[b].items() if m != "mlgptq" and v["met"] is not None]
        if others:
            md.append(f"The same check with each other MLGPTQ row in MLGPTQ's place: {'; '.join(others)}.\n")
    if shipped_summaries:
        md += ["Mean relative drop with the enlarged tasks scored on their shipped test split only (the first "
               "lines of the enlarged file), comparable with tables made before the enlargement:", "",
               "| method | " + " | ".join(f"{b}-bit" for b in bits_list) + " |", "|---|" + "---|" * len(bits_list)]
        for m in ROW_ORDER:
            if m == "fp" or not all(m in shipped_summaries[b] for b in bits_list):
                continue
            cells = [shipped_summaries[b][m] for b in bits_list]
            md.append(f"| {ROW_NAMES[m]} | " + " | ".join(
                "-" if c["mean_rel_drop"] is None else f"{c['mean_rel_drop']:.2f}% ± {c['std_rel_drop']:.2f}"
                for c in cells) + " |")
        md.append("")
    if heldout:
        md += [f"Held-out layer error (heldout.py; {meta.get('heldout_n')} train-split sequences per task, "
               "adapter on; mean over tasks, seeds, layers and input groups of tr(dW H dW^T) / tr(W H W^T), "
               "x 1e-3; lower is better; no test data involved):", "",
               "| method | " + " | ".join(f"{b}-bit" for b in bits_list) + " |", "|---|" + "---|" * len(bits_list)]
        for m in ROW_ORDER:
            if all(m in heldout[b] for b in bits_list):
                md.append(f"| {ROW_NAMES[m]} | " + " | ".join(f"{1e3 * heldout[b][m]:.3f}" for b in bits_list) + " |")
        md.append("")
    if state.get("hf_check"):
        md += ["HF cross-check of the batched evaluator (unquantized + adapter, HF `generate` in fp32 vs the "
               "batched multi-model generator with TF32 matmuls):", ""]
        md += [f"- {t}: HF {v.get('hf_generate', float('nan')):.2f}, batched {v.get('batched', float('nan')):.2f}"
               for t, v in state["hf_check"].items()]
        md.append("")
    if state.get("timings"):
        md += ["Timings on the device (seconds):", ""]
        md += [f"- {k}: {v}" for k, v in state["timings"].items()]
        md.append("")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(md))
    out.with_suffix(".json").write_text(json.dumps(
        {"meta": meta, "summary": summaries, "goal": goals, "goal_variants": variant_goals,
         "summary_shipped_splits": shipped_summaries, "heldout_layer_error": heldout,
         "timings": state.get("timings", {}),
         "hf_check": state.get("hf_check", {})}, indent=2, sort_keys=True) + "\n")
    print("\n".join(md), flush=True)
