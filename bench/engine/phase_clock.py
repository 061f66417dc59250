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


def wrap_engine_phases(engine: Any, wrap: Callable[[str, Callable[..., Any]], Callable[..., Any]]) -> None:
    """Time an LLMEngine's own phases in place: schedule, commit, adapters, post (the caller wraps the runner,
    the step builder, the sampler and the detokenizer, which differ between the benches)."""
    sch = engine.scheduler
    sch.schedule = wrap("schedule", sch.schedule)
    sch.commit = wrap("commit", sch.commit)
    engine._assign_adapter_slots = wrap("adapters", engine._assign_adapter_slots)
    engine._postprocess = wrap("post", engine._postprocess)
