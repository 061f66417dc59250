"""act = silu(gate) * up of a fused gate/up GEMV in one launch where the tuner picks the half2 GEMV (quant_hgemvr,
M <= 2 on the H200), plus its torch reference. Otherwise (other kernels, several weight parts, 3-bit, bf16, an N
tile that does not divide I) the same two launches as before: quant_matmul, then silu_mul.

The gate/up weight is [K, 2 I] (gate in its first I output columns, up in the last I), as model.quant_weights
fuses it; the fused epilogue is kernels.swiglu_epilogue (gate_up itself is never written). The result is that of
quant_matmul + silu_mul with the same config, up to the order of the split-K atomics.
"""

from __future__ import annotations

import torch

from .gptq_packing import GPTQWeight
from .quant_hgemvr import launch_hgemvr
from .quant_matmul import hgemvr_flags, launch_quant_matmul, quant_matmul_reference, tuned_config
from .quant_matmul_config import QMMConfig
from .silu_mul import silu_mul, silu_mul_reference

FUSED_KINDS = ("hgemvr", "hgemvrq", "hgemvrb")


def fused_ok(x2: torch.Tensor, w: GPTQWeight, cfg: QMMConfig) -> bool:
    """Can cfg's GEMV of x2 @ w write the SwiGLU itself?"""
    inter = w.out_features // 2
    return (cfg.kind in FUSED_KINDS and w.bits == 4 and x2.dtype == torch.float16 and w.out_features % 2 == 0
            and inter % cfg.block_n == 0)  # fmt: skip


def gemv_swiglu(x: torch.Tensor, w: GPTQWeight, cfg: QMMConfig | None = None) -> torch.Tensor:
    """x [M, K] -> silu(gate) * up [M, I] for the gate/up weight w [K, 2 I] (module docstring)."""
    if x.dim() != 2 or x.shape[1] != w.in_features or w.out_features % 2:
        raise ValueError(f"gemv_swiglu: x {tuple(x.shape)} and a gate/up weight of {w.out_features} columns")
    if x.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"x must be fp16 or bf16, got {x.dtype}")
    m, n = x.shape[0], w.out_features
    if m == 0:
        return torch.empty(0, n // 2, dtype=x.dtype, device=x.device)
    if cfg is None:
        cfg = tuned_config(x, w)
    if not fused_ok(x, w, cfg):
        y = torch.empty(m, n, dtype=x.dtype, device=x.device)
        launch_quant_matmul(x, w, cfg, y)
        return silu_mul(y)
    act = torch.empty(m, n // 2, dtype=x.dtype, device=x.device)
    launch_hgemvr(x, w, cfg.block_m, cfg.block_n, cfg.block_k, cfg.split_k, cfg.num_warps, act, swiglu=act,
                  **hgemvr_flags(cfg.kind))  # fmt: skip
    return act


def gemv_swiglu_reference(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                          g_idx: torch.Tensor, bits: int, zero_offset: int = 1) -> torch.Tensor:  # fmt: skip
    """Pure torch on the raw GPTQ tensors of the gate/up weight: quant_matmul_reference (fp32 product, rounded to
    x's dtype), then silu_mul's reference."""
    return silu_mul_reference(quant_matmul_reference(x, qweight, qzeros, scales, g_idx, bits, zero_offset))
