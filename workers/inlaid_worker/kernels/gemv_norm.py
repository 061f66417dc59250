"""Residual add + RMSNorm folded into the GEMVs around it (the "norm" decode fusion), plus torch references.

Experimental: measured slower on the H200, opt-in via INLAID_DECODE_NORM (or a decode fusion naming "norm"): no
bucket of model.decode_graphs.FUSION_POLICY takes it (bench/results/decode-2026-11-30-s12-fusednorm.md).

A layer's two norms each sit between a producer GEMV (o, down) and a consumer GEMV (gate/up, the next layer's qkv):

    h = h + x @ W_prod;  y = RMSNorm(h) @ W_cons        (add_rms_norm, then the consumer)

Fused, where the tuner picks the half2 row GEMV (quant_hgemvr) for both and the weights are 4-bit, x fp16:
- gemv_residual: the producer's finishing programs add its output into h in place and the rows' sum(h^2) into a
  per-norm fp32 slot (norm_epilogue.store_residual); its y is never written;
- gemv_normed: the consumer reads h, takes r from the slot after its PDL wait and normalises x on load
  (norm_epilogue.norm_pair); optionally with the SwiGLU epilogue (swiglu_epilogue) for gate/up.
The add_rms_norm launch between them is gone. Slots must be zero before the producer runs (model.llama_fast zeroes
all of a step's slots with one memset when its first pair fuses, inside the CUDA graph). The result is add_rms_norm +
GEMV's up to the order in which the atomics add the sums of squares and the split-K partials (the order the GEMVs
already have).
`pair_ok` says whether a (producer, consumer) pair can be fused; otherwise the caller runs the unfused launches.
"""

from __future__ import annotations

import torch

from .gptq_packing import GPTQWeight
from .quant_hgemvr import launch_hgemvr
from .quant_matmul import hgemvr_flags, quant_matmul_reference, tuned_config
from .quant_matmul_config import QMMConfig
from .quant_swiglu import FUSED_KINDS  # the row GEMV without the "f" kinds (their finish kernel is a separate epilogue)
from .quant_swiglu import fused_ok as swiglu_ok

# the consumer's x: fp16(g * fp16(h * r)) per value in fp32 (False: add_rms_norm's rounding), or r rounded to fp16
# and two half2 multiplies per x pair (True); read when a launch is made (so at a graph's capture)
NORM_FAST = False
# ptxas's register cap for the consumer at block_m 1 (None: uncapped). The normalising x load holds the norm weight's
# pairs of the next tile too: uncapped, 92 registers a thread at 7B batch 1 under PDL (the plain kernel: 79), so 10
# instead of 12 programs of 64 threads fit an SM and the qkv / gate/up grids (1536 / 1376 programs) no longer run in
# one wave (H200: qkv 10.7 -> 14.3 us, 11.8 us capped; capped, the 7B qkv consumer keeps 32 B of stack (24 B with
# SwiGLU), spilled before the K loop only: offline sm_90a build). At block_m 2 the cap spills in the loop (the batch-2
# step 1.7x slower)
NORM_MAXNREG: int | None = 80


def config_for(x2: torch.Tensor, w: GPTQWeight) -> QMMConfig:
    """The tuner's pick for x2 @ w (what quant_matmul would run; tests replace this to force a kind)."""
    return tuned_config(x2, w)


def fused_ok(x2: torch.Tensor, w: GPTQWeight, cfg: QMMConfig) -> bool:
    """Can cfg's GEMV take the residual epilogue or the normalising x load?"""
    return cfg.kind in FUSED_KINDS and w.bits == 4 and x2.dtype == torch.float16 and x2.dim() == 2


def pair_ok(x_prod: torch.Tensor, w_prod: GPTQWeight, h: torch.Tensor, w_cons: GPTQWeight,
            norm_weight: torch.Tensor) -> bool:  # fmt: skip
    """Can the producer x_prod @ w_prod (adding into h) and the consumer RMSNorm(h) @ w_cons both be fused?"""
    return (w_prod.out_features == h.shape[1] == w_cons.in_features and norm_weight.dtype == torch.float16
            and norm_weight.is_contiguous() and norm_weight.data_ptr() % 16 == 0
            and fused_ok(x_prod, w_prod, config_for(x_prod, w_prod)) and fused_ok(h, w_cons, config_for(h, w_cons)))  # fmt: skip


