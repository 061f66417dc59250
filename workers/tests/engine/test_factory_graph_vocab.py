"""create_engine sizes the CUDA graphs' logits estimate (graph_reserve.graph_logits_bytes) from the runner's LM head
rows, the columns of the buffer the graphs write (model.decode_graphs, model.prefill_graphs), not config.vocab_size:
here a runner whose LM head has more rows than the config's vocabulary (weights handed over, not loaded)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from factories import make_tiny_llama
from inlaid_worker.engine import factory
from inlaid_worker.model.runner import ModelRunner

PADDED = 384  # the tiny model's vocabulary is 320


def test_the_graph_estimate_reads_the_lm_head_rows(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def runner(*args: Any, **kw: Any) -> ModelRunner:
        r = ModelRunner(*args, **kw)
        head = torch.zeros(PADDED, r.weights.lm_head.shape[1], dtype=r.weights.lm_head.dtype)
        head[: r.config.vocab_size] = r.weights.lm_head
        r.weights = dataclasses.replace(r.weights, lm_head=head)
        return r

    vocabs: list[tuple[int, int]] = []

    def graph_bytes(r: Any, vocab: int) -> int:
        vocabs.append((vocab, r.config.vocab_size))
        return 0

    monkeypatch.setattr(factory, "ModelRunner", runner)
    monkeypatch.setattr(factory, "graph_logits_bytes", graph_bytes)
    factory.create_engine(make_tiny_llama(tmp_path / "m"), factory.EngineOptions(kv_cache_bytes=1 << 20))
    assert vocabs == [(PADDED, 320)]
