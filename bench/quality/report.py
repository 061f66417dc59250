"""Markdown + JSON report of full.py's state: the two tables, the goal check, timings, the HF cross-check."""

from __future__ import annotations

import json
from pathlib import Path

from inlaid_worker.tasks.spec import get_task
from table import markdown, summarize


def goal_check(summary: dict) -> dict:
    """MLGPTQ's mean relative drop against half of GPTQ-tweaked's and of RTN's (None where a row is missing)."""
    drop = {m: (summary.get(m) or {}).get("mean_rel_drop") for m in ("mlgptq", "gptq", "rtn")}
    if any(v is None for v in drop.values()):
        return {"drops": drop, "met": None}
    met = drop["mlgptq"] <= 0.5 * drop["gptq"] and drop["mlgptq"] <= 0.5 * drop["rtn"]
    return {"drops": drop, "met": bool(met)}


def write_report(out: Path, state: dict, tasks: list[str], bits_list: list[int], group_size: int,
                 methods: list[str]) -> None:
    meta = state.get("meta", {})
    heads = {t: get_task(t).metric for t in tasks}
    summaries = {b: summarize(state["cells"], tasks, b) for b in bits_list}
    goals = {b: goal_check(summaries[b]) for b in bits_list}
    md = [
        f"# Quality table, all tasks, task metrics ({meta.get('date', '?')}, {meta.get('device', '?')})",
        "",
        f"Command: `{meta.get('command', '')}`",
        "",
        f"Setup: {json.dumps({k: meta.get(k) for k in ('calib_n', 'group_size', 'limit', 'seeds', 'torch')})}; "
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
        {"meta": meta, "summary": summaries, "goal": goals, "timings": state.get("timings", {}),
         "hf_check": state.get("hf_check", {})}, indent=2, sort_keys=True) + "\n")
    print("\n".join(md), flush=True)
