"""Handing freed heap memory back to the OS after re-quantization work (glibc's `malloc_trim`).

Measured on the CPU with SmolLM2-135M (bench/results/quantizer-memory-2026-11-30-s10b.md). The quantizer child's
live heap (malloc's used bytes) grows by ~2 MiB a layer (the packed layers the checkpoint writer collects) while
the memory malloc holds free grew to 0.1-1.1 GiB over the 30 layers depending on the run (fragmentation: freed
chunks inside the heap are returned only when they sit at its top): hence the child's peak of 1.07-2.3 GB RSS.
No reference cycle holds a tensor (a `gc.collect()` after a layer finds ~24 small ctypes objects from
safetensors, no tensor; it did not lower the peak and cost ~0.2 s a layer). The worker, after a job, holds the
same live CPU tensors and malloc-used bytes as before it, plus ~0.5 GiB more free in its arenas (the staged
layers and the host copies kept for restore_layers, allocated and freed by its threads).

`malloc_trim(0)` walks every arena, gives the top back and `madvise`s away the free pages inside it: after each
layer in the child (quantizer_process.py; its peak median 1.07 / 1.17 GB forked / spawned instead of 1.15 /
1.74 GB, at ~1 s more system time of ~20 s, pages faulted in again) and once a job's host copies are dropped in
the worker (manager.py; 1.06 GB RSS after a job instead of 1.91, below its 1.35-1.41 GB idle size).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from collections.abc import Callable, Sequence
from typing import Any

# steps quantizer_process.py may run in the child after each layer (bench/onboard/quantizer_memory.py measures them)
RELEASE_STEPS = ("gc", "trim")


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        libc: Any = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim  # type: ignore[no-any-return]


def trim_heap() -> bool:
    """Give the free memory malloc holds back to the OS; True when glibc did release some."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


def release(steps: Sequence[str]) -> None:
    """Run `steps` (each one of RELEASE_STEPS, in order): "gc" a full collection, "trim" trim_heap()."""
    for step in steps:
        if step == "gc":
            gc.collect()
        elif step == "trim":
            trim_heap()
        else:
            raise ValueError(f"release steps must be among {', '.join(RELEASE_STEPS)}, got {step!r}")
