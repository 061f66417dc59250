"""Fixtures shared by the engine tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """Held compiles and replays (grammar_helpers.held_compiles) wait on it; opened at teardown so no thread is left
    blocked."""
    event = threading.Event()
    yield event
    event.set()
