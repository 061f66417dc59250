"""Event-timed CUDA graph replays, shared by the bench scripts (s9b_profile re-exports it for its importers)."""

from __future__ import annotations

import torch


def replay_ms(g: torch.cuda.CUDAGraph, n: int) -> float:
    """Device ms per replay of n back-to-back replays (event-timed)."""
    a, z = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    a.record()
    for _ in range(n):
        g.replay()
    z.record()
    z.synchronize()
    return a.elapsed_time(z) / n
