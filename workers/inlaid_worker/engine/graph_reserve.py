"""The device memory the runner's CUDA graphs take after start-up for their logits: what the engine's start-up headroom
check (factory.check_sampling_headroom) adds to the sampling reserve.

Decode graphs (model.decode_graphs) and prefill graphs (model.prefill_graphs) are captured lazily, on the first use
of a batch-size bucket, long after the start-up check measured the free device memory. Every graph writes its
float32 logits into rows [:bucket] of one buffer [rows, vocab] that they all share (model.graph_logits, allocated by
the first capture, outside the graphs' private pool), so the graphs' logits take that one buffer, whatever the
number of buckets, LoRA sets, PDL modes and fusions captured: rows x vocab (the LM head's rows) x 4 bytes. rows
(ModelRunner.graph_logits_rows) is graph_rows(max_num_seqs): the smallest decode and prefill buckets that hold the
engine's max_num_seqs sequences (64 at the worker's default --max-num-seqs 64: 7.8 MiB at a 32k vocabulary, 31.3 MiB
at 128,256), or 256, the largest bucket either kind of graph takes, for a runner not told max_num_seqs (31.25 MiB and
125.25 MiB). The sampling reserve (one step's logits, sampling_reserve_bytes) counts an eager step's logits, which
the graphs' buffer does not replace, so both are counted. Host steps' pinned copy is host memory (not counted).
Until session 14 each graph kept its own [bucket, vocab] buffer in the pool: one per decode bucket up to the bucket
of max_num_seqs (twice with adapters) plus up to prefill_graphs.MAX_GRAPHS prefill ones, 685.3 MiB at 32k with
adapters, 256 rows and 2,048 batched tokens (2.7 GiB at 128k).
Not counted: the pool's activations (the largest captured step's, freed inside the pool at the end of a capture,
reused by later captures, never returned to the caching allocator; measured on the GPU:
tests/engine/test_graph_reserve_gpu.py, with -s).
"""

from __future__ import annotations

from typing import Any

LOGIT_BYTES = 4  # the graphs' logits are float32


def shared_logits_bytes(vocab: int, rows: int) -> int:
    """The graphs' one float32 logits buffer [rows, vocab]."""
    return rows * vocab * LOGIT_BYTES


def graph_logits_bytes(runner: Any, vocab: int) -> int:
    """What `runner`'s CUDA graphs hold in logits once one is captured (0 for a runner without graphs: the CPU, the
    torch backend, cuda_graphs=False). Reads the runner's public switches: decode_fusion (None: decode steps run
    eagerly), prefill_graphs, and graph_logits_rows (the shared buffer's rows). vocab: the LM head's rows
    (weights.lm_head.shape[0]), which the buffer's columns are (model.decode_graphs, model.prefill_graphs), not
    config.vocab_size: the loaders check the two agree, weights handed to ModelRunner(weights=...) are not checked."""
    if getattr(getattr(runner, "device", None), "type", "cpu") != "cuda":
        return 0
    if getattr(runner, "decode_fusion", None) is None and not getattr(runner, "prefill_graphs", False):
        return 0
    return shared_logits_bytes(vocab, int(getattr(runner, "graph_logits_rows", 0)))
