"""What a quantizer is asked to do (QuantSpec) and what it returns for one weight (QuantizedWeight)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .grid import check_bits


@dataclass(frozen=True)
class QuantSpec:
    """Settings of GPTQ/RTN. group_size -1 means one group per output row (per-channel)."""

    bits: int = 4
    group_size: int = 128
    sym: bool = True
    act_order: bool = False
    static_groups: bool = False
    percdamp: float = 0.01
    damp_increment: float = 0.01
    max_percdamp: float = 1.0
    blocksize: int = 128

    def __post_init__(self) -> None:
        check_bits(self.bits)
        if self.group_size != -1 and self.group_size <= 0:
            raise ValueError(f"group_size must be -1 or positive, got {self.group_size}")
        if not 0.0 <= self.percdamp <= self.max_percdamp:
            raise ValueError(f"percdamp {self.percdamp} must lie in [0, max_percdamp={self.max_percdamp}]")
        if self.damp_increment <= 0:
            raise ValueError("damp_increment must be positive")
        if self.blocksize <= 0:
            raise ValueError("blocksize must be positive")

    def groups(self, in_features: int) -> int:
        """Number of groups along K; raises when K is not a multiple of the group size."""
        if self.group_size == -1:
            return 1
        if in_features % self.group_size != 0:
            raise ValueError(f"in_features {in_features} is not a multiple of group_size {self.group_size}")
        return in_features // self.group_size

    def group_len(self, in_features: int) -> int:
        return in_features if self.group_size == -1 else self.group_size

    @property
    def desc_act(self) -> bool:
        """True when g_idx is not simply k // group_size (act-order without static groups)."""
        return self.act_order and not self.static_groups and self.group_size != -1


@dataclass(frozen=True)
class QuantizedWeight:
    """One quantized linear weight. W_hat[n, k] = scales[n, g_idx[k]] * (codes[n, k] - zeros[n, g_idx[k]])."""

    codes: torch.Tensor  # [N, K] int32 in [0, 2^bits - 1]
    scales: torch.Tensor  # [N, G] fp32, fp16-representable
    zeros: torch.Tensor  # [N, G] int32 in [0, 2^bits - 1]
    g_idx: torch.Tensor  # [K] int32
    dequant: torch.Tensor  # [N, K] fp32, the fake-quantized weight
    bits: int
    group_size: int
    percdamp: float = 0.0  # damping actually used (GPTQ only)


def dequantize(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, g_idx: torch.Tensor) -> torch.Tensor:
    """W_hat: [N, K] fp32 from codes [N, K], scales/zeros [N, G], g_idx [K]."""
    gi = g_idx.long()
    return scales.float()[:, gi] * (codes.float() - zeros.float()[:, gi])
