"""Which compute backend the runner uses: "torch" (reference ops, any device) or "triton" (multi-LoRA
shrink/expand kernels over stacked pools, and quant_matmul for GPTQ checkpoints). Default: triton on CUDA,
torch elsewhere (on the CPU Triton only runs under its interpreter, which tests use on purpose)."""

from __future__ import annotations

import torch

BACKENDS = ("torch", "triton")


def resolve_backend(backend: str | None, device: torch.device) -> str:
    if backend is None or backend == "":
        return "triton" if device.type == "cuda" else "torch"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend
