"""CUDA graphs for decode steps (triton backend on CUDA), one per batch-size bucket and LoRA on/off (and, for LoRA
steps, the LoRA kernels' kind: below).

A pure decode step (every sequence adds one token) of S sequences runs in the graph of the smallest bucket
B >= S. Each graph reads one static int32 device buffer: token ids, positions, KV slots, context lens, each
row's LoRA slot and row count (BGMV, one row per program) and the block table [B, W]; rows past S are padding
(slot -1: nothing written; context 0: zero attention output; no LoRA rows). A step fills a pinned host copy of
that buffer, sends it with one asynchronous copy and replays (Staging). The pinned copy is reused by the bucket's
next step, so an event recorded after each copy is waited on just before the buffer is filled again: without it a
step that nothing syncs with (the engine samples on the device, and a non-final prompt chunk samples nothing) could
let the next step of the bucket overwrite the buffer while the GPU, still busy with earlier work, has not copied it
yet (the earlier step then reads the later one's slots: silent KV corruption). The wait covers the stream up to
that copy, not the replay after it.

Every graph writes its float32 logits into rows [:bucket] of the runner's one shared buffer (model.graph_logits:
allocated outside the graphs' pool, the prefill graphs write it too), not into an output of its own: a step's
device logits are valid until the next replay of any graph, decode or prefill. With host logits (execute) they come
back through rows [:bucket] of the one shared pinned buffer (made by the first such step; execute_device never
makes it), whose view is returned: valid until the next host step of any graph.

The host work before the replay is what the GPU waits for at small batches (issue 4), so it avoids torch ops on
the step's CPU tensors (each costs microseconds of dispatch on a GPU host): the LoRA test reads the host list of
adapter ids (ModelRunner passes the one it checked the slots with), the staging buffer's numpy views and the
output's row views are made once per graph, the fields go in as host lists up to LIST_ROWS rows, and the torch
Stream the event is recorded on is rebuilt only when the current stream changes (bench/results/
decode-2026-11-30-s10-host.md: 0.22 -> 0.10 ms of host time a batch-1 step on the H200).

With `pdl` (kernels.pdl.MODES; default env INLAID_PDL, on) the Triton kernels that support it are captured with
Programmatic Dependent Launch, so each may start (and load its weights) while the previous one finishes: the
half2 and 3-bit GEMVs and the Gluon tensor-core GEMVs (the tuner's 7B / 13B picks up to M = 32), the LoRA shrink /
expand, norm, rope, attention, merge, the fused decode attention (decode_fused) and SwiGLU (plain launches in
between, e.g. torch ops, cuBLAS, quant_tcl's large-M GEMM, are safe: they wait for everything before them).
Policy, by measurement (7B int4 / int3 on the H200, bench/results/decode-2026-11-30-pdl2.md, modes alternating on
one runner): PDL at buckets up to PDL_MAX_BUCKET
(16), with and without LoRA: mode 1 gained 1.01-1.13x there in both runs (batch 1 2.14 -> 1.91 ms, with a rank-16
q/k/v/o adapter 2.54 -> 2.25 ms; int3 1.05-1.10x); at batch 32 it measured 0.99-1.01x (neutral), so buckets from
24 up stay plain. Env INLAID_PDL_MAX_BUCKET and INLAID_PDL_LORA=0/1 override it (benchmarks). The applied mode is
part of a graph's key: switching back and forth keeps both sets of graphs (benchmarks alternate).

Decode fusions (llama_fast.DECODE_FUSIONS): the setting `fusion` is "auto" (default; env INLAID_DECODE_FUSION
overrides it), which picks one per bucket from FUSION_POLICY, or one fusion for every bucket (benchmarks, tests).
The fusion is part of a graph's key too, so switching keeps the other fusions' graphs. Under "auto", env
INLAID_DECODE_DN2=0 (DN2_ENV; strict on/off, default on, parsed when the worker starts) takes "+dn2" and its "+q" out
of bucket 1's "swiglu+cfin+q+g+dn2" (-> "swiglu+cfin+g", session 15-20's choice; other buckets unchanged), and
INLAID_DECODE_NORM=1 (NORM_ENV) puts "norm" in place of "cfin", "+q", "+g" and "+dn2" (with_norm).

Graphs are captured on first use of a (bucket, LoRA, PDL mode, fusion, input mode, grouped LoRA) key after one
eager warm-up run (which also lets quant_matmul tune its tiles), and dropped when the runner's weights object or the
LoRA pools' layout changes.

The LoRA kernels' kind (session 18): a graph's rows are staged one per row (BGMV), so the shipped kernels read a
shared adapter once per row; kernels.lora_grouped groups an adapter's rows on the device instead, which pays when the
step's rows share adapters and costs when they do not (batch 32: one shared adapter 0.71-0.97x, 32 distinct 1.06-1.12x;
bench/results/decode-2026-12-01-s18-lora-all.md). The host knows the step's mix when it stages it, so a LoRA step asks
model.kernel_lora.pick_grouped (rows per distinct adapter, setting kernel_lora.GROUPED) and replays the bucket's graph
captured with the grouped kernels or the BGMV one: both coexist (the choice is the key's last part), the grouped one
captured on first need. A step without LoRA rows never asks (its key says False, as before). Measured (7B int4, batch
32, H200, the rule against BGMV only alternating on one runner, 8 rounds; bench/results/
decode-2026-12-01-s18-lora-auto.md): rank 64 all 7 linears, one adapter 0.7090x; rank 16 q/k/v/o, 8 adapters x 4 rows
0.9866x (lower in 8/8 rounds each); 32 distinct adapters (the rule keeps BGMV) 1.0000x. On by default since
session 19 (kernel_lora.GROUPED AUTO, its GPU tests passed on the H200); GROUPED = False makes every LoRA graph the
BGMV one, as before.
Steps the graphs cannot take (prefill, a batch over the largest bucket, a wider block table) return None.

The step's input inside the graph (GRAPH_INPUT, env INLAID_GRAPH_INPUT; session 17, issue 4: the async decode loop
queued, between two replays, the staging copy and the fed tokens' gather as separate stream operations, each with
microseconds of idle GPU around it): 0, the staging copy, then TokenFeed.write into the staged ids, then the replay;
1, the fed rows' sources and the token tensor's address are staged too (model.token_feed.stage_feed) and the graph's
first kernel (token_feed.stage_in, a plain launch: every later kernel, the PDL ones' early reads of the staged
buffer included, starts after it) gathers the tokens; 2 (buckets up to IN_GRAPH_COPY_MAX_BUCKET on CUDA while the
staging buffer is at most IN_GRAPH_COPY_MAX_BYTES, else 0), that kernel also reads the pinned staging buffer itself
through its unified address, so no copy-engine transfer is queued, and the event that guards the pinned buffer is an
external event recorded inside the graph right after that kernel (the host refills the buffer only once the graph has
read it, as with the copy). The mode is part of a graph's key.
Measured (bench/results/decode-2026-12-01-s17-b1.md: the engine's async loop, 7B int4 on the H200, the modes
alternating in one process, two runs of 4 rounds): mode 2 against 0 at batch 1 0.9948x / 0.9971x and at batch 4
0.9959x / 0.9978x, lower in every round (16/16), so it ships; the GPU's idle time between two replays went from
25.9 to 8.1 us. Mode 1 alone gained nothing (0.9996x / 1.0001x, 1.0008x at batch 4 in run 2). Mode 2 runs only at
the buckets where it was lower in every round (IN_GRAPH_COPY_MAX_BUCKET, 4; DecodeGraphs.in_graph_max_bucket lifts
it for a benchmark). Buckets 8 and 16 (session 18, bench/results/decode-2026-12-01-s18-input-mid.md, the same loop,
two runs of 4 rounds): batch 8 0.9976x (4/4) and 0.9986x (3/4), batch 16 0.9985x (4/4) and 0.9986x (3/4; its median
ms/step 3.7442 against mode 0's 3.7424): 7 of 8 rounds lower at each, so they keep the copy.
A mode 3 (session 17: also the all-greedy tokens taken at the end of the graph, nothing queued between replays)
measured 0.9942-0.9971x against mode 0, but against mode 2 in the closing run 0.9987x (3/4 rounds) at batch 1 and
1.0004x (2/4) at batch 4 (gpu-tests-2026-12-01-s17-final.md): not lower in every round, so session 18 removed it
(with the engine's request for it and the graph's greedy buffers).

A graph replays raw device addresses, so everything it reads must stay allocated while it lives:
- the weights: a re-quantized layer is copied into the serving tensors in place (onboard.layer_swap), which
  keeps every address; a layer replaced by another object changes the weights object and drops the graphs
  before the next replay (the old tensors may be freed, and `torch.cuda.graph` empties the allocator's
  cache at every capture, which returns freed blocks to the driver);
- what only the graph holds (its index tensors, the LoRA context) and the kernels' module-level buffers that a
  larger call may replace (quant_matmul's split-K workspaces, the dequantize + cuBLAS scratch): `keep`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from inlaid_worker.cuda_alloc import pinned_pointer_ok
from inlaid_worker.env_switch import env_int, env_switch
from inlaid_worker.kernels import pdl
from inlaid_worker.kernels.decode_fused import choose_fused_parts
from inlaid_worker.kernels.lora_batch import LoraBatch
from inlaid_worker.kernels.lora_early import FORK_PRIORITY
from inlaid_worker.kernels.paged_decode import choose_num_parts
from inlaid_worker.kernels.side_stream import side_stream
from inlaid_worker.lora.pools import LoraPools
from inlaid_worker.model import kernel_lora
from inlaid_worker.model.config import ModelConfig
from inlaid_worker.model.graph_logits import GraphLogits, write_logits
from inlaid_worker.model.kernel_lora import KernelLoraContext
from inlaid_worker.model.llama_fast import (
    DECODE_FUSIONS,
    ROPE_FUSIONS,
    DecodeLayout,
    attention_fusion,
    dnorm2_fused,
    forward_fast,
    swiglu_fused,
)
from inlaid_worker.model.rope import cos_sin
from inlaid_worker.model.step_input import StepInput
from inlaid_worker.model.token_feed import FEED_EXTRA, STAGE_BLOCK, graph_tokens, stage_feed, stage_in
from inlaid_worker.model.weights import LlamaWeights

BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 80, 96, 128, 160, 192, 224, 256)
PDL_MAX_BUCKET = 16  # PDL measured >= 1.01x up to batch 16 and 0.99-1.01x at 32 (module docstring)
_FIELDS = 6  # token, position, slot, context len, LoRA slot, LoRA rows; then the block table
# (then, with GRAPH_INPUT 1-2, the feed region: each row's source in the fed tokens, and their address)
GRAPH_INPUT = 2  # the step's input inside the graph (module docstring); env INLAID_GRAPH_INPUT overrides it
GRAPH_INPUT_MODES = (0, 1, 2)  # (session 17's mode 3 was removed in session 18: module docstring)
IN_GRAPH_COPY_MAX_BUCKET = 4  # mode 2 up to this bucket: lower in every round at 1 and 4 (s17-b1), 7/8 at 8 and 16 (s18)
# ... and only while the staging buffer is at most this many bytes (stage_in reads it over PCIe with SM loads; 7B's
# 256-column tables: 4.2 KiB at bucket 4; a 128k-context model's table would make it ~0.5 MB: the copy engine)
IN_GRAPH_COPY_MAX_BYTES = 64 << 10


AUTO = "auto"  # the decode fusion chosen per bucket by FUSION_POLICY
# (largest bucket, fusion) in ascending order; buckets past the last entry use "none". By measurement (7B int4,
# H200, PDL on, the fusions alternating round by round on one runner, two runs: bench/results/
# decode-2026-11-30-s7-fusions.md, -s7-final.md): "merge" at buckets 9-16 (batch 16: 1.06x and 1.03x, every round
# faster than "none"'s); elsewhere no fusion beat "none" beyond the rounds' spread (batch 1: rope 1.00x, merge
# 0.99x, swiglu 0.98x with its own graph re-timed as "auto" at 1.01x, rope+swiglu 1.03x in one run), so "none"
# (until session 12: bucket 1 below).
# The "norm" fusion (residual add + RMSNorm inside the GEMVs, llama_fast) is in no bucket's policy: 7B int4 on the
# H200, PDL on, alternating (bench/results/decode-2026-11-30-s12-fusednorm.md), it made the batch-1 step 1.03-1.09x
# slower and batch 2 1.04-1.12x (without PDL batch 1 gained 0.4-2.7%: the removed norm launches were mostly hidden under
# the next GEMV's PDL prefetch, which the fused consumer loses). Env INLAID_DECODE_NORM=1/0 adds it to / removes it
# from the policy's fusion (NORM_ENV; where the bucket's kernels cannot fuse a norm it runs unfused).
# Session 12 (same file, two runs of 10 rounds, with the row attention and its fused rotary now the default at
# buckets 1-2): "swiglu" at batch 1 0.990x and 0.992x, faster in every round (batch 2: 0.999x, 7/10), so bucket 1
# takes "swiglu".
# Session 14 (bench/results/decode-2026-12-01-s14-cfin.md; s14_cfin.py = s12_norm's protocol, 8 rounds a run): "+cfin"
# (the add + RMSNorm after o / down finishes their split-K sums, kernels.consumer_finish) with the sums loaded and
# zeroed after a barrier: batch 1 "swiglu+cfin" 0.967x and 0.965x "swiglu" (device ms), batch 2 0.976x and 0.978x
# "none", lower in every round of both runs (spreads <= 0.008 ms), so buckets 1-2 take "swiglu+cfin". (With one
# atomic exchange per sum instead, 1.007-1.012x at batch 1 in four runs: slower.)
# Session 14, "+q" (bench/results/decode-2026-12-01-s14-cfinq.md: the row attention reads the qkv GEMV's split-K sums,
# the norm after o clears them, kernels.consumer_finish.gemv_sums): batch 2 "swiglu+cfin+q" 0.972x "swiglu+cfin"
# (extra programs clear; 0.984-0.988x in three runs with the norm's row program clearing), lower in every round;
# batch 1 1.001x (1/8; 1.017x with the row program clearing), so only bucket 2 takes it.
# Session 15 (bench/results/decode-2026-12-01-s15-{cfing,tcsfin}.md, the same protocol): "+g" (the down GEMV reads the
# gate/up GEMV's split-K sums) at batch 1 0.9958x / 0.9955x / 0.9953x "swiglu+cfin", 8/8 rounds lower in three runs;
# "cfin" with the tcs deferral (kernels.consumer_finish.TCS_DEFER, now on: down's tcs2a picks at M = 2..16 defer too)
# at batch 2 0.982x (two runs), batch 4 "cfin" 0.987x "none" (two runs; measured as "swiglu+cfin", the same kernels
# at M = 4: the SwiGLU epilogue needs a row GEMV), batch 8 "merge+cfin" 0.978x /
# 0.979x "none" ("merge" alone 0.987-0.988x "none" in three runs, against session 7's choice of "none" there),
# batch 16 "merge+cfin" 0.992x / 0.993x "merge"; lower in every round of every run. But on the 13B (same protocol,
# bench/results/decode-2026-12-01-s15-13b-policy.json, 6 rounds) "merge+cfin" at batch 8 is 1.014x "none" (0/6 lower;
# "cfin" 0.9995x, 6/6, and 1.001x at batch 4: the 13B's o / down picks there are tc2, nothing to defer), so buckets
# 3-8 take "cfin" (7B batch 8: 0.992-0.993x "none", three runs; 1.004-1.006x plain "merge" there) and only 9-16
# "merge+cfin".
# Session 21 (bench/results/decode-2026-12-01-s21-dn2shfl.md, -s21-dn2-port.md; s20_dnorm2's protocol): "+dn2"
# ("swiglu+cfin+q+g+dn2", kernels.deferred_norm: no add + RMSNorm launch between layers, the consumer GEMVs form the
# normalised x from the producers' sums, each x word once per 16-lane segment and shuffled) at batch 1 against
# "swiglu+cfin+g", in main after the port: 7B int4 1.379 vs 1.485 ms of device time (-105 us, 8/8 rounds lower; the
# experiment on 7726c8c: -104 us), 13B 2.466 vs 2.644 ms (-178 us, 8/8), the 7B engine loop 1.399 vs 1.501 ms a step
# (4/4), so bucket 1 takes it. The same name with the per-thread formation ("thread") was +90 us slower than
# "swiglu+cfin+g", so it runs only where every consumer shuffles. The step runs "swiglu+cfin+g" instead (checked at each
# forward, so at a graph's capture: llama_fast.forward_fast / _dn_picks, deferred_norm.layer_picks / dn2_pays) where:
# - the graph has LoRA (its shrink needs x), or the name has "norm" (INLAID_DECODE_NORM=1 replaces "+dn2" anyway);
# - the row attention with rotary inside does not run: paged_decode.row_rope_for gives None (another GPU than the
#   H200's ROW_TABLE, INLAID_DECODE_ATTN=tiles / split, INLAID_DECODE_ATTN=row with a GQA model, INLAID_DECODE_ROW=0,
#   row options with rope=0);
# - the activations are not fp16, or a layer's qkv / o / gate/up / down is not a one-part 4-bit packed weight (dense,
#   3-bit, or a QuantMatrix of several parts), or has act-order on qkv / gate/up, or its picks cannot defer (split-K
#   half2 row GEMVs, down a row GEMV, qkv / gate/up block_k 64 or 128: layer_picks);
# - on CUDA with deferred_norm.DN2_FORM "auto" (shipped), a consumer (every layer's gate/up, the qkv of layers >= 1)
#   would form x per thread: its pick is outside quant_hgemvr.shfl_layout_ok (block_m 1, block_n 64, block_k 128,
#   2 warps, no burst / pin, N % 64 == 0: the H200 table's 7B / 13B batch-1 picks) or its layer has no current
#   pair-ordered norms (model.weights.current_pairs: none, or stale after a norm was replaced or written in place).
# "Instead" means the same launches as the name "swiglu+cfin+g" (the "+q" part drops with "+dn2"): identical on the
# CPU; on the GPU the split-K GEMVs' fp32 atomics add in a varying order, so two captures (of either name) differ in
# the last bits. Opt-outs: INLAID_DECODE_DN2=0 (bucket 1 only: "swiglu+cfin+g", the other buckets keep the policy);
# INLAID_DECODE_FUSION=swiglu+cfin+g names one fusion for every bucket (buckets 2+ then run it too: a benchmark /
# debugging switch).
FUSION_POLICY: tuple[tuple[int, str], ...] = (
    (1, "swiglu+cfin+q+g+dn2"), (2, "swiglu+cfin+q"), (8, "cfin"), (16, "merge+cfin"))  # fmt: skip
NORM_ENV = "INLAID_DECODE_NORM"
DN2_ENV = "INLAID_DECODE_DN2"  # 0: the AUTO policy without "+dn2" (and its "+q") at bucket 1 (module docstring)


def policy_fusion(bucket: int, policy: tuple[tuple[int, str], ...] = FUSION_POLICY) -> str:
    """The decode fusion of `bucket` under the AUTO setting (FUSION_POLICY)."""
    return next((f for top, f in policy if bucket <= top), "none")


def with_norm(fusion: str, on: bool | None) -> str:
    """`fusion` with the norm fusion added (on) or removed (off); None: unchanged. Added only to a name whose attention
    part is "none" (DECODE_FUSIONS has "norm" and "norm+swiglu" only): it keeps "swiglu" and replaces "cfin", "+q",
    "+g" and "+dn2" (the norm's producers write no y to finish, its consumers read x); other names stay as they are."""
    if on is None:
        return fusion
    base = "+".join(p for p in fusion.split("+") if p != "norm") or "none"
    if not on or attention_fusion(base) != "none":
        return base
    return "norm+swiglu" if swiglu_fused(base) else "norm"


def without_dn2(fusion: str) -> str:
    """`fusion` without "+dn2" and the "+q" it rides on ("swiglu+cfin+q+g+dn2" -> "swiglu+cfin+g", the name "+dn2"
    falls back to); a name without "+dn2" unchanged (bucket 2's "swiglu+cfin+q" keeps its "+q")."""
    if not dnorm2_fused(fusion):
        return fusion
    return "+".join(p for p in fusion.split("+") if p not in ("dn2", "q")) or "none"


def dn2_env() -> bool:
    """Does the AUTO policy keep "+dn2" at bucket 1? Env INLAID_DECODE_DN2 (DN2_ENV): unset or 1 (on, true, yes) keeps
    it, 0 (off, false, no) takes it out (without_dn2); anything else is an error naming the variable, raised when the
    worker starts (config.check_gpu_env) and when decode graphs are made."""
    return env_switch(DN2_ENV) is not False


def fusion_env() -> str:
    """The decode graphs' fusion setting: env INLAID_DECODE_FUSION (a llama_fast.DECODE_FUSIONS name, or "auto",
    the default: FUSION_POLICY per bucket)."""
    value = os.environ.get("INLAID_DECODE_FUSION", AUTO).strip().lower() or AUTO
    try:
        return check_fusion(value)
    except ValueError as exc:
        raise ValueError(f"INLAID_DECODE_FUSION: {exc}") from None


def check_fusion(value: str) -> str:
    if value != AUTO and value not in DECODE_FUSIONS:
        raise ValueError(f"decode fusion must be {AUTO!r} or one of {DECODE_FUSIONS}, got {value!r}")
    return value


def pdl_policy_env() -> tuple[int, bool]:
    """(largest bucket captured with PDL, PDL in LoRA graphs too): PDL_MAX_BUCKET and on, unless env
    INLAID_PDL_MAX_BUCKET (an integer) / INLAID_PDL_LORA (1/on/true/yes or 0/off/false/no) say otherwise; anything
    else is an error naming the variable."""
    lora = env_switch("INLAID_PDL_LORA") is not False
    return env_int("INLAID_PDL_MAX_BUCKET", PDL_MAX_BUCKET, "a decode bucket"), lora


def graph_input_env() -> int:
    """GRAPH_INPUT unless env INLAID_GRAPH_INPUT (0, 1 or 2) says otherwise; anything else is an error naming the
    variable and the allowed values."""
    mode = env_int("INLAID_GRAPH_INPUT", GRAPH_INPUT, "a decode graph input mode")
    try:
        return check_graph_input(mode)
    except ValueError as exc:
        raise ValueError(f"INLAID_GRAPH_INPUT: {exc}") from None


def check_graph_input(mode: int) -> int:
    if mode not in GRAPH_INPUT_MODES:
        allowed = ", ".join(str(m) for m in GRAPH_INPUT_MODES)
        raise ValueError(f"decode graph input mode must be one of {allowed}, got {mode!r}")
    return mode


def staging_words(b: int, width: int, mode: int) -> int:
    """A bucket's int32 staging buffer length: the fields and the block table, plus the feed region in modes 1-2."""
    return b * (_FIELDS + width) + (b + FEED_EXTRA if mode else 0)


def bucket_for(num_seqs: int, buckets: tuple[int, ...] = BUCKETS) -> int | None:
    return next((b for b in buckets if b >= num_seqs), None)


def is_pure_decode(step: StepInput) -> bool:
    return step.num_seqs > 0 and step.num_tokens == step.num_seqs


def stage_views(host: torch.Tensor, b: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """numpy views of a bucket's int32 staging buffer [b * (6 + width)]: the fields [6, b] and the block table
    [b, width] (made once per graph: DecodeGraphs keeps them)."""
    buf = host.numpy()
    return buf[: _FIELDS * b].reshape(_FIELDS, b), buf[_FIELDS * b : b * (_FIELDS + width)].reshape(b, width)


def feed_view(host: torch.Tensor, b: int, width: int) -> np.ndarray | None:
    """The numpy view of a bucket's feed region (b row sources, then the tokens' address words), None where the
    buffer has none (GRAPH_INPUT 0)."""
    buf = host.numpy()
    at = b * (_FIELDS + width)
    return buf[at : at + b + FEED_EXTRA] if buf.shape[0] >= at + b + FEED_EXTRA else None


_PAD = np.array([[0], [0], [-1], [0], [0], [0]], dtype=np.int32)  # a padding row's fields: slot -1, the rest 0
# Up to this many rows a step's six fields go into the staging buffer as one nested host list (tolist is no torch
# op; one numpy assignment): the whole fill of a batch-1 step took 9.9 us on the H200's host against 21.5 through
# the numpy views (16 rows: 21.6 against 22.6; bench/results/decode-2026-11-30-s10-host.md).
LIST_ROWS = 16


def stage_step(host: torch.Tensor, b: int, width: int, step: StepInput,
               views: tuple[np.ndarray, np.ndarray] | None = None, ids: list[int] | None = None) -> None:  # fmt: skip
    """Fill a bucket's int32 staging buffer [b * (6 + width)] from a decode step of S <= b sequences (host lists or
    numpy views: microseconds). Layout: token, position, KV slot, context len, LoRA slot (>= 0), LoRA rows (0/1),
    each [b], then the block table [b, width]; rows S..b-1 are padding (slot -1, everything else 0).
    views: stage_views(host, b, width), made once by the caller; ids: step.adapter_ids.tolist(), where the caller
    has it."""
    s, w = step.num_seqs, step.block_tables.shape[1]
    f, tables = stage_views(host, b, width) if views is None else views
    if s <= LIST_ROWS:
        ids = step.adapter_ids.tolist() if ids is None else ids
        f[:, :s] = [step.token_ids.tolist(), step.positions.tolist(), step.slot_mapping.tolist(),
                    step.context_lens.tolist(), [max(i, 0) for i in ids], [int(i >= 0) for i in ids]]  # fmt: skip
    else:
        ida = step.adapter_ids.numpy()
        f[0, :s] = step.token_ids.numpy()
        f[1, :s] = step.positions.numpy()
        f[2, :s] = step.slot_mapping.numpy()
        f[3, :s] = step.context_lens.numpy()
        np.maximum(ida, 0, out=f[4, :s], casting="unsafe")
        np.greater_equal(ida, 0, out=f[5, :s], casting="unsafe")
    if s < b:
        f[:, s:] = _PAD
    tables[:s, :w] = step.block_tables.numpy()


new_event: Callable[[], Any] = torch.cuda.Event  # what Staging records (tests swap in a fake that logs the order)


def new_graph_event() -> Any:
    """The event a GRAPH_INPUT 2 graph records right after its staging kernel (external: a record node in the graph
    that the host can wait on; None where this torch has no external events)."""
    try:
        return torch.cuda.Event(external=True)
    except TypeError:
        return None


class Staging:
    """A graph's int32 staging buffer on the host (pinned on CUDA) and its device twin, which the graph reads.

    send(fill) waits for the previous copy out of `host` (an event recorded right after it on the stream; only that
    copy and the work queued before it, not the replay queued after), fills `host`, copies it to `dev`
    asynchronously and records the event again. Where host is dev (graph-less twins on the CPU) it only fills.
    mode: the GRAPH_INPUT mode its graph runs; in_graph (mode 2): the graph's own first kernel reads host; send()
    only fills, and `sent` is the external event the graph records right after that kernel (set by DecodeGraphs)."""

    def __init__(self, host: torch.Tensor, dev: torch.Tensor, mode: int = 0) -> None:
        self.host, self.dev = host, dev
        self.sent: Any = None  # the event recorded after the last copy (None before the first one)
        self.mode = mode
        self.in_graph = mode == 2
        self.feed: np.ndarray | None = None  # the feed region's view of host (decode graphs, GRAPH_INPUT 1-2)
        self.held: torch.Tensor | None = None  # the fed tokens the last staged address points at (kept alive)
        self._twin = dev is not host
        self._cuda_index = dev.device.index if dev.is_cuda else None
        self._stream: tuple[int, Any] = (-1, None)  # (raw handle, torch Stream) of the last current stream seen

    def wait(self) -> None:
        """Block until the GPU has read the last copy's source (a no-op before the first copy)."""
        if self.sent is not None:
            self.sent.synchronize()

    def send(self, fill: Callable[[torch.Tensor], None]) -> None:
        self.wait()
        fill(self.host)
        if not self._twin or self.in_graph:
            return
        self.dev.copy_(self.host, non_blocking=True)
        if self.sent is None:
            self.sent = new_event()
        self.sent.record(self._current_stream())

    def _current_stream(self) -> Any:
        """The device's current stream (what the copy was queued on; None off CUDA), as a torch Stream: the object is
        made again only when the current stream's raw handle changes (torch.cuda.current_stream builds a new one on
        every call, a measurable part of a decode step's host time)."""
        if self._cuda_index is None:
            return None
        raw = torch._C._cuda_getCurrentRawStream(self._cuda_index)
        if raw != self._stream[0]:
            self._stream = (raw, torch.cuda.current_stream(self._cuda_index))
        return self._stream[1]


def pinned_like(t: torch.Tensor) -> torch.Tensor:
    """An empty host tensor of t's shape and dtype, pinned where t is on CUDA (the logits' copy back)."""
    return torch.empty(t.shape, dtype=t.dtype, pin_memory=t.is_cuda)


def sync_stream(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()


# module, dict of device buffers
KERNEL_BUFFERS = (("quant_common", "_WORKSPACES"), ("quant_mma", "_SCRATCH"), ("decode_fused", "_COUNTERS"),
                  ("quant_tcw", "_SLOT_WS"), ("quant_common", "_QKV_SUMS"), ("quant_common", "_GU_SUMS"))


def _workspaces() -> tuple[object, ...]:
    """The kernels' reused device buffers a captured graph may point at: split-K partial sums and counters
    (quant_common.workspace), the dense scratch of the dequantize + cuBLAS path (quant_mma.dequant_matmul),
    the fused decode attention's arrival counters (decode_fused.counters) and quant_tcw's split-K slots and
    counters (quant_tcw.slot_workspace: the shipped H200 table runs tcw split 2 at the M = 256 bucket), the qkv
    GEMV's deferred sums region of the "+q" decode fusion (quant_common.qkv_sums) and the gate/up GEMV's of "+g"
    (quant_common.gate_up_sums).
    Each is replaced by a bigger one when a larger call needs it; the graph keeps the captured one alive.
    A rename fails loudly here (and in the tests) instead of silently keeping nothing."""
    found: list[object] = []
    for module, name in KERNEL_BUFFERS:
        mod = sys.modules.get(f"inlaid_worker.kernels.{module}")
        if mod is None:
            continue  # never imported: nothing of it was captured
        found += list(getattr(mod, name).values())
    return tuple(found)


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    staging: Staging  # pinned int32 staging buffer and its device twin (what the graph reads)
    logits: torch.Tensor  # [B, vocab] fp32, written by every replay: rows [:B] of the shared GraphLogits buffer
    keep: tuple[object, ...]  # what the graph reads or writes that nothing else holds (index tensors, workspaces)
    host_logits: torch.Tensor | None = None  # [B, vocab] fp32 pinned, what run(host=True) returns a view of: rows
    # [:B] of the shared host buffer, taken by the graph's first such run (execute_device never makes that buffer)
    views: tuple[np.ndarray, np.ndarray] | None = None  # stage_views of staging.host (set by DecodeGraphs._new)
    grouped: bool = False  # LoRA through kernels.lora_grouped (the key's last part, set by DecodeGraphs._new)
    rows: dict[int, torch.Tensor] = field(default_factory=dict)  # S -> logits[:S], made once per S (a torch slice
    # costs microseconds of host time every step)

    @property
    def dev(self) -> torch.Tensor:
        return self.staging.dev

    def logits_rows(self, s: int) -> torch.Tensor:
        """logits[:s] (the same view object for every step of s rows)."""
        out = self.rows.get(s)
        if out is None:
            out = self.rows[s] = self.logits[:s]
        return out


class DecodeGraphs:
    def __init__(
        self, config: ModelConfig, kv_cache: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype,
        max_blocks: int, pools: LoraPools | None, buckets: tuple[int, ...] = BUCKETS,
        fusion: str | None = None, pdl_mode: int | None = None, logits: GraphLogits | None = None,
    ) -> None:  # fmt: skip
        """logits: the runner's buffer shared with its prefill graphs (None: one of the largest bucket's rows)."""
        self._c, self._kv, self._inv_freq, self._dtype = config, kv_cache, inv_freq, dtype
        self._w, self._pools, self._buckets = max_blocks, pools, buckets
        self._device = kv_cache.device
        self._logits = GraphLogits(self._device, buckets[-1]) if logits is None else logits
        if self._logits.rows < buckets[-1]:
            raise ValueError(f"DecodeGraphs: the logits buffer's {self._logits.rows} rows < bucket {buckets[-1]}")
        # (bucket, LoRA, PDL mode, fusion, input mode, grouped LoRA)
        self._graphs: dict[tuple[int, bool, int, str, int, bool], _Graph] = {}
        self._mempool = torch.cuda.graph_pool_handle()
        self._weights: LlamaWeights | None = None
        self._pools_version = -1
        self.captures = 0  # how many graphs were captured (tests, benchmarks)
        self._bucket_of = [bucket_for(n, buckets) for n in range(buckets[-1] + 1)]  # S -> its bucket (0: None)
        self._fusion = fusion_env() if fusion is None else check_fusion(fusion)
        self._norm = env_switch(NORM_ENV)  # the AUTO policy's norm fusion override (None: FUSION_POLICY's)
        self._dn2 = dn2_env()  # False: the AUTO policy without "+dn2" at bucket 1 (without_dn2)
        self._pdl = pdl.env_mode() if pdl_mode is None else pdl.check_mode(pdl_mode)
        self.pdl_max_bucket, self.pdl_lora = pdl_policy_env()
        self._input = graph_input_env()
        self._host_reads = (self._device.type == "cuda" and pinned_pointer_ok()
                            and new_graph_event() is not None)  # fmt: skip
        # mode 2's largest bucket (IN_GRAPH_COPY_MAX_BUCKET; a benchmark raises it to measure larger buckets: the mode
        # is part of the graph's key, so both modes' graphs of a bucket coexist)
        self.in_graph_max_bucket = IN_GRAPH_COPY_MAX_BUCKET

    @property
    def graph_input(self) -> int:
        """The step-input mode setting (GRAPH_INPUT; graphs are keyed by the mode they run: a switch keeps the
        others' for a switch back)."""
        return self._input

    @graph_input.setter
    def graph_input(self, value: int) -> None:
        self._input = check_graph_input(value)

    def input_for(self, bucket: int) -> int:
        """The step-input mode a graph of this bucket runs: 2 only up to in_graph_max_bucket, while the bucket's
        staging buffer is at most IN_GRAPH_COPY_MAX_BYTES, where kernels may read pinned memory, else 0 (mode 1 alone
        measured no gain: bench/results/decode-2026-12-01-s17-b1.md)."""
        m = self._input
        small = staging_words(bucket, self._w, m) * 4 <= IN_GRAPH_COPY_MAX_BYTES
        if m == 2 and not (bucket <= self.in_graph_max_bucket and small and self._host_reads):
            m = 0
        return m if bucket <= STAGE_BLOCK else 0

    @property
    def pdl(self) -> int:
        """The PDL mode steps replay with (kernels.pdl.MODES; 0 = off)."""
        return self._pdl

    @pdl.setter
    def pdl(self, value: int) -> None:
        self._pdl = pdl.check_mode(value)  # graphs are keyed by it: the other mode's stay for a switch back

    def pdl_for(self, bucket: int, with_lora: bool) -> int:
        """The PDL mode a graph of this bucket is captured with (0 outside the policy in the module docstring)."""
        return self._pdl if bucket <= self.pdl_max_bucket and (self.pdl_lora or not with_lora) else 0

    @property
    def fusion(self) -> str:
        """The decode fusion setting: AUTO (FUSION_POLICY per bucket) or one of llama_fast.DECODE_FUSIONS for every
        bucket. Graphs are keyed by the fusion they run: switching keeps the others' for a switch back."""
        return self._fusion

    @fusion.setter
    def fusion(self, value: str) -> None:
        self._fusion = check_fusion(value)

    def fusion_for(self, bucket: int) -> str:
        """The fusion a graph of this bucket runs: the setting, or under AUTO the policy's with the env's "+dn2" and
        norm overrides (DN2_ENV, NORM_ENV)."""
        if self._fusion != AUTO:
            return self._fusion
        f = policy_fusion(bucket)
        return with_norm(f if self._dn2 else without_dn2(f), self._norm)

    def can_run(self, step: StepInput) -> bool:
        s = step.num_seqs
        return (0 < s == step.num_tokens and s < len(self._bucket_of)
                and step.block_tables.shape[1] <= self._w)  # fmt: skip

    def run(self, weights: LlamaWeights, step: StepInput, host: bool = True,
            adapter_ids: list[int] | None = None) -> torch.Tensor:  # fmt: skip
        """Logits [S, vocab] float32 on the CPU of a step that can_run: a view of the shared pinned buffer, valid
        until the next host step of any graph (the engine samples from it at once; copy it to keep it). host=False:
        a view of the shared device buffer instead (no copy, no sync; valid until the next replay of any graph,
        decode or prefill: read it, or queue the reads on the current stream, before the next step).
        adapter_ids: step.adapter_ids.tolist() where the caller has it (the LoRA test reads this host list)."""
        version = self._pools.version if self._pools is not None else 0
        if weights is not self._weights or version != self._pools_version:
            stale = [k for k in self._graphs if weights is not self._weights or k[1]]  # LoRA graphs: pools moved
            for key in stale:
                if self._graphs[key].staging.in_graph:  # its last replay's first kernel may not have read the pinned
                    self._graphs[key].staging.wait()  # buffer yet: freed now, the next graph's staging could reuse it
                del self._graphs[key]
            if stale:  # a pool whose graphs all died may not be captured into again: start a fresh one
                self._mempool = torch.cuda.graph_pool_handle()
            self._weights, self._pools_version = weights, version
        s = step.num_seqs
        b = self._bucket_of[s] if s < len(self._bucket_of) else None
        if b is None or not is_pure_decode(step):
            raise ValueError(f"DecodeGraphs.run: not a decode step of at most {self._buckets[-1]} sequences")
        ids = step.adapter_ids.tolist() if adapter_ids is None else adapter_ids
        lora = max(ids) >= 0  # any row with an adapter (host data: no tensor op)
        with_lora = lora and self._pools is not None
        mode = self.input_for(b)
        grouped = with_lora and kernel_lora.pick_grouped(ids, b)  # (a base-only step never asks)
        key = (b, with_lora, self.pdl_for(b, with_lora), self.fusion_for(b), mode, grouped)
        g = self._graphs.get(key)
        fresh = g is None
        if g is None:
            g = self._new(b, mode, grouped)
        views = g.views
        feed = step.token_feed
        st = g.staging
        if mode:  # the graph's first kernel gathers the fed tokens (and in mode 2 reads the pinned buffer itself)
            tokens = None if feed is None else graph_tokens(feed, self._device)
            st.held, fv = tokens, st.feed

            def fill(buf: torch.Tensor) -> None:
                stage_step(buf, b, self._w, step, views, ids)
                stage_feed(fv, s, feed, tokens)

            st.send(fill)  # waits until the graph (or the copy) read this bucket's last staging
        else:
            st.send(lambda buf: stage_step(buf, b, self._w, step, views, ids))  # waits for this bucket's last copy
            if feed is not None:  # async scheduling: ids still on the device, after the staged copy
                feed.write(g.dev[:s])
        if fresh:
            g = self._capture(weights, g, b, with_lora, key[3])
            self._graphs[key] = g
        g.graph.replay()
        if not host:
            return g.logits_rows(s)
        if g.host_logits is None:
            g.host_logits = self._logits.host(g.logits)
        out = g.host_logits[:s]
        out.copy_(g.logits_rows(s), non_blocking=True)  # pinned: a DMA at full PCIe speed, then one sync
        sync_stream(self._device)
        return out

    def _new(self, b: int, mode: int = 0, grouped: bool = False) -> _Graph:
        n = staging_words(b, self._w, mode)
        host = torch.zeros(n, dtype=torch.int32, pin_memory=self._device.type == "cuda")
        dev = torch.zeros(n, dtype=torch.int32, device=self._device)
        views = stage_views(host, b, self._w)
        staging = Staging(host, dev, mode)
        staging.feed = feed_view(host, b, self._w)
        if mode == 2:
            staging.sent = new_graph_event()
        return _Graph(torch.cuda.CUDAGraph(), staging, torch.empty(0), (), views=views, grouped=grouped)

    def _body(self, weights: LlamaWeights, g: _Graph, b: int, with_lora: bool, fusion: str, mode: int = 0
              ) -> tuple[Callable[[], torch.Tensor], tuple[object, ...]]:  # fmt: skip
        """The step's forward over the static buffers, writing its logits into rows [:b] of the shared buffer (made
        here, outside the capture, by the first graph), and what it reads or writes that only it holds (keep it
        alive: a graph replays raw device addresses). LoRA through the grouped kernels where g.grouped."""
        out = self._logits.out(b, weights.lm_head.shape[0])
        f = g.dev[: _FIELDS * b].view(_FIELDS, b)
        tables = g.dev[_FIELDS * b : b * (_FIELDS + self._w)].view(b, self._w)
        arange = torch.arange(b, dtype=torch.int32, device=self._device)
        choose = choose_num_parts if attention_fusion(fusion) == "none" else choose_fused_parts
        parts = choose(b, self._c.num_kv_heads, self._device)
        lora = None
        if with_lora and self._pools is not None:
            batch = LoraBatch(arange, f[4], arange, f[5], 1, b, self._pools.r_max)
            lora = KernelLoraContext(batch, self._pools, g.grouped)

        st = g.staging
        feed_off = b * (_FIELDS + self._w)

        def body() -> torch.Tensor:
            if mode:  # the staged buffer (mode 2: read from pinned memory) and the fed tokens, before anything reads
                stage_in(st.host if mode == 2 else st.dev, st.dev, b, feed_off, mode == 2)
                if mode == 2:
                    st.sent.record()  # inside the capture: a record node (the host may refill the buffer after it)
            if attention_fusion(fusion) in ROPE_FUSIONS:  # cos/sin inside the attention kernel
                layout = DecodeLayout(tables, f[3], parts, fusion, f[1], self._inv_freq)
                hidden = forward_fast(weights, self._c, f[0], None, None, f[2], self._kv, layout, lora)
            else:
                cos, sin = cos_sin(self._inv_freq, f[1], self._dtype)
                layout = DecodeLayout(tables, f[3], parts, fusion)
                hidden = forward_fast(weights, self._c, f[0], cos[:, 0], sin[:, 0], f[2], self._kv, layout, lora)
            return write_logits(out, hidden, weights.lm_head)

        return body, (arange, lora, out)

    def _capture(self, weights: LlamaWeights, g: _Graph, b: int, with_lora: bool, fusion: str) -> _Graph:
        body, owned = self._body(weights, g, b, with_lora, fusion, g.staging.mode)  # (the mode _new made it for)
        mode = self.pdl_for(b, with_lora)
        side = side_stream(self._device)  # one per device: a new stream would keep a cuBLAS workspace each
        side.wait_stream(torch.cuda.current_stream(self._device))
        with torch.cuda.stream(side), pdl.scope(mode):  # warm-up: compiles, tunes quant_matmul, sizes workspaces
            body()
        torch.cuda.current_stream(self._device).wait_stream(side)
        if with_lora:  # the LoRA shrink's forked branch (kernels.lora_early) gets its stream here, never inside a capture
            side_stream(self._device, FORK_PRIORITY)
        keep = owned + _workspaces()  # quant_matmul may replace its workspaces: keep the captured ones alive
        with torch.cuda.graph(g.graph, pool=self._mempool), pdl.scope(mode):
            logits = body()
        self.captures += 1
        return _Graph(g.graph, g.staging, logits, keep, views=g.views, grouped=g.grouped)
