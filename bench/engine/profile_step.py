"""torch.profiler over a few decode steps of a runner: where a step's time goes (top kernels by GPU time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from inlaid_worker.model.step_input import StepInput


def profile_step(runner, step: StepInput, name: str, out_dir: Path, reps: int = 3) -> tuple[Any, str]:  # type: ignore[no-untyped-def]
    """Runs `step` reps times under the profiler (after 2 warm-ups); writes and returns (profile, top-30 table)."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(2):
        runner.execute(step)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=acts) as prof:
        for _ in range(reps):
            runner.execute(step)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    key = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=30, max_name_column_width=60)
    text = f"## {name} ({reps} steps)\n{table}\n"
    (out_dir / f"profile-{name}.txt").write_text(text)
    return prof, text


def kernel_times(prof: Any, steps: int) -> dict[str, dict[str, float]]:
    """GPU kernels (and copies) of a profile: {name: {"us_per_step", "calls_per_step", "us_per_call"}}, by time."""
    out = {}
    for evt in prof.key_averages():
        us = float(getattr(evt, "self_device_time_total", 0.0) or getattr(evt, "self_cuda_time_total", 0.0) or 0.0)
        if us <= 0 or evt.key.startswith("aten::") or evt.key.startswith("cuda"):
            continue
        calls = max(1, evt.count)
        out[evt.key[:80]] = dict(us_per_step=us / steps, calls_per_step=calls / steps, us_per_call=us / calls)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["us_per_step"]))
