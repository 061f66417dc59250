"""Test helpers: build engines on tiny models and drive them to completion."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inlaid_worker.engine.engine import LLMEngine, RequestOutput
from inlaid_worker.engine.factory import EngineOptions, create_engine

# prompts of mixed kinds (long, multi-byte UTF-8, code, short, numbers) for tests that compare two engines' outputs
MIXED_PROMPTS = [
    "The capital of France is Paris. The capital of Italy is Rome. The capital of Japan is",
    "Unicode: café, 日本語 🙂",
    "def add(a, b):",
    "Hello",
    "Numbers: 1 2 3",
]


def engine_for(model_dir: Path, adapters: dict[str, Path] | None = None, **options: int) -> LLMEngine:
    from inlaid_worker.engine.factory import add_adapter_dir

    engine = create_engine(model_dir, EngineOptions(**options))  # type: ignore[arg-type]
    for name, path in (adapters or {}).items():
        add_adapter_dir(engine, name, path, model_dir)
    return engine


# a device fault as torch raises it (simulated in the tests that inject one)
FAULT = "CUDA error: an illegal memory access was encountered (simulated)"


def drain_outbox(
    outbox: queue.Queue,
    done: Callable[[list[Any]], bool],
    seconds: float = 20,
    keep: Callable[[Any], bool] = lambda ev: True,
) -> list[Any]:
    """An engine-loop session's events, taken from its outbox until done(events kept so far) or `seconds` pass; keep:
    which events go into the list (the others are taken and dropped)."""
    events: list[Any] = []
    deadline = time.monotonic() + seconds
    while not done(events) and time.monotonic() < deadline:
        try:
            ev = outbox.get(timeout=0.2)
        except queue.Empty:
            continue
        if keep(ev):
            events.append(ev)
    return events


def drain(
    engine: LLMEngine, outputs: dict[str, list[RequestOutput]] | None = None
) -> dict[str, list[RequestOutput]]:
    outputs = {} if outputs is None else outputs
    while engine.has_work:
        for out in engine.step():
            outputs.setdefault(out.request_id, []).append(out)
    return outputs


def tokens(outs: list[RequestOutput]) -> list[int]:
    return [t for o in outs for t in o.token_ids]


def text(outs: list[RequestOutput]) -> str:
    return "".join(o.text for o in outs)
