"""torch.profiler over a few decode steps of a runner: where a step's time goes (top kernels by GPU time)."""

from __future__ import annotations

from pathlib import Path

import torch
from inlaid_worker.model.step_input import StepInput


def profile_step(runner, step: StepInput, name: str, out_dir: Path, reps: int = 3) -> str:  # type: ignore[no-untyped-def]
    """Runs `step` reps times under the profiler (after 2 warm-ups); writes and returns the top-30 table."""
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
    return text
