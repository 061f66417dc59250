"""The one place a fused linear of the forward pass is applied: a dense matrix, or a stand-in such as
`quant_weights.QuantMatrix` (packed GPTQ weights run by the Triton kernel)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def linear(x: torch.Tensor, w: torch.Tensor | Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """x [T, K] -> [T, N]; w is a dense [N, K] matrix or a callable with the same semantics."""
    if isinstance(w, torch.Tensor):
        return F.linear(x, w)
    return w(x)
