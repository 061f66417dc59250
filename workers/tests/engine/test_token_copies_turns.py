"""TokenCopies' two buffers and events in turn, on the CPU (the coverage test_graph_greedy_ask's adopt test gave)."""
from typing import Any

import pytest
import torch
from inlaid_worker.engine import async_step


def test_next_alternates_buffers_and_events(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Any] = []

    class Ev:
        def __init__(self) -> None:
            made.append(self)

    monkeypatch.setattr(torch.cuda, "Event", Ev)
    copies = async_step.TokenCopies()
    copies._bufs = [torch.empty(128, dtype=torch.int64), torch.empty(128, dtype=torch.int64)]  # (no pinning on the CPU)
    got = [copies._next(3) for _ in range(3)]
    assert [e for _, e in got] == [made[0], made[1], made[0]] and len(made) == 2
    ptrs = [h.data_ptr() for h, _ in got]
    assert ptrs[0] == ptrs[2] != ptrs[1] and got[0][0].shape == (2, 3)
