"""The consumer finishes the split-K sum (the "cfin" decode fusion): GEMV + residual add + RMSNorm in two launches.

Today's o and down GEMVs at small batch are split-K half2 row GEMVs (quant_hgemvr): every program adds its partial
sums into the fp32 workspace, bumps an arrival counter, and the last one to arrive reads the sums back, clears them,
writes y and resets the counter (quant_common.store_tile): two L2 round trips on the GEMV's critical path, after
which fused_norm.add_rms_norm reads y again. Here the GEMV runs its finish epilogue with `defer` (only the
fire-and-forget partial sums, no counter, no last program) and the add + RMSNorm that follows reads y's sums from the
workspace itself (fused_norm.add_rms_norm_sums: x = fp16(sum), as the GEMV would have stored it; loaded, then zeroed
after a CTA barrier), clearing them; no kernel is added (the "f" kinds' separate finish kernel made them slower:
kernels-h200.md). 7B int4 on the H200 (bench/results/decode-2026-12-01-s14-cfin.md, four runs, "swiglu+cfin" lower
in every round of each): the batch-1 step 0.965-0.968x "swiglu" (o GEMV 12.0 -> 9.7 us, its norm 9.9 -> 8.5 us under
PDL), the batch-2 step 0.973-0.978x "none" (o only: down's pick there is a tensor-core kind).

The workspace is zero again after the norm, so the next GEMV finds it as store_tile leaves it (eager or in a graph;
PDL: the norm reads it only after its wait, and the next GEMV adds into it only after its own; quant_common.workspace
states the contract). The norm's arguments and modes are checked before the GEMV is launched, and if anything raises
after it, the sums are zeroed before the exception propagates. Only where the tuner's pick is a row GEMV kind without
the "f" suffix that splits K (`gemv_add_norm_ok`); the caller falls back to the GEMV + add_rms_norm otherwise (and
with LoRA, whose delta is added to y between the two).

gemv_sums (the "+q" decode fusion, model.llama_fast): the same deferral for the qkv GEMV, whose consumer is the row
attention with fused rotary + KV write (decode_row.row_rope_decode with `sums`: fp16(sum) on every read of q, k, v).
Every attention program reads its head's q, so no reader can clear them: the sums go to a region of their own
(quant_common.qkv_sums, apart from the workspace the o / down / gate-up GEMVs share) and the add + RMSNorm after the
o GEMV zeroes it (fused_norm's `clear`, after its PDL wait: the attention has completed by then), so it is zero again
before the next layer's qkv GEMV (eager or in a graph; model.decode_graphs keeps the captured region). 7B int4 on the
H200 (bench/results/decode-2026-12-01-s14-cfinq.md, one run), "swiglu+cfin+q" against "swiglu+cfin": bucket 2
0.972x (1.947 -> 1.891 ms, lower in 8/8 rounds; extra programs of the norm clear: fused_norm.CLEAR_MODE 2), batch 1
1.001x (the qkv GEMV 1 us shorter, the attention's fp32 reads and the clearing give it back), so only decode bucket 2
takes it.
"""

from __future__ import annotations

import os

import torch

from .fused_norm import add_rms_norm_sums, check_sums_norm
from .gptq_packing import GPTQWeight
from .quant_common import qkv_sums, split_iters
from .quant_hgemvr import launch_hgemvr
from .quant_matmul import hgemvr_flags, tuned_config
from .quant_matmul_config import QMMConfig

ROW_KINDS = ("hgemvr", "hgemvrq", "hgemvrb")  # the half2 row GEMV kinds with today's counter epilogue

# Session 15, the tcs deferral (bench/results/decode-2026-12-01-s15-tcsfin.md): with TCS_DEFER on, gemv_add_norm also
# defers the quant_tcs tensor-core GEMVs' read-and-clear split-K epilogue (quant_tcs.DEFER_KINDS: the shipped "tcs2a" /
# "tcsat" picks of 7B down at M = 2..16) into the same norm: launch_tcs's `defer` (fp32 reds into the shared
# workspace, no counter, no last arriver). CUDA only (under the interpreter the tcs kinds run quant_tc: never
# deferred). Read at launch, so at a graph's capture: it changes what "cfin" defers at every bucket where a tcs kind
# is the o / down pick (the policy's bucket 2 too). Off: "cfin" as in session 14 (row GEMVs only).
TCS_DEFER = False
# quant_tcs.DEFER_KINDS (kept here so that nothing imports Gluon's Hopper modules off CUDA; test_consumer_finish_tcs
# checks the two agree)
TCS_DEFER_KINDS = ("tcs", "tcs2", "tcsa", "tcs2a", "tcs2ao", "tcs2at", "tcsat")


