"""One side stream per CUDA device for the eager warm-up runs before CUDA graph captures and for the tuner's timing
graphs.

PyTorch caches a cuBLAS workspace per (cuBLAS handle, stream) pair (32 MiB on the H200 by default) and keeps it for
the life of the process, so a fresh torch.cuda.Stream per warm-up left one workspace behind per captured graph
wherever the warm-up ran a cuBLAS op (the LM head, dense weights, the dequantize + cuBLAS kernels): measured on the
H200 (session 14, bench/engine/s14_graph_mem.py), +32 MiB per decode or prefill graph, 576 MiB after the 16 decode
buckets of a tiny dense model. Reusing one stream per device pays that workspace once.
"""

from __future__ import annotations

import torch

_STREAMS: dict[int, torch.cuda.Stream] = {}


def side_stream(device: torch.device | None = None) -> torch.cuda.Stream:
    """The device's one side stream (made on first use); device None: the current CUDA device."""
    dev = torch.device("cuda") if device is None else device
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    stream = _STREAMS.get(index)
    if stream is None:
        stream = _STREAMS[index] = torch.cuda.Stream(torch.device("cuda", index))
    return stream
