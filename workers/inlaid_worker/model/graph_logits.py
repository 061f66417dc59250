"""The one float32 logits buffer that all of a runner's CUDA graphs write (model.decode_graphs, model.prefill_graphs),
and its pinned host twin.

A graph replays raw device addresses, so its output stays where it was captured. Until session 14 every graph
returned its own float32 logits [bucket, vocab], made inside the capture: each stayed allocated in the graphs'
private memory pool for as long as the graph lived, never going back to the caching allocator. That was one buffer
per decode bucket (1,335 rows up to bucket 256, twice with the LoRA set) plus one per live prefill graph (up to
prefill_graphs.MAX_GRAPHS of [SB, vocab]): 685 MiB at a 32k vocabulary with adapters, 2.7 GiB at 128k
(engine/graph_reserve.py's estimate then). Now every graph writes rows [:bucket] of one buffer [rows, vocab]
allocated by the caching allocator outside any capture (on the first capture), the LM head's output widened into it
by one copy kernel (what `.float()` was); host steps copy rows [:bucket] into one pinned host buffer [rows, vocab]
(made by the first host step). `rows` (graph_rows): the largest bucket a graph of the runner takes, 256, or, where
the runner is told the engine's max_num_seqs, the smallest decode and prefill buckets that hold that many sequences
(steps with more run eagerly). 256 rows: 31.25 MiB at a 32k vocabulary, 125.25 MiB at 128,256; 64 rows (the
worker's default --max-num-seqs): 7.8 MiB and 31.3 MiB; whatever the number of graphs.

Validity: a graph step's logits on the device are valid until the next replay of any of the runner's graphs (decode
or prefill, any bucket, any LoRA / PDL / fusion key), and a host step's until the next host step of any graph. A
reader must read them, or queue its reads on the current stream (which the next replay is queued behind), before the
runner's next step, or copy them. The engine does (engine.py _postprocess samples at once; async_pipeline launches
the sampling on the stream before the next step, and a step whose logits it keeps for the host, _unfinished, is
sampled at the start of the next step() call, before anything else runs on the runner).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F


def graph_rows(max_num_seqs: int | None, bucket_sets: Iterable[tuple[int, ...]]) -> int:
    """The shared buffer's rows for steps of at most max_num_seqs sequences (None: any): per list of the graphs'
    batch buckets (ascending), the smallest that holds them (its largest where none does), and the largest of those.
    Graphs of larger buckets are then never captured (such steps run eagerly)."""
    n = None if max_num_seqs is None else max(1, max_num_seqs)
    return max(next((b for b in buckets if n is not None and b >= n), buckets[-1]) for buckets in bucket_sets)


class GraphLogits:
    """One device buffer [rows, vocab] float32 and one host buffer (pinned where the device is CUDA), each made on
    first use and shared by every graph of a runner (module docstring)."""

    def __init__(self, device: torch.device, rows: int) -> None:
        if rows <= 0:
            raise ValueError(f"GraphLogits: rows must be positive, got {rows}")
        self.device, self.rows = device, rows
        self._dev: torch.Tensor | None = None
        self._host: torch.Tensor | None = None

    def out(self, n: int, vocab: int) -> torch.Tensor:
        """Rows [:n] of the device buffer, where a graph of n rows writes its logits. The first call allocates the
        buffer: call it outside a capture (a tensor made inside one would live in the graphs' pool)."""
        if not 0 < n <= self.rows:
            raise ValueError(f"GraphLogits.out: {n} rows, the buffer holds {self.rows}")
        if self._dev is None:
            self._dev = torch.empty(self.rows, vocab, dtype=torch.float32, device=self.device)
        elif self._dev.shape[1] != vocab:
            raise ValueError(f"GraphLogits.out: vocabulary {vocab}, the buffer's is {self._dev.shape[1]}")
        return self._dev[:n]

    def host(self, like: torch.Tensor) -> torch.Tensor:
        """Rows [:len(like)] of the host buffer, for a copy of `like` (a graph's output rows [n, vocab]): pinned where
        like is on CUDA; made by the first call."""
        n, vocab = like.shape
        if not 0 < n <= self.rows:
            raise ValueError(f"GraphLogits.host: {n} rows, the buffer holds {self.rows}")
        if self._host is None:
            self._host = torch.empty(self.rows, vocab, dtype=like.dtype, pin_memory=like.is_cuda)
        elif self._host.shape[1] != vocab or self._host.dtype != like.dtype:
            raise ValueError(f"GraphLogits.host: [{n}, {vocab}] {like.dtype}, the buffer's is "
                             f"[{self.rows}, {self._host.shape[1]}] {self._host.dtype}")  # fmt: skip
        return self._host[:n]

    @property
    def device_bytes(self) -> int:
        """Bytes of the device buffer (0 before the first capture)."""
        return 0 if self._dev is None else self._dev.nbytes

    @property
    def host_bytes(self) -> int:
        """Bytes of the host buffer (0 before the first host step)."""
        return 0 if self._host is None else self._host.nbytes


def write_logits(out: torch.Tensor, hidden: torch.Tensor, lm_head: torch.Tensor) -> torch.Tensor:
    """out <- the LM head over hidden [n, hidden] (a graph body's last launches): the GEMM in the model's dtype, then
    one copy kernel widening it into out (float32; what `.float()` did into a fresh tensor); returns out."""
    return out.copy_(F.linear(hidden, lm_head))
