"""Torch reference QuantLinear over the packed GPTQ format: y = x W_hat^T + b.

Semantics (what the Triton kernels must reproduce):
  for k, n: W_hat[n, k] = scales[g_idx[k], n] * (code(qweight, k, n) - zero(qzeros, g_idx[k], n))
  y = x @ W_hat^T (+ bias), computed in fp32 and cast back to x's dtype.
Used for serving on the CPU; the dequantized weight is cached after the first call (cache=False keeps only
packed weights in memory, dequantizing on every call).
"""

from __future__ import annotations

import torch
from torch import nn

from .pack import PackedLinear, dequantize_packed


class QuantLinear(nn.Module):
    def __init__(self, packed: PackedLinear, bias: torch.Tensor | None = None, cache: bool = True) -> None:
        super().__init__()
        self.bits, self.checkpoint_format = packed.bits, packed.checkpoint_format
        self.in_features, self.out_features = packed.in_features, packed.out_features
        self.register_buffer("qweight", packed.qweight)
        self.register_buffer("qzeros", packed.qzeros)
        self.register_buffer("scales", packed.scales)
        self.register_buffer("g_idx", packed.g_idx)
        self.register_buffer("bias", bias)
        self.cache = cache
        self._weight: torch.Tensor | None = None

    def packed(self) -> PackedLinear:
        return PackedLinear(self.qweight, self.qzeros, self.scales, self.g_idx, self.bits, self.checkpoint_format)

    def dequantized_weight(self) -> torch.Tensor:
        """W_hat: [N, K] fp32."""
        if self._weight is not None:
            return self._weight
        w = dequantize_packed(self.packed())
        if self.cache:
            self._weight = w
        return w

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [..., K] -> [..., N]
        y = x.float() @ self.dequantized_weight().t()
        if self.bias is not None:
            y = y + self.bias.float()
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, bits={self.bits}, format={self.checkpoint_format}"
