"""One re-quantization job's progress: an append-only event log that any number of callers can follow
(a caller that attaches late, e.g. a restarted gateway, first replays what it missed)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

Stage = Literal["planned", "layer", "done", "failed"]
TERMINAL: tuple[Stage, ...] = ("done", "failed")


@dataclass(frozen=True)
class Progress:
    stage: Stage
    layer: int = 0
    num_layers: int = 0
    hessian_seconds: float = 0.0  # fresh task Hessians + merge (max) + GPTQ for this layer
    swap_seconds: float = 0.0  # dequantize + wait for a step boundary + swap
    checkpoint_version: int = 0
    tasks: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    message: str = ""


class RequantizeJob:
    def __init__(self, added: tuple[str, ...], removed: tuple[str, ...]) -> None:
        self.added, self.removed = added, removed
        self._events: list[Progress] = []
        self._cond = threading.Condition()

    def covers(self, added: set[str], removed: set[str]) -> bool:
        return added <= set(self.added) and removed <= set(self.removed)

    def publish(self, event: Progress) -> None:
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()

    @property
    def finished(self) -> bool:
        with self._cond:
            return bool(self._events) and self._events[-1].stage in TERMINAL

    @property
    def events(self) -> list[Progress]:
        with self._cond:
            return list(self._events)

    def follow(self, poll_s: float = 0.5) -> Iterator[Progress]:
        """Every event from the first, blocking for new ones, until a terminal event."""
        i = 0
        while True:
            with self._cond:
                while i >= len(self._events):
                    self._cond.wait(poll_s)
                event = self._events[i]
            i += 1
            yield event
            if event.stage in TERMINAL:
                return
