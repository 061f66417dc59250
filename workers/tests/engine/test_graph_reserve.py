"""The CUDA graphs' logits buffers that the start-up headroom check adds to the sampling reserve
(engine/graph_reserve.py): one float32 [bucket, vocab] buffer per decode graph up to the bucket of max_num_seqs
(twice with adapters: the LoRA set), and at most prefill_graphs.MAX_GRAPHS live prefill graphs of [SB, vocab] each;
0 for a runner without graphs. The decode figure against the GPU allocator: test_graph_reserve_gpu.py."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from inlaid_worker.engine.graph_reserve import (
    decode_graph_logits_bytes,
    graph_logits_bytes,
    prefill_graph_logits_bytes,
)
from inlaid_worker.model.decode_graphs import BUCKETS
from inlaid_worker.model.prefill_graphs import MAX_GRAPHS

MIB = 1 << 20


def test_decode_graphs_hold_one_buffer_per_bucket_up_to_max_num_seqs() -> None:
    assert sum(BUCKETS) == 1335 and BUCKETS[-1] == 256
    assert decode_graph_logits_bytes(32000, 256, lora=False) == 1335 * 32000 * 4  # 163.0 MiB
    assert round(decode_graph_logits_bytes(32000, 256, lora=False) / MIB, 1) == 163.0
    assert round(decode_graph_logits_bytes(128256, 256, lora=False) / MIB, 1) == 653.2
    assert decode_graph_logits_bytes(32000, 256, lora=True) == 2 * 1335 * 32000 * 4
    assert decode_graph_logits_bytes(32000, 1000, lora=False) == 1335 * 32000 * 4  # > 256 rows: eager, no graph
    assert decode_graph_logits_bytes(100, 5, lora=False) == (1 + 2 + 4 + 8) * 100 * 4  # 5 rows: bucket 8
    assert decode_graph_logits_bytes(100, 64, lora=False) == 199 * 100 * 4


def test_prefill_graphs_hold_at_most_max_graphs_buffers_of_the_largest_seq_buckets() -> None:
    assert MAX_GRAPHS == 12
    # 256 rows, 2048 tokens, graphs up to 1024 tokens: SB 256 at TB 256-1024 (5 keys), 192 at TB 192-1024 (6), 128
    rows = 5 * 256 + 6 * 192 + 128
    assert prefill_graph_logits_bytes(32000, 256, 2048, lora=False, max_tokens=1024) == rows * 32000 * 4
    assert round(prefill_graph_logits_bytes(32000, 256, 2048, lora=False, max_tokens=1024) / MIB, 1) == 312.5
    # with the LoRA keys: ten keys of SB 256, then two of 192
    assert prefill_graph_logits_bytes(32000, 256, 2048, lora=True, max_tokens=1024) == (10 * 256 + 2 * 192) * 32000 * 4
    # 64 rows, 512 tokens: SB 64 at TB 64-512 (6 keys), then 48 at TB 64-512 (6)
    assert prefill_graph_logits_bytes(100, 64, 512, lora=False, max_tokens=1024) == (6 * 64 + 6 * 48) * 100 * 4
    assert prefill_graph_logits_bytes(100, 256, 2048, lora=False, max_tokens=0) == 0  # every prefill step eager
    assert prefill_graph_logits_bytes(100, 256, 2048, lora=False, max_tokens=1024, max_graphs=1) == 256 * 100 * 4
    assert prefill_graph_logits_bytes(100, 4, 8, lora=False, max_tokens=1024) == 7 * 100 * 4  # keys (16, 1 / 2 / 4)


def test_a_runners_graphs_by_its_switches() -> None:
    def runner(device: str, decode: str | None, prefill: bool, adapters: int) -> SimpleNamespace:
        return SimpleNamespace(device=torch.device(device), decode_fusion=decode, prefill_graphs=prefill,
                               max_adapters=adapters)  # fmt: skip

    decode = decode_graph_logits_bytes(320, 16, lora=True)
    prefill = prefill_graph_logits_bytes(320, 16, 64, lora=True)
    assert graph_logits_bytes(runner("cuda", "auto", True, 4), 320, 16, 64) == decode + prefill
    base = decode_graph_logits_bytes(320, 16, lora=False)
    assert graph_logits_bytes(runner("cuda", "auto", False, 0), 320, 16, 64) == base  # no adapters: no LoRA set
    assert graph_logits_bytes(runner("cuda", None, True, 4), 320, 16, 64) == prefill  # decode steps run eagerly
    assert graph_logits_bytes(runner("cuda", None, False, 4), 320, 16, 64) == 0  # cuda_graphs=False / torch backend
    assert graph_logits_bytes(runner("cpu", "auto", True, 4), 320, 16, 64) == 0
    assert graph_logits_bytes(object(), 320, 16, 64) == 0
