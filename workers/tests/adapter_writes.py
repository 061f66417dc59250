"""Helpers of the adapter digest tests (lora/test_adapter_digest.py, server/test_worker_adapter_digest.py): a file
rewritten in place, and a call-counting wrapper around one of lora.adapter's read functions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from inlaid_worker.lora import adapter as adapter_mod


def write_in_place(path: Path, data: bytes) -> None:
    """`data` into the file at `path` in place (the same inode: no rename), as a writer that truncates and writes."""
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write(data)


def counting(
    monkeypatch: pytest.MonkeyPatch,
    attr: str,
    before: Callable[[int], object] | None = None,
    after: Callable[[int], object] | None = None,
) -> list[int]:
    """Patches lora.adapter's `attr` (for the test) with a wrapper that counts its calls: the list it answers gets each
    call's number (1, 2, ...); `before(n)` runs ahead of call n, `after(n)` once it returned or raised."""
    real = getattr(adapter_mod, attr)
    calls: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        n = len(calls) + 1
        if before is not None:
            before(n)
        calls.append(n)
        try:
            return real(*args, **kwargs)
        finally:
            if after is not None:
                after(n)

    monkeypatch.setattr(adapter_mod, attr, counted)
    return calls
