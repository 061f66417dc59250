"""The device memory the runner's CUDA graphs take after start-up: what the engine's start-up headroom check
(factory.check_sampling_headroom) adds to the sampling reserve.

Decode graphs (model.decode_graphs) and prefill graphs (model.prefill_graphs) are captured lazily, on the first use
of a batch-size bucket, long after the start-up check measured the free device memory. Every captured graph keeps
its float32 logits output [bucket, vocab] allocated in the graphs' private memory pool for as long as it lives (its
replays write there), one buffer per graph: the buckets' buffers add up, and the sampling reserve (one step's logits,
sampling_reserve_bytes) counts only the one in use. Those buffers are the part of the graphs' memory that grows with
the vocabulary; the pool also keeps the largest captured step's activations (freed inside the pool at the end of a
capture, reused by later captures, never returned to the caching allocator), which this estimate does not count
(measured on the GPU: tests/engine/test_graph_reserve_gpu.py, with -s).

Decode: one graph per bucket of model.decode_graphs.BUCKETS up to the bucket of max_num_seqs (at most 256), and per
LoRA on/off where adapters can be resident (a second set, captured on the first step of a bucket with an adapter
row). PDL modes and fusions switched at run time (benchmarks) would add more sets: not counted.
Prefill: at most prefill_graphs.MAX_GRAPHS live graphs, each [SB, vocab] for its (TB, SB, LoRA) key: bounded by
the MAX_GRAPHS largest SB among the keys a step can take (SB <= TB, TB <= the prefill graphs' max_tokens and the
bucket of max_num_batched_tokens, SB <= the bucket of max_num_seqs).
"""

from __future__ import annotations

from typing import Any

from inlaid_worker.model.decode_graphs import BUCKETS, bucket_for
from inlaid_worker.model.prefill_graphs import MAX_GRAPHS, env_max_tokens
from inlaid_worker.model.prefill_layout import S_BUCKETS, T_BUCKETS

LOGIT_BYTES = 4  # the graphs' logits are float32


def decode_graph_logits_bytes(vocab: int, max_num_seqs: int, lora: bool) -> int:
    """The float32 logits buffers of every decode graph a worker of max_num_seqs rows can capture (both LoRA sets
    where `lora`)."""
    top = bucket_for(min(max(1, max_num_seqs), BUCKETS[-1]))
    assert top is not None  # min(..., BUCKETS[-1]) has a bucket
    rows = sum(b for b in BUCKETS if b <= top)
    return (2 if lora else 1) * rows * vocab * LOGIT_BYTES


def prefill_graph_logits_bytes(
    vocab: int, max_num_seqs: int, max_num_batched_tokens: int, lora: bool,
    max_tokens: int | None = None, max_graphs: int = MAX_GRAPHS,
) -> int:  # fmt: skip
    """An upper bound of the float32 logits buffers that the live prefill graphs hold at once (max_tokens: the
    largest token bucket captured, None: prefill_graphs.env_max_tokens())."""
    limit = env_max_tokens() if max_tokens is None else max_tokens
    t_top = next((b for b in T_BUCKETS if b >= max_num_batched_tokens), T_BUCKETS[-1])
    s_top = next((b for b in S_BUCKETS if b >= min(max_num_seqs, max_num_batched_tokens)), S_BUCKETS[-1])
    seqs = [sb for tb in T_BUCKETS if tb <= min(limit, t_top) for sb in S_BUCKETS if sb <= min(tb, s_top)]
    seqs = sorted(seqs * (2 if lora else 1), reverse=True)[: max(0, max_graphs)]
    return sum(seqs) * vocab * LOGIT_BYTES


def graph_logits_bytes(runner: Any, vocab: int, max_num_seqs: int, max_num_batched_tokens: int) -> int:
    """What `runner`'s CUDA graphs may hold in logits buffers once captured (0 for a runner without graphs: the CPU,
    the torch backend, cuda_graphs=False). Reads the runner's public switches: decode_fusion (None: decode steps run
    eagerly), prefill_graphs, max_adapters (0: no adapter rows, no LoRA graphs)."""
    if getattr(getattr(runner, "device", None), "type", "cpu") != "cuda":
        return 0
    lora = int(getattr(runner, "max_adapters", 0)) > 0
    total = 0
    if getattr(runner, "decode_fusion", None) is not None:
        total += decode_graph_logits_bytes(vocab, max_num_seqs, lora)
    if getattr(runner, "prefill_graphs", False):
        total += prefill_graph_logits_bytes(vocab, max_num_seqs, max_num_batched_tokens, lora)
    return total
