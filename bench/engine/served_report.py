"""Markdown summary of a served-steps run (bench/engine/served_steps.py): step time per kind and path, the range of
step shapes the run covered, one-off steps, and what the requests saw. Pure: no torch."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

COST_KEYS = ("prefill_tokens", "decode_seqs", "distinct_adapters", "rank", "kv_tokens", "step_s")
ROW_BINS = ((1, 1), (2, 4), (5, 16), (17, 64), (65, 128), (129, 256))
ADAPTER_BINS = ((0, 0), (1, 1), (2, 4), (5, 8), (9, 16), (17, 32))


def kind(s: dict) -> str:
    if s["prefill_tokens"] and s["decode_seqs"]:
        return "mixed"
    return "prefill" if s["prefill_tokens"] else "decode"


def quantile(xs: Sequence[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def by_kind_table(steps: list[dict]) -> list[str]:
    lines = ["| phase | kind | path | steps | step ms p10 / median / p90 | rows median (max) | prefill tokens median (max) | "
             "distinct adapters median (max) | KV tokens median (max) |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for s in steps:
        groups.setdefault((s.get("phase", "trace"), kind(s), s["path"]), []).append(s)
    for (phase, k, path), g in sorted(groups.items()):
        ms = [1e3 * s["step_s"] for s in g]

        def med(f: str, g: list[dict] = g) -> str:
            return f"{statistics.median(s[f] for s in g):.0f} ({max(s[f] for s in g)})"

        lines.append(f"| {phase} | {k} | {path} | {len(g)} | {quantile(ms, 0.1):.2f} / {statistics.median(ms):.2f} / "
                     f"{quantile(ms, 0.9):.2f} | {med('rows')} | {med('prefill_tokens')} | {med('distinct_adapters')} | "
                     f"{med('kv_tokens')} |")  # fmt: skip
    return lines


def host_table(steps: list[dict]) -> list[str]:
    """Decode and mixed steps by rows: step time, the forward's GPU span (CUDA events), the host share (1 - GPU span
    / step time, median of the steps') and the host phases (served_steps.HostPhases). [] without phase fields."""
    timed = [s for s in steps if "pre_ms" in s and kind(s) != "prefill"]
    if not timed:
        return []
    gpu = any("fwd_gpu_ms" in s for s in timed)
    lines = ["| kind | rows | steps | step ms p10 / median / p90 | forward GPU ms median | host share median | "
             "pre / launch / post ms median |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for k in ("decode", "mixed"):
        for lo, hi in ROW_BINS:
            g = [s for s in timed if kind(s) == k and lo <= s["rows"] <= hi]
            if not g:
                continue
            ms = [1e3 * s["step_s"] for s in g]
            fwd = f"{statistics.median(s['fwd_gpu_ms'] for s in g):.2f}" if gpu else "-"
            share = f"{statistics.median(1 - s['fwd_gpu_ms'] / (1e3 * s['step_s']) for s in g):.0%}" if gpu else "-"
            ph = " / ".join(f"{statistics.median(s[f] for s in g):.2f}" for f in ("pre_ms", "launch_ms", "post_ms"))
            label = f"{lo}" if lo == hi else f"{lo}-{hi}"
            lines.append(f"| {k} | {label} | {len(g)} | {quantile(ms, 0.1):.2f} / {statistics.median(ms):.2f} / "
                         f"{quantile(ms, 0.9):.2f} | {fwd} | {share} | {ph} |")  # fmt: skip
    return lines


def coverage(steps: list[dict], field: str, bins: tuple[tuple[int, int], ...]) -> str:
    parts = []
    for lo, hi in bins:
        n = sum(1 for s in steps if lo <= s[field] <= hi)
        parts.append(f"{lo}-{hi}: {n}" if lo != hi else f"{lo}: {n}")
    return ", ".join(parts)


def requests_line(requests: dict[str, dict]) -> str:
    done = [r for k, r in requests.items() if k.startswith("r") and "finish_s" in r]
    if not done:
        return "no request finished"
    ttft = [r["first_s"] - r["arrival_s"] for r in done]
    tpot = [(r["finish_s"] - r["first_s"]) / (r["generated"] - 1) for r in done if r.get("generated", 0) > 1]
    return (f"{len(done)} of {sum(1 for k in requests if k.startswith('r'))} trace requests finished; TTFT median "
            f"{statistics.median(ttft):.3f} s (p90 {quantile(ttft, 0.9):.3f}); TPOT median "
            f"{1e3 * statistics.median(tpot) if tpot else float('nan'):.1f} ms (p90 "
            f"{1e3 * quantile(tpot, 0.9):.1f})")  # fmt: skip


def to_markdown(meta: dict, steps: list[dict], requests: dict[str, dict]) -> str:
    kept = [s for s in steps if not s["one_off"]]
    one_off = [s for s in steps if s["one_off"]]
    run = meta.get("run", {})
    busy = sum(s["step_s"] for s in steps if not s["one_off"])
    tokens = sum(s["decode_seqs"] for s in steps if not s["one_off"])
    out = [
        f"# Served engine steps ({meta['date']})",
        "",
        f"- command: `{meta['command']}`",
        f"- device: {meta['device']}; torch {meta['torch']}; shape {meta['shape']} {meta['quant']} ({meta['backend']}); "
        f"{meta['tasks']} tasks, rank-{meta['rank']} q/k/v/o adapters, {meta['adapter_slots']} device slots; "
        f"max {meta['max_num_seqs']} rows, {meta['max_batched_tokens']} tokens a step; {meta['kv_blocks']} KV blocks; "
        f"prefill graphs {'on' if meta.get('prefill_graphs') else 'off'}; INLAID_QMM_TUNED={meta['qmm_tuned']}",
        f"- set-up {meta.get('setup_s', 0):.1f} s, warm-up {meta.get('warmup_s', 0):.1f} s; grid {meta.get('grid', '-')}; "
        f"trace {run.get('trace_wall_s', 0):.1f} s wall (idle skipped {run.get('idle_skipped_s', 0):.1f} s, paused for "
        f"one-off steps {run.get('one_off_paused_s', 0):.1f} s; stop: {run.get('stop')}); "
        f"{run.get('added', 0)} of {meta['trace_requests']} trace requests added",
        f"- {len(steps)} steps: {len(kept)} cost points, {len(one_off)} one-off (compile / graph capture / warm-up: "
        f"{sum(s['step_s'] for s in one_off):.1f} s); adapter loads {sum(s['adapter_loads'] for s in steps)}, "
        f"preemptions {sum(s['preempted'] for s in steps)}; ~{tokens / busy if busy else 0:.0f} decode tokens/s over the cost points' time",
        f"- {requests_line(requests)}",
        "",
        "Cost points by kind and path (one-off steps left out):",
        "",
        *by_kind_table(kept),
        "",
        f"- rows per step: {coverage(kept, 'rows', ROW_BINS)}",
        f"- distinct adapters per step: {coverage(kept, 'distinct_adapters', ADAPTER_BINS)}",
        f"- KV tokens: max {max((s['kv_tokens'] for s in kept), default=0)}, median "
        f"{statistics.median(s['kv_tokens'] for s in kept) if kept else 0:.0f}",
        f"- steps with adapter loads: {sum(1 for s in kept if s['adapter_loads'])} (median step "
        f"{1e3 * statistics.median([s['step_s'] for s in kept if s['adapter_loads']] or [float('nan')]):.2f} ms)",
    ]
    host = host_table(kept)
    if host:
        out += ["", "Decode and mixed cost points by rows: where the step's time went (host share = 1 - the forward's "
                "GPU span / step time):", "", *host]  # fmt: skip
    return "\n".join(out) + "\n"
