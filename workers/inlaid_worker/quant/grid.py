"""Quantizer grid shared by GPTQ and RTN: per-row scale/zero from a column slice, code and dequantize.

Semantics follow IST-DASLab/gptq `quant.py` (min/max grid that always contains 0; symmetric grids use
zero = (maxq + 1) / 2). One deliberate addition: scales are rounded to fp16-representable values (and kept
at least the smallest fp16 normal) because the checkpoint stores fp16 scales; GPTQ's error feedback then
sees exactly the grid that is served, and the checkpoint dequantizes to exactly the fake-quantized weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SUPPORTED_BITS = (2, 3, 4, 8)
_FP16_MIN_NORMAL = 2.0**-14


def check_bits(bits: int) -> None:
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {bits}")


@dataclass(frozen=True)
class GridParams:
    """Per-row grid of one group. scale: [N] fp32 (fp16-representable), zero: [N] fp32 holding integers."""

    scale: torch.Tensor
    zero: torch.Tensor
    maxq: int


def find_params(x: torch.Tensor, bits: int, sym: bool) -> GridParams:
    """Grid for each row of x: [N, G] (the columns of one group)."""
    check_bits(bits)
    maxq = 2**bits - 1
    x = x.float()
    zeros = torch.zeros(x.shape[0], device=x.device)
    xmin = torch.minimum(x.min(dim=1).values, zeros)
    xmax = torch.maximum(x.max(dim=1).values, zeros)
    if sym:
        xmax = torch.maximum(xmin.abs(), xmax)
        neg = xmin < 0
        xmin = torch.where(neg, -xmax, xmin)
    empty = (xmin == 0) & (xmax == 0)
    xmin = torch.where(empty, torch.full_like(xmin, -1.0), xmin)
    xmax = torch.where(empty, torch.full_like(xmax, 1.0), xmax)
    scale = (xmax - xmin) / maxq
    scale = scale.clamp(min=_FP16_MIN_NORMAL).half().float()
    if sym:
        zero = torch.full_like(scale, (maxq + 1) / 2)
    else:
        zero = torch.round(-xmin / scale).clamp(0, maxq)
    return GridParams(scale=scale, zero=zero, maxq=maxq)


def quantize_codes(w: torch.Tensor, p: GridParams) -> torch.Tensor:
    """Integer codes in [0, maxq] (as fp32) of w: [N] or [N, C] on the grid p."""
    scale, zero = (p.scale, p.zero) if w.dim() == 1 else (p.scale[:, None], p.zero[:, None])
    return torch.clamp(torch.round(w / scale) + zero, 0, p.maxq)


def dequantize_codes(q: torch.Tensor, p: GridParams) -> torch.Tensor:
    scale, zero = (p.scale, p.zero) if q.dim() == 1 else (p.scale[:, None], p.zero[:, None])
    return scale * (q - zero)