def tcs_defer_ok(x2: torch.Tensor, w: GPTQWeight, cfg: QMMConfig) -> bool:
    """Can x2 @ w (config cfg) leave y's fp32 sums to its consumer through quant_tcs's `defer` (TCS_DEFER on, a
    DEFER_KINDS pick that splits K, 4-bit, fp16 x on CUDA outside the interpreter)?"""
    gluon = x2.is_cuda and os.environ.get("TRITON_INTERPRET") != "1"  # (the interpreter runs quant_tc instead)
    ok = (TCS_DEFER and gluon and cfg.kind in TCS_DEFER_KINDS and w.bits == 4 and x2.dtype == torch.float16
          and x2.dim() == 2 and x2.shape[0] > 0)  # fmt: skip
    if not ok:
        return False
    k = w.in_features
    return k % 128 == 0 and w.group_size % 128 == 0 and split_iters(k // 128, cfg.split_k)[1] > 1


def _launch_deferred(x2: torch.Tensor, w: GPTQWeight, cfg: QMMConfig, h: torch.Tensor) -> torch.Tensor | None:
    """The deferred GEMV of gemv_add_norm: its workspace (y's sums in the first M * N values)."""
    if cfg.kind in TCS_DEFER_KINDS:
        from .quant_tcs import launch_tcs  # late: Gluon's Hopper TMA modules, CUDA only (quant_matmul's way)

        return launch_tcs(x2, w, cfg.block_m, cfg.split_k, cfg.num_stages, cfg.block_n // 64, h, cfg.kind, defer=True)
    return launch_hgemvr(x2, w, cfg.block_m, cfg.block_n, cfg.block_k, cfg.split_k, cfg.num_warps, h, finish=True,
                         defer=True, **hgemvr_flags(cfg.kind))  # fmt: skip


def config_for(x2: torch.Tensor, w: GPTQWeight) -> QMMConfig:
    """The tuner's pick for x2 @ w (what quant_matmul would run; tests replace this to force a kind)."""
    return tuned_config(x2, w)


def defer_ok(x2: torch.Tensor, w: GPTQWeight, cfg: QMMConfig) -> bool:
    """Can x2 @ w (config cfg) leave y's fp32 sums to its consumer (a split-K half2 row GEMV, 4-bit, fp16 x)?"""
    return (cfg.kind in ROW_KINDS and w.bits == 4 and x2.dtype == torch.float16 and x2.dim() == 2
            and x2.shape[0] > 0 and split_iters(w.in_features // cfg.block_k, cfg.split_k)[1] > 1)  # fmt: skip


def gemv_add_norm_ok(x2: torch.Tensor, w: GPTQWeight, h: torch.Tensor, cfg: QMMConfig) -> bool:
    """Can x2 @ w (config cfg) leave its sums for add_rms_norm_sums into the residual stream h?"""
    return ((defer_ok(x2, w, cfg) or tcs_defer_ok(x2, w, cfg)) and h.dtype == torch.float16
            and h.shape == (x2.shape[0], w.out_features) and h.stride(1) == 1)  # fmt: skip


def gemv_add_norm(x2: torch.Tensor, w: GPTQWeight, h: torch.Tensor, norm_weight: torch.Tensor, eps: float,
                  cfg: QMMConfig | None = None, clear: torch.Tensor | None = None) -> torch.Tensor | None:  # fmt: skip
    """h += x2 @ W in place (fp16(h + fp16(y))) and RMSNorm(h) [M, N] returned, in two launches (module docstring);
    None (nothing launched) where the pick cannot leave its sums: the caller runs the GEMV and add_rms_norm.
    clear: gemv_sums's region, which the norm zeroes (fused_norm's `clear`).
    The norm's arguments and modes are checked before the GEMV is launched (a ValueError launches no GEMV); whatever
    raises, the GEMV's sums (if it ran) and `clear` are zeroed before the exception propagates, so the next GEMV into
    either finds it zero (quant_common.workspace's contract)."""
    cfg = config_for(x2, w) if cfg is None else cfg
    if not gemv_add_norm_ok(x2, w, h, cfg):
        return None
    sums: torch.Tensor | None = None
    try:
        check_sums_norm(h, norm_weight, None, clear)
        sums = _launch_deferred(x2, w, cfg, h)
        if sums is None:  # (defer with split-K always returns the workspace)
            raise RuntimeError("gemv_add_norm: the GEMV returned no workspace")
        return add_rms_norm_sums(sums, norm_weight, eps, h, clear=clear)
    except BaseException:
        if sums is not None:
            sums[: h.numel()].zero_()
        if clear is not None:
            clear.zero_()
        raise


def gemv_sums(x2: torch.Tensor, w: GPTQWeight, cfg: QMMConfig | None = None) -> torch.Tensor | None:
    """x2 @ W [M, N] left as fp32 sums in the qkv region (quant_common.qkv_sums, zero before: module docstring), which
    the caller's consumers read as fp16(sum) and a later kernel clears; None (nothing launched) where the pick cannot
    defer: the caller runs the GEMV (quant_matmul) as today."""
    cfg = config_for(x2, w) if cfg is None else cfg
    if not defer_ok(x2, w, cfg):
        return None
    m, n = x2.shape[0], w.out_features
    region = qkv_sums(x2.device, m * n)
    y = torch.empty(m, n, dtype=x2.dtype, device=x2.device)  # (not written: the launch's shapes and strides)
    sums = launch_hgemvr(x2, w, cfg.block_m, cfg.block_n, cfg.block_k, cfg.split_k, cfg.num_warps, y, finish=True,
                         defer=True, sums=region, **hgemvr_flags(cfg.kind))  # fmt: skip
    if sums is None:
        raise RuntimeError("gemv_sums: the GEMV returned no sums")
    return sums[: m * n].view(m, n)

