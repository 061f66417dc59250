"""The graphs' pinned input buffers (decode_graphs.Staging) and their host logits, on the CPU with fakes.

A bucket's staging buffer is refilled only after the event recorded behind its last copy (not after a sync of the
whole stream, which engine.settle did for every step that samples nothing); the pinned host-logits buffers exist
only once a step asks for host logits (execute), never on the device-sampling path (execute_device). The GPU race
itself (a busy stream, two same-bucket steps) is checked in test_graph_staging_gpu.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from factories import make_step, make_tiny_llama
from fake_cuda import FakeEvent, FakeGraph, log_calls, logged_graphs
from inlaid_worker.model import prefill_graphs
from inlaid_worker.model.config import load_model_config
from inlaid_worker.model.decode_graphs import DecodeGraphs, Staging, _Graph
from inlaid_worker.model.prefill_graphs import PrefillGraphs

BS = 4
VOCAB = 7


class NumberedEvent(FakeEvent):
    """Logs "new<n>" when made (n: events made before it on this log), then its records and waits as "record<n>"."""

    def __init__(self, log: list[str]) -> None:
        self.n = len([e for e in log if e.startswith("new")])
        log.append(f"new{self.n}")
        super().__init__(log, str(self.n))


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every event, graph replay and staging fill, in order; no CUDA needed."""
    out = logged_graphs(monkeypatch, NumberedEvent)
    log_calls(monkeypatch, prefill_graphs, "stage_prefill", out, "stage")
    return out


def test_staging_waits_for_its_last_copy_before_it_is_refilled(log: list[str]) -> None:
    host, dev = torch.zeros(3, dtype=torch.int32), torch.full((3,), -1, dtype=torch.int32)
    s = Staging(host, dev)
    s.send(lambda buf: (log.append("fill"), buf.fill_(1)))
    assert dev.tolist() == [1, 1, 1]
    s.send(lambda buf: (log.append("fill"), buf.fill_(2)))
    assert dev.tolist() == [2, 2, 2]
    assert log == ["fill", "new0", "record0", "wait0", "fill", "record0"]  # one event, reused


def test_staging_without_a_device_twin_only_fills(log: list[str]) -> None:
    buf = torch.zeros(2, dtype=torch.int32)
    s = Staging(buf, buf)
    s.send(lambda b: b.fill_(5))
    s.send(lambda b: b.fill_(6))
    assert buf.tolist() == [6, 6] and s.sent is None and log == []


def _decode_graphs(tmp_path: Path, log: list[str]) -> DecodeGraphs:
    c = load_model_config(make_tiny_llama(tmp_path / "m"))
    kv = torch.zeros(c.num_layers, 2, 16, BS, c.num_kv_heads, c.head_dim)
    g = DecodeGraphs(c, kv, torch.ones(c.head_dim // 2), torch.float32, 8, None, pdl_mode=0)

    def capture(weights, graph: _Graph, b: int, with_lora, fusion) -> _Graph:  # type: ignore[no-untyped-def]
        log.append(f"capture{b}")
        g.captures += 1
        return _Graph(graph.graph, graph.staging, torch.full((b, VOCAB), float(b)), ())

    g._capture = capture  # type: ignore[method-assign]
    return g


def _decode(n: int, pos: int = 5) -> Any:
    return make_step([([3 + i], pos, [2 * i, 2 * i + 1], -1) for i in range(n)], BS)


def test_decode_graphs_restage_a_bucket_only_after_its_copy_event(tmp_path: Path, log: list[str]) -> None:
    g = _decode_graphs(tmp_path, log)
    w = object()
    g.run(w, _decode(3), host=False)  # bucket 4: new graph, capture
    g.run(w, _decode(1), host=False)  # bucket 1: its own buffer and event
    log.append("|")
    g.run(w, _decode(4), host=False)  # bucket 4 again: waits for its own copy, not bucket 1's
    assert log == ["stage", "new0", "record0", "capture4", "replay",
                   "stage", "new1", "record1", "capture1", "replay", "|",
                   "wait0", "stage", "record0", "replay"]  # fmt: skip


def test_decode_graphs_allocate_host_logits_only_for_host_steps(tmp_path: Path, log: list[str]) -> None:
    g = _decode_graphs(tmp_path, log)
    w = object()
    for n in (1, 3, 4, 8):
        out = g.run(w, _decode(n), host=False)
        assert out.shape == (n, VOCAB)
    assert len(g._graphs) == 3 and all(x.host_logits is None for x in g._graphs.values())  # device sampling: none
    out = g.run(w, _decode(3), host=True)
    assert out.tolist() == [[4.0] * VOCAB] * 3  # bucket 4's logits, copied into its host buffer
    made = {k[0]: x.host_logits for k, x in g._graphs.items()}
    assert made[1] is None and made[8] is None
    assert made[4] is not None and made[4].shape == (4, VOCAB) and made[4].device.type == "cpu"
    buf = made[4]
    g.run(w, _decode(4), host=True)
    assert next(x for k, x in g._graphs.items() if k[0] == 4).host_logits is buf  # made once, then reused


def _prefill_graphs(tmp_path: Path, log: list[str]) -> PrefillGraphs:
    c = load_model_config(make_tiny_llama(tmp_path / "m"))
    kv = torch.zeros(c.num_layers, 2, 16, BS, c.num_kv_heads, c.head_dim)
    g = PrefillGraphs(c, kv, torch.ones(c.head_dim // 2), torch.float32, 8, None, capture=True)
    g._body = lambda weights, dims, buf, with_lora: (lambda: torch.full((dims.seqs, VOCAB), float(dims.tokens)), ())  # type: ignore[method-assign]  # noqa: E501

    def record(b) -> None:  # type: ignore[no-untyped-def]
        log.append(f"capture{b.dims.tokens}")
        b.graph, b.logits = FakeGraph(log), b.body()

    g._record = record  # type: ignore[method-assign]
    return g


def _chunk(start: int, n: int) -> Any:
    return make_step([(list(range(3, 3 + n)), start, [0, 1, 2, 3, 4, 5, 6, 7], -1)], BS)


def test_prefill_graphs_restage_a_bucket_only_after_its_copy_event(tmp_path: Path, log: list[str]) -> None:
    g = _prefill_graphs(tmp_path, log)
    w = object()
    for step in (_chunk(0, 8), _chunk(8, 8)):  # two non-final chunks of one prompt: the same bucket
        assert g.can_run(step)
        g.run(w, step, host=False)  # type: ignore[arg-type]
    assert log == ["stage", "new0", "record0", "capture16", "replay", "wait0", "stage", "record0", "replay"]
    assert all(b.host_logits is None for b in g._buckets.values())  # the device path made no pinned logits
    out = g.run(w, _chunk(16, 8), host=True)  # type: ignore[arg-type]
    assert out.tolist() == [[16.0] * VOCAB]
    (b,) = g._buckets.values()
    assert b.host_logits is not None and b.host_logits.shape == (1, VOCAB)
