"""A random 4-bit GPTQ weight for the tensor-core kernel tests, prepared for the kernels, with its reference."""

from __future__ import annotations

from typing import Any

import torch
from cases import make_gptq
from inlaid_worker.kernels.gptq_packing import prepare_gptq_weight
from inlaid_worker.kernels.quant_matmul import dequantize_gptq


def gptq_weight(k: int, n: int, sym: bool, act: bool, device: str = "cpu") -> tuple[Any, torch.Tensor]:
    """(the prepared weight [K, N] on `device`, its dequantized fp32 values there): group 128, zero offset 1."""
    raw = make_gptq(k, n, 4, 128, sym=sym, act=act, zero_offset=1)
    ref_w = dequantize_gptq(raw["qweight"], raw["qzeros"], raw["scales"], raw["g_idx"], 4, 1).float()
    w = prepare_gptq_weight(**{key: v.to(device) for key, v in raw.items()}, bits=4, group_size=128, sym=sym)
    return w, ref_w.to(device)
