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
the "f" suffix that splits K, or (TCS_DEFER, session 15) a tcs tensor-core kind that splits K (`gemv_add_norm_ok`);
the caller falls back to the GEMV + add_rms_norm otherwise (and with LoRA, whose delta is added to y between the two).

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
from collections.abc import Callable

import torch

from ..env_switch import env_switch
from .fused_norm import add_rms_norm, add_rms_norm_sums, check_sums_norm
from .gptq_packing import GPTQWeight
from .quant_common import gate_up_sums, qkv_sums, split_iters
from .quant_hgemvr import launch_hgemvr
from .quant_matmul import hgemvr_flags, tuned_config
from .quant_matmul_config import QMMConfig

ROW_KINDS = ("hgemvr", "hgemvrq", "hgemvrb")  # the half2 row GEMV kinds with today's counter epilogue

# Session 15, the tcs deferral (bench/results/decode-2026-12-01-s15-tcsfin.md): with TCS_DEFER on, gemv_add_norm also
# defers the quant_tcs tensor-core GEMVs' read-and-clear split-K epilogue (quant_tcs.DEFER_KINDS: with the shipped
# H200 table, 7B down's tcs2a picks (split 8, block_m 8 / 16) at M = 2..16) into the same norm: launch_tcs's `defer`
# (fp32 reds into the shared workspace, no counter, no last arriver). CUDA only (under the interpreter the tcs kinds
# run quant_tc: never deferred). Read at launch, so at a graph's capture: it changes what "cfin" defers at every
# bucket where a tcs kind is the o / down pick (the policy's bucket 2 too). On since session 15 (against the same step
# without it: batch 2 0.982x, batch 4 0.987x, batch 8 0.992-0.993x (0.990x "merge+cfin" against "merge"), batch 16
# 0.992-0.998x); env INLAID_DECODE_TCS_DEFER=0 turns it off at run time (read at each launch, so at a graph's
# capture): "cfin" as in session 14 (row GEMVs only).
TCS_DEFER = True
# quant_tcs.DEFER_KINDS (kept here so that nothing imports Gluon's Hopper modules off CUDA; test_consumer_finish_tcs
# checks the two agree)
TCS_DEFER_KINDS = ("tcs", "tcs2", "tcsa", "tcs2a", "tcs2ao", "tcs2at", "tcsat")


def tcs_defer_ok(x2: torch.Tensor, w: GPTQWeight, cfg: QMMConfig) -> bool:
    """Can x2 @ w (config cfg) leave y's fp32 sums to its consumer through quant_tcs's `defer` (TCS_DEFER on, a
    DEFER_KINDS pick that splits K, 4-bit, fp16 x on CUDA outside the interpreter)?"""
    gluon = x2.is_cuda and os.environ.get("TRITON_INTERPRET") != "1"  # (the interpreter runs quant_tc instead)
    ok = (TCS_DEFER and gluon and cfg.kind in TCS_DEFER_KINDS and w.bits == 4 and x2.dtype == torch.float16
          and x2.dim() == 2 and x2.shape[0] > 0 and env_switch("INLAID_DECODE_TCS_DEFER") is not False)  # fmt: skip
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
        return add_rms_norm_sums(sums, norm_weight, eps, h, clear=clear, checked=True)  # (checked before the GEMV)
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
    return _sums_in(x2, w, cfg, qkv_sums, "gemv_sums")


def _sums_in(x2: torch.Tensor, w: GPTQWeight, cfg: QMMConfig | None,
             region_of: Callable[[torch.device, int], torch.Tensor], name: str) -> torch.Tensor | None:  # fmt: skip
    """x2 @ w left as fp32 sums [M, N] in the region region_of(device, M * N) gives (zero before); None (nothing
    launched) where the pick cannot defer."""
    cfg = config_for(x2, w) if cfg is None else cfg
    if not defer_ok(x2, w, cfg):
        return None
    m, n = x2.shape[0], w.out_features
    region = region_of(x2.device, m * n)
    # y = x2: a deferred GEMV neither writes nor reads y (launch_hgemvr's `defer`), so x2 lends the launch an fp16
    # pointer and strides for its unused y arguments instead of an [M, N] allocation per call
    sums = launch_hgemvr(x2, w, cfg.block_m, cfg.block_n, cfg.block_k, cfg.split_k, cfg.num_warps, x2, finish=True,
                         defer=True, sums=region, **hgemvr_flags(cfg.kind))  # fmt: skip
    if sums is None:
        raise RuntimeError(f"{name}: the GEMV returned no sums")
    return sums[: m * n].view(m, n)


