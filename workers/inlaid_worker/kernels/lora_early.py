"""The multi-LoRA shrink (kernels.lora_fused) issued ahead of the base GEMV that shares its input x, at the decode
graphs' small buckets (the batches that take lora_fused's split-K partials: per-row blocks, at most
PARTIALS_MAX_ROWS of them).

The shrink reads only x (and the adapters' A), not the GEMV's output, so it need not be a link of the chain
x-writer -> GEMV -> shrink -> expand. EARLY picks where it goes:
  "off"    after the GEMV (the path before session 19's fork run);
  "before" before the GEMV on the same stream (x-writer -> shrink -> GEMV -> expand): under PDL the GEMV's first
           weight loads overlap the shrink, but the GEMV still waits for it;
  "fork"   on a branch (CUDA; on the CPU it runs as "before"): the current stream is forked to FORK_PRIORITY's
           side_stream (an event), the shrink is launched there, and the current stream joins it before the expand,
           so a captured graph holds x-writer -> {GEMV, shrink} -> expand and the shrink runs beside the GEMV (the DOT
           dump shows those edges; it does not show whether the join edge stays programmatic).
EARLY None (the default) picks the mode per batch by its row blocks (POLICY), inside CUDA graph captures only (eager
steps keep "off" and pay no setup here: early_mode decides before any); a mode forces it everywhere (benchmarks,
tests).
Measured (H200, 7B int4, rank-16 q/k/v/o, decode graphs with PDL, 8 rounds on one runner, device ms against "off";
bench/results/decode-2026-12-01-s19-lora-fork.md, two runs): "before" 0.954x / 0.958x at batch 1 (8/8 rounds each),
but 1.033x at 2, 1.076-1.082x at 4, 0.997x at 8, 1.005-1.012x at 16; "fork" 1.034-1.042x at 1, 1.013x at 2,
0.988x / 0.997x at 4 (8/8), 0.943x at 8, 0.958x / 0.959x at 16 (8/8); "fork-plain" (the forked shrink launched without
PDL, one run; removed since) 1.116x at 1, 0.969x at 4, 0.982x at 16. Hence POLICY: "before" at 1 block, "off" at 2,
"fork" at 3-16.
Larger batches (above PARTIALS_MAX_ROWS blocks, SGMV, the grouped kernels) are never affected. v is allocated on the
expand's stream before the fork and freed after the join, so the graph pool never hands its block to a kernel that
could run beside the shrink.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from . import lora_fused
from .lora_batch import LoraBatch, LoraPool
from .side_stream import side_stream

EARLY_MODES = ("off", "before", "fork")
# (at most this many row blocks, mode), first match; more blocks: "off"
POLICY: tuple[tuple[int, str], ...] = ((1, "before"), (2, "off"), (16, "fork"))
EARLY: str | None = None
# the forks' branch stream: a high-priority pool stream, so never the capture stream nor the warm-ups' side stream (0)
FORK_PRIORITY = -1


def check_early(value: str) -> str:
    if value not in EARLY_MODES:
        raise ValueError(f"lora_early.EARLY must be one of {EARLY_MODES}, got {value!r}")
    return value


def mode_for(blocks: int, capturing: bool) -> str:
    """The mode for a batch of `blocks` row blocks: EARLY where set (everywhere: the eager warm-up before a capture
    then compiles what the capture launches), else POLICY's inside a CUDA graph capture and "off" for eager steps."""
    if EARLY is not None:
        return check_early(EARLY)
    if not capturing:
        return "off"
    return next((check_early(m) for n, m in POLICY if blocks <= n), "off")


def early_mode(x: torch.Tensor, batch: LoraBatch) -> str:
    """mode_for this call's batch and capture state (the current CUDA stream's, for x on CUDA): the cheap first
    decision, made before any setup; "off" for a batch without row blocks."""
    blocks = batch.blk_len.numel()
    if blocks == 0 or batch.block_m != 1 or blocks > lora_fused.PARTIALS_MAX_ROWS:  # no partials plan: place() says off
        return "off"
    return mode_for(blocks, x.is_cuda and torch.cuda.is_current_stream_capturing())


@dataclass(frozen=True)
class Shrunk:
    """A shrink already launched for x, whose expand (finish) is still to come."""

    x: torch.Tensor
    pools: tuple[LoraPool, ...]
    batch: LoraBatch
    s: lora_fused.SegmentArgs
    plan: lora_fused.ShrinkPlan
    v: torch.Tensor
    branch: torch.cuda.Stream | None  # the fork's stream (the expand's stream joins it), or None: the same stream


def place(mode: str, partials: bool, is_cuda: bool) -> str:
    """Where the shrink of a batch goes under EARLY = mode: "off" unless the plan takes the partials (the small
    buckets); the fork needs CUDA streams (elsewhere "before": the same kernels, one stream)."""
    check_early(mode)
    if mode == "off" or not partials:
        return "off"
    return "before" if mode == "fork" and not is_cuda else mode


def shrink_ahead(x: torch.Tensor, pools: Sequence[LoraPool], batch: LoraBatch, mode: str) -> Shrunk | None:
    """Launch the shrink of x now, before the GEMV on x, where mode (early_mode's, not "off") places it so; None: the
    caller applies LoRA after the GEMV as before (lora_fused.lora_apply_fused)."""
    if mode == "off" or not 1 <= len(pools) <= 3 or batch.blk_len.numel() == 0:
        return None
    s = lora_fused.segment_args(pools)
    plan = lora_fused.shrink_plan(batch, s, x.shape[1], len(pools))
    where = place(mode, plan.partials, x.is_cuda)
    if where == "off":
        return None
    v = lora_fused.alloc_v(x.shape[0], sum(s.r_max), plan, x.device)  # on the expand's stream, before the fork
    branch = None
    if where == "fork":
        # model.decode_graphs makes this stream before it captures; a first use inside some other capture would still
        # make no CUDA call (the capture stream is a pool stream, so every priority's pool already exists)
        branch = side_stream(x.device, FORK_PRIORITY)
        branch.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(branch):
            lora_fused.launch_shrink(x, s, v, batch, plan, len(pools))
    else:
        lora_fused.launch_shrink(x, s, v, batch, plan, len(pools))
    return Shrunk(x, tuple(pools), batch, s, plan, v, branch)


def finish(y: torch.Tensor, sh: Shrunk, cols: Sequence[int]) -> torch.Tensor:
    """In place: y[:, cols[s] : cols[s] + N_s] += LoRA_s(x) from the shrink's v (joining its branch first)."""
    widths = lora_fused.check_segments(y, sh.x, sh.pools, cols, sh.batch)
    if sh.branch is not None:
        torch.cuda.current_stream(y.device).wait_stream(sh.branch)
    lora_fused.launch_expand(y, sh.v, sh.s, widths, cols, sh.batch, sh.plan)
    return y
