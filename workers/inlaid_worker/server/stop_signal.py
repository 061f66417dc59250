"""The worker's stop signals (SIGTERM, SIGINT), seen by the main thread whichever thread the kernel delivers them to.

A process-directed signal goes to any thread that does not block it: in the worker (gRPC, engine loop and torch threads)
often not the main one. Python's C-level handler then only marks the signal pending, and the Python handler runs when
the main thread next executes bytecode; a main thread blocked in `threading.Event().wait()` (a lock acquire the signal
never interrupts) never does, so the worker went on serving, never refusing new work nor saying it was draining,
until a later signal or a SIGKILL (CI's worker-draining flake: no event within 10 s of SIGTERM, one run in about 30
here). Python's wakeup fd is written from the C handler, on whichever thread it runs, so the main thread waits on it,
through a selector (epoll / kqueue / poll): select.select refuses an fd >= 1024 (FD_SETSIZE), and the worker's pipe is
created after CUDA, gRPC and the model's files may have opened that many.
"""

from __future__ import annotations

import os
import selectors
import signal
from collections.abc import Iterable
from types import FrameType

DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Installs handlers for `signums` (main thread only) at construction; wait() returns the first that arrives."""

    def __init__(self, signums: Iterable[int] = DEFAULT_SIGNALS) -> None:
        self._signums = frozenset(int(s) for s in signums)
        self._got: list[int] = []
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self._old_fd = signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        self._old = {s: signal.signal(s, self._on_signal) for s in self._signums}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._got.append(signum)

    def wait(self, backstop_s: float = 1.0) -> int:
        """Blocks until one of the signals arrived (also before this call) and returns it. `backstop_s`: how often the
        wait also looks at the Python handler's record (the wakeup fd says it first)."""
        with selectors.DefaultSelector() as selector:
            selector.register(self._r, selectors.EVENT_READ)
            while not self._got:
                if not selector.select(backstop_s):
                    continue
                try:
                    data = os.read(self._r, 512)
                except BlockingIOError:
                    continue
                for signum in data:  # the wakeup fd carries each signal's number, one byte each
                    if signum in self._signums:
                        return signum
        return self._got[0]

    def close(self) -> None:
        """Puts the previous handlers and wakeup fd back (tests; the worker exits instead)."""
        for s, handler in self._old.items():
            signal.signal(s, handler)
        signal.set_wakeup_fd(self._old_fd)
        os.close(self._r)
        os.close(self._w)
