"""How the background re-quantization shares the machine with the serving loop.

Measured on the 2-core dev VM (bench/results/onboard-2026-11-29-v2.md): run as a thread of the worker, the
quantizer's GPTQ column loop (thousands of tiny torch calls per linear, each taking and dropping the GIL)
and the engine step loop (also many small torch calls) take turns on the GIL: an engine step took 22-29 ms of wall
for 6 ms of its thread's CPU (10 ms without the quantizer) and serving lost 55-64% of its tokens/s. Hence the default: a child process (its own interpreter and GIL, its own
torch thread pool of `threads`), optionally at a lower CPU priority (`nice`; off by default: at nice 10 on the
oversubscribed dev VM the child's start-up starved for ~80 s) and optionally paced to `max_share` of wall
time (after a layer that took t seconds of work it sleeps t * (1 / max_share - 1)). The child's torch threads
default to a quarter of the cores the worker may use (1 on the 2-core dev VM, 4 on a 16-core GPU host;
`INLAID_QUANTIZER_THREADS` overrides): its host-side work (Hessian folding, triangle unpacking, writes)
uses them while the rest stay with the serving loop. `INLAID_QUANTIZER_MAX_SHARE` sets `max_share` (default 1).

With CUDA decode graphs (the triton backend on a GPU), a finished layer is copied into the serving tensors in
place (layer_swap), so a job triggers no graph capture. Process mode is the safe one there: the worker then
makes CUDA calls from its engine thread only. Thread mode runs the quantizer's kernels and allocations in the
worker process; should the engine capture a graph meanwhile (a batch bucket seen for the first time), PyTorch's
default global capture mode lets an unsafe CUDA call of the quantizer thread (a cudaMalloc, a sync)
fail that capture (not measured here).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["thread", "process"]
THREADS_ENV = "INLAID_QUANTIZER_THREADS"
MAX_SHARE_ENV = "INLAID_QUANTIZER_MAX_SHARE"


def default_threads() -> int:
    raw = os.environ.get(THREADS_ENV, "").strip()
    if raw:
        if not raw.isdigit() or int(raw) <= 0:
            raise ValueError(f"{THREADS_ENV} must be a positive integer, got {raw!r}")
        return int(raw)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores // 4))


def default_max_share() -> float:
    raw = os.environ.get(MAX_SHARE_ENV, "").strip()
    try:
        return float(raw) if raw else 1.0
    except ValueError:
        raise ValueError(f"{MAX_SHARE_ENV} must be a number in (0, 1], got {raw!r}") from None


@dataclass(frozen=True)
class BackgroundLimits:
    mode: Mode = "process"
    nice: int = 0  # niceness added to the quantizer process (0..19; 10 starved it on a busy host); thread: ignored
    threads: int = field(default_factory=default_threads)  # torch intra-op threads of the quantizer process
    # fraction of wall time the quantizer may spend working, paced between layers
    max_share: float = field(default_factory=default_max_share)

    def __post_init__(self) -> None:
        if self.mode not in ("thread", "process"):
            raise ValueError(f"background mode must be 'thread' or 'process', got {self.mode!r}")
        if not 0 <= self.nice <= 19:
            raise ValueError(f"nice must be in 0..19, got {self.nice}")
        if self.threads <= 0:
            raise ValueError(f"threads must be positive, got {self.threads}")
        if not 0 < self.max_share <= 1:
            raise ValueError(f"max_share must be in (0, 1], got {self.max_share}")


class Pacer:
    """Keeps the work between two `pause()` calls at most `share` of the wall time (duty cycle)."""

    def __init__(self, share: float) -> None:
        self.share = share
        self._mark = time.perf_counter()
        self.slept = 0.0

    def pause(self) -> float:
        """Sleep after a unit of work; returns the seconds slept."""
        worked = time.perf_counter() - self._mark
        rest = worked * (1.0 / self.share - 1.0) if self.share < 1 else 0.0
        if rest > 0:
            time.sleep(rest)
        self.slept += rest
        self._mark = time.perf_counter()
        return rest
