"""One side stream per CUDA device for the eager warm-up runs before CUDA graph captures and for the tuner's timing
graphs.

PyTorch caches a cuBLAS workspace per (cuBLAS handle, stream) pair (32 MiB on the H200 by default) for the life of
the process, and torch.cuda.Stream() hands out its pooled streams round-robin (32 per priority and device), so a new
stream per warm-up kept up to 32 such workspaces per device (up to 1 GiB) wherever the warm-up ran a cuBLAS op (the LM
head, dense weights, the dequantize + cuBLAS kernels): measured on the H200 (session 14,
bench/results/decode-2026-12-01-s14-graph-mem.md) +32 MiB per decode or prefill graph's warm-up, 512 MiB over the 16
decode buckets of a tiny dense model. Reusing one stream per device pays one workspace. (The stream comes from the same
pool, so other code's torch.cuda.Stream() may share it: correct, its work may serialise with ours.) A priority other
than 0 gives another cached stream of that priority's pool (kernels.lora_early's forked shrinks: -1, high), never the
priority-0 one the warm-ups and captures run on.
"""

from __future__ import annotations

import torch

_STREAMS: dict[tuple[int, int], torch.cuda.Stream] = {}


def side_stream(device: torch.device | None = None, priority: int = 0) -> torch.cuda.Stream:
    """The CUDA device's one side stream of `priority` (torch.cuda.Stream's: 0, or negative for higher), made on first
    use; device None: the current CUDA device."""
    dev = torch.device("cuda") if device is None else device
    if dev.type != "cuda":
        raise ValueError(f"side_stream: {dev} is not a CUDA device")
    key = (dev.index if dev.index is not None else torch.cuda.current_device(), priority)
    stream = _STREAMS.get(key)
    if stream is None:
        stream = _STREAMS.setdefault(key, torch.cuda.Stream(torch.device("cuda", key[0]), priority=priority))
    return stream
