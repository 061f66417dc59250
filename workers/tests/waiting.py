"""Polling helper for tests that wait on other threads."""

from __future__ import annotations

import time
from collections.abc import Callable


def until(check: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    """True as soon as check() is; False once timeout_s has passed without it."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
