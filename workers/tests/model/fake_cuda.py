"""CUDA graphs without CUDA, for CPU tests of decode_graphs / prefill_graphs: torch.cuda.CUDAGraph as a class whose
replay is logged, no graph pool, events and stagings that log themselves."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from inlaid_worker.model import decode_graphs


class FakeEvent:
    """A CUDA event whose record and synchronize append "record" / "wait" and `suffix` to the log."""

    def __init__(self, log: list[str], suffix: str = "") -> None:
        self.log, self.suffix = log, suffix

    def record(self, stream: Any = None) -> None:
        self.log.append(f"record{self.suffix}")

    def synchronize(self) -> None:
        self.log.append(f"wait{self.suffix}")


class FakeGraph:
    """A captured graph whose replay appends "replay" to the log (none: does nothing)."""

    def __init__(self, log: list[str] | None = None) -> None:
        self.log = log

    def replay(self) -> None:
        if self.log is not None:
            self.log.append("replay")


def fake_graphs(monkeypatch: pytest.MonkeyPatch, log: list[str] | None = None) -> None:
    """torch.cuda.CUDAGraph() makes a FakeGraph on `log`; graph_pool_handle() is None."""
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: None)

    class Graph(FakeGraph):  # a class: other modules' annotations use torch.cuda.CUDAGraph in unions
        def __init__(self) -> None:
            super().__init__(log)

    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)


def logged_graphs(monkeypatch: pytest.MonkeyPatch, event: Callable[[list[str]], Any] = FakeEvent) -> list[str]:
    """The log of decode_graphs' events (event(log) for each new one), fake graph replays and stagings, in order."""
    out: list[str] = []
    monkeypatch.setattr(decode_graphs, "new_event", lambda: event(out))
    fake_graphs(monkeypatch, out)
    log_calls(monkeypatch, decode_graphs, "stage_step", out, "stage")
    return out


def log_calls(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, log: list[str], entry: str) -> None:
    """module.name appends `entry` to the log, then runs as before."""
    real: Callable[..., Any] = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a: (log.append(entry), real(*a))[1])
