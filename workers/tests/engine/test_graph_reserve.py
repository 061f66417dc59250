"""The CUDA graphs' logits that the start-up headroom check adds to the sampling reserve (engine/graph_reserve.py):
one float32 [rows, vocab] buffer shared by every graph (model.graph_logits; 256 rows on a ModelRunner, or the buckets
of the engine's max_num_seqs), whatever the buckets, LoRA sets or prefill graphs captured; 0 for a runner without
graphs. Against the GPU allocator: test_graph_reserve_gpu.py."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from inlaid_worker.engine.graph_reserve import graph_logits_bytes, shared_logits_bytes
from inlaid_worker.model.decode_graphs import BUCKETS
from inlaid_worker.model.prefill_layout import S_BUCKETS

MIB = 1 << 20


def test_the_shared_buffer_is_rows_times_vocab_float32() -> None:
    assert BUCKETS[-1] == S_BUCKETS[-1] == 256
    assert shared_logits_bytes(32000, 256) == 256 * 32000 * 4
    assert shared_logits_bytes(32000, 256) / MIB == 31.25
    assert round(shared_logits_bytes(128256, 256) / MIB, 2) == 125.25
    # what one graph per decode bucket held before (1,335 rows; LoRA set and prefill graphs not counted)
    assert sum(BUCKETS) * 32000 * 4 / shared_logits_bytes(32000, 256) > 5


def test_a_runners_graphs_by_its_switches() -> None:
    def runner(device: str, decode: str | None, prefill: bool, rows: int = 256) -> SimpleNamespace:
        return SimpleNamespace(device=torch.device(device), decode_fusion=decode, prefill_graphs=prefill,
                               graph_logits_rows=rows)  # fmt: skip

    one = shared_logits_bytes(320, 256)
    assert graph_logits_bytes(runner("cuda", "auto", True), 320) == one  # decode and prefill graphs: one buffer
    assert graph_logits_bytes(runner("cuda", "auto", False), 320) == one
    assert graph_logits_bytes(runner("cuda", None, True), 320) == one  # decode steps eager, prefill graphs
    assert graph_logits_bytes(runner("cuda", "auto", True, rows=64), 320) == shared_logits_bytes(320, 64)
    assert graph_logits_bytes(runner("cuda", None, False), 320) == 0  # cuda_graphs=False / torch backend
    assert graph_logits_bytes(runner("cpu", "auto", True), 320) == 0
    assert graph_logits_bytes(object(), 320) == 0


def test_a_model_runner_states_its_buffer_rows(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from factories import make_tiny_llama
    from inlaid_worker.model.runner import ModelRunner

    model = make_tiny_llama(tmp_path / "m")
    r = ModelRunner(model, "cpu", num_kv_blocks=8, block_size=4, backend="triton")
    assert r.graph_logits_rows == 256
    assert graph_logits_bytes(r, r.config.vocab_size) == 0  # the CPU: no CUDA graphs
    # the factory tells the runner the engine's max_num_seqs: the buffer holds the buckets of that many rows
    assert ModelRunner(model, "cpu", num_kv_blocks=8, block_size=4, max_num_seqs=64).graph_logits_rows == 64
    assert shared_logits_bytes(32000, 64) / MIB == 7.8125  # the worker's default --max-num-seqs
