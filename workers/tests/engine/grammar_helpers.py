"""Test helper for the grammar cache's threads: compiles held on an event, so a test can fill the compile pool, queue
behind it, or close the cache under a running compile, and see which compiles started."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from inlaid_worker.engine.grammar_cache import GrammarCache
from inlaid_worker.engine.structured import StructuredOutput


def held_compiles(
    cache: GrammarCache,
    monkeypatch: pytest.MonkeyPatch,
    gate: threading.Event,
    prefix: str,
    wait_s: float | None = None,
) -> list[str]:
    """Compiles of specs starting with `prefix` wait for `gate` (at most wait_s; None: until it is set); the list
    names the specs whose compile has started, in order."""
    started: list[str] = []
    real_compile = cache._compile_now

    def compile_now(so: StructuredOutput) -> Any:
        started.append(so.spec)
        if so.spec.startswith(prefix):
            gate.wait(wait_s)
        return real_compile(so)

    monkeypatch.setattr(cache, "_compile_now", compile_now)
    return started