def gemv_residual(x: torch.Tensor, w: GPTQWeight, h: torch.Tensor, slot: torch.Tensor,
                  cfg: QMMConfig | None = None) -> None:  # fmt: skip
    """h [M, N] += x [M, K] @ W in place (fp16(h + fp16(y))), slot[:M] += sum over N of h^2 (fp32)."""
    cfg = config_for(x, w) if cfg is None else cfg
    if not fused_ok(x, w, cfg) or h.shape != (x.shape[0], w.out_features) or h.dtype != x.dtype:
        raise ValueError(f"gemv_residual: {cfg.kind} of x {tuple(x.shape)} into h {tuple(h.shape)}")
    if x.shape[0]:
        launch_hgemvr(x, w, cfg.block_m, cfg.block_n, cfg.block_k, cfg.split_k, cfg.num_warps, h, residual=slot,
                      **hgemvr_flags(cfg.kind))  # fmt: skip


def gemv_normed(h: torch.Tensor, norm_weight: torch.Tensor, slot: torch.Tensor, eps: float, w: GPTQWeight,
                cfg: QMMConfig | None = None, swiglu: bool = False) -> torch.Tensor:  # fmt: skip
    """RMSNorm(h) @ W [M, N] with the rows' sums of squares in slot[:M]; swiglu (gate/up W [K, 2 I]): silu(gate) * up
    [M, I] instead, where quant_swiglu can fuse it (else a ValueError: check swiglu_possible first)."""
    cfg = config_for(h, w) if cfg is None else cfg
    if not fused_ok(h, w, cfg) or h.shape[1] != w.in_features:
        raise ValueError(f"gemv_normed: {cfg.kind} of h {tuple(h.shape)}")
    if swiglu and not swiglu_ok(h, w, cfg):
        raise ValueError("gemv_normed: this config cannot write the SwiGLU")
    m, n = h.shape[0], w.out_features // 2 if swiglu else w.out_features
    y = torch.empty(m, n, dtype=h.dtype, device=h.device)
    if m:
        launch_hgemvr(h, w, cfg.block_m, cfg.block_n, cfg.block_k, cfg.split_k, cfg.num_warps, y,
                      swiglu=y if swiglu else None, norm=(norm_weight, slot, eps), norm_fast=NORM_FAST,
                      maxnreg=NORM_MAXNREG if cfg.block_m == 1 else None,
                      **hgemvr_flags(cfg.kind))  # fmt: skip
    return y


def swiglu_possible(h: torch.Tensor, w: GPTQWeight) -> bool:
    """Can gemv_normed write the SwiGLU for this gate/up weight (the tuner's pick allows it)?"""
    return w.out_features % 2 == 0 and swiglu_ok(h, w, config_for(h, w))


def gemv_residual_reference(x: torch.Tensor, raw: dict, zero_offset: int, h: torch.Tensor,
                            slot: torch.Tensor) -> None:  # fmt: skip
    """Pure torch: y = quant_matmul_reference (fp32 product rounded to x's dtype); h += y in place (add_rms_norm's
    add); slot[:M] += sum(h32^2)."""
    y = quant_matmul_reference(x, raw["qweight"], raw["qzeros"], raw["scales"], raw["g_idx"], 4, zero_offset)
    h.add_(y)
    slot[: h.shape[0]] += h.float().pow(2).sum(-1)


def gemv_normed_reference(h: torch.Tensor, norm_weight: torch.Tensor, eps: float, raw: dict,
                          zero_offset: int) -> torch.Tensor:  # fmt: skip
    """Pure torch: RMSNorm(h) as fused_norm's reference rounds it, then quant_matmul_reference."""
    h32 = h.float()
    x = norm_weight * (h32 * torch.rsqrt(h32.pow(2).mean(-1, keepdim=True) + eps)).to(h.dtype)
    return quant_matmul_reference(x, raw["qweight"], raw["qzeros"], raw["scales"], raw["g_idx"], 4, zero_offset)
