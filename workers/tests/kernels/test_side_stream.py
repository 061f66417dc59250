"""kernels/side_stream.py on the CPU (torch.cuda.Stream and current_device faked): one stream per device index and
priority, None follows the current device, a CPU device is refused; and the decode / prefill graph warm-ups and the tuner's
timing graphs ask for it (a new torch.cuda.Stream per warm-up kept a 32 MiB cuBLAS workspace each on the H200)."""

from __future__ import annotations

import inspect

import pytest
import torch
from inlaid_worker.kernels import quant_matmul_config, side_stream
from inlaid_worker.model import decode_graphs, prefill_graphs


def test_one_stream_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[tuple[torch.device, int]] = []

    class FakeStream:
        def __init__(self, device: torch.device, priority: int = 0) -> None:
            made.append((device, priority))

    monkeypatch.setattr(side_stream, "_STREAMS", {})
    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    a = side_stream.side_stream(torch.device("cuda", 0))
    assert side_stream.side_stream(torch.device("cuda", 0)) is a
    b = side_stream.side_stream(None)  # the current device: 1
    assert b is not a and side_stream.side_stream(torch.device("cuda")) is b
    assert side_stream.side_stream(torch.device("cuda", 1)) is b
    high = side_stream.side_stream(torch.device("cuda", 1), priority=-1)  # lora_early's fork: its own, cached too
    assert high is not b and side_stream.side_stream(None, priority=-1) is high
    assert made == [(torch.device("cuda", 0), 0), (torch.device("cuda", 1), 0), (torch.device("cuda", 1), -1)]
    with pytest.raises(ValueError, match="not a CUDA device"):
        side_stream.side_stream(torch.device("cpu"))


def test_the_warm_ups_use_it() -> None:
    for fn in (decode_graphs.DecodeGraphs._capture, prefill_graphs.PrefillGraphs._record, quant_matmul_config._graph_ms):
        src = inspect.getsource(fn)
        assert "side_stream(" in src and "torch.cuda.Stream(" not in src, fn.__qualname__
