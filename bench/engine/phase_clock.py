"""Per-phase wall time of wrapped callables (decode_host.py's and engine_host.py's engine loops)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def phase_timer(acc: dict[str, float], clock: Callable[[], float] = time.perf_counter
                ) -> Callable[[str, Callable[..., Any]], Callable[..., Any]]:  # fmt: skip
    """wrap(phase, fn): fn that adds its wall time (seconds, exceptions included) to acc[phase]."""

    def wrap(phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*a: Any, **k: Any) -> Any:
            t0 = clock()
            try:
                return fn(*a, **k)
            finally:
                acc[phase] += clock() - t0

        return timed

    return wrap
