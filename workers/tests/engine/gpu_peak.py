"""Peak device memory of one call, for the GPU memory tests of the samplers."""

from __future__ import annotations

from collections.abc import Callable

import torch

SLACK = 16 << 20  # the caching allocator rounds blocks (512 B small, 2 MiB large segments' splits)


def peak_bytes(fn: Callable[[], object]) -> int:
    """Bytes allocated at the call's peak above what was allocated before it (after one warm-up call)."""
    fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base