# --- the "+g" decode fusion (session 15): gate/up -> down -------------------------------------------------------------
# The gate/up GEMV (swiglu's weight [K, 2 I]) defers as gemv_sums does, into quant_common.gate_up_sums's region (the
# fp32 gate sums in columns 0..I-1, up in I..2I-1 of each row); the down GEMV computes its x = silu(gate) * up from them
# on load, with swiglu_epilogue's rounding (quant_hgemvr's x_sums); and the add + RMSNorm after down zeroes the region
# (fused_norm's `clear`). So the SwiGLU epilogue's arrival counter and last program leave the gate/up GEMV, as the o
# GEMV's did with "cfin". Only where both picks allow it (gu_pair); the caller falls back to gemv_swiglu otherwise.
# 7B int4 on the H200 (bench/results/decode-2026-12-01-s15-cfing.md, measured as "swiglu+cfin+g", bucket 1's policy
# since session 15): batch 1 0.9958x, 0.9955x and 0.9953x "swiglu+cfin" (lower in 8/8 rounds, three runs; gate/up
# 22.05 -> 21.29 us, down unchanged at 25.0 us); bucket 2 falls back (down's pick is tcs2a; a forced row down GEMV
# there: 1.024x).


def gu_pair(x2: torch.Tensor, gate_up: GPTQWeight, down: GPTQWeight, h: torch.Tensor,
            cfg_gu: QMMConfig | None = None,
            cfg_down: QMMConfig | None = None) -> tuple[QMMConfig, QMMConfig] | None:  # fmt: skip
    """The (gate/up, down) picks where gate/up can defer its sums (defer_ok) and down (a half2 row GEMV without
    act-order, 4-bit) read them as x, else None: the caller passes them on to gemv_gu_sums and gu_down_add_norm."""
    m, inter = x2.shape[0], down.in_features
    if (gate_up.out_features != 2 * inter or down.bits != 4 or down.perm is not None or x2.dtype != torch.float16
            or h.dtype != torch.float16 or h.shape != (m, down.out_features) or h.stride(1) != 1):  # fmt: skip
        return None
    cfg_gu = config_for(x2, gate_up) if cfg_gu is None else cfg_gu
    if not defer_ok(x2, gate_up, cfg_gu):
        return None
    cfg_down = config_for(stand_in_x(m, inter, x2.device), down) if cfg_down is None else cfg_down
    return (cfg_gu, cfg_down) if cfg_down.kind in ROW_KINDS else None


def stand_in_x(rows: int, k: int, device: torch.device) -> torch.Tensor:
    """An fp16 [rows, k] stand-in for the down GEMV's x when it reads the gate/up sums on load (gu_down_add_norm): its
    shape for the tuner's pick and the launch; never read."""
    return torch.empty(rows, k, dtype=torch.float16, device=device)


def gemv_gu_sums(x2: torch.Tensor, gate_up: GPTQWeight, cfg: QMMConfig | None = None) -> torch.Tensor | None:
    """x2 @ gate_up [M, 2 I] left as fp32 sums in quant_common.gate_up_sums's region (zero before), which the down GEMV
    reads (gu_down_add_norm) and the norm after it clears; None (nothing launched) where the pick cannot defer."""
    return _sums_in(x2, gate_up, cfg, gate_up_sums, "gemv_gu_sums")


def gu_down_add_norm(gu: torch.Tensor, down: GPTQWeight, h: torch.Tensor, norm_weight: torch.Tensor, eps: float,
                     cfg: QMMConfig | None = None, cfin: bool = True) -> torch.Tensor:  # fmt: skip
    """h += silu(gate) * up @ down in place and RMSNorm(h) returned, x from gemv_gu_sums's sums gu [M, 2 I], which the
    norm zeroes. cfin: the down GEMV defers too where it splits K (the norm reads its sums, as gemv_add_norm); else it
    writes y and add_rms_norm follows. Down's pick must be a row GEMV kind (gu_pair). Whatever raises, gu (and the
    down GEMV's sums, if deferred) are zeroed before the exception propagates."""
    m, inter = gu.shape[0], down.in_features
    sums: torch.Tensor | None = None
    try:
        x2 = stand_in_x(m, inter, gu.device)
        cfg = config_for(x2, down) if cfg is None else cfg
        if cfg.kind not in ROW_KINDS or gu.shape != (m, 2 * inter):
            raise ValueError(f"gu_down_add_norm: down's pick {cfg.kind} / sums {tuple(gu.shape)} (gu_pair)")
        check_sums_norm(h, norm_weight, None, gu)
        args = (x2, down, cfg.block_m, cfg.block_n, cfg.block_k, cfg.split_k, cfg.num_warps)
        if cfin and defer_ok(x2, down, cfg):
            sums = launch_hgemvr(*args, h, finish=True, defer=True, x_sums=gu, **hgemvr_flags(cfg.kind))
            if sums is None:
                raise RuntimeError("gu_down_add_norm: the GEMV returned no workspace")
            return add_rms_norm_sums(sums, norm_weight, eps, h, clear=gu, checked=True)
        y = torch.empty(m, down.out_features, dtype=h.dtype, device=h.device)
        launch_hgemvr(*args, y, x_sums=gu, **hgemvr_flags(cfg.kind))
        return add_rms_norm(y, norm_weight, eps, residual=h, clear=gu)
    except BaseException:
        if sums is not None:
            sums[: h.numel()].zero_()
        gu.zero_()
        raise
