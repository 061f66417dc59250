"""The triton backend's Llama forward: the same math as model.llama.forward, with fused kernels.

Per layer: RMSNorm fused with the residual add (kernels.fused_norm), one QKV matmul, rotary fused with the
paged KV write (kernels.rope_cache), paged decode attention (kernels.paged_decode) for single-token rows and
SDPA per prefill chunk, one gate/up matmul and a fused SwiGLU (kernels.silu_mul); multi-LoRA of projections
sharing an input (q/k/v, gate/up) in one shrink and one expand (kernels.lora_fused). Static shapes throughout
(no host reads of device values) so a decode step can be captured in a CUDA graph (model.decode_graphs). A
captured step reads every weight tensor at its address of capture time, so `w` must not be rebuilt under a
graph: re-quantized layers are copied into these tensors in place (onboard.layer_swap).

Decode fusions (DecodeLayout.fusion, pure decode steps only; the runner's `decode_fusion`):
    "none":  rope_cache, then paged_decode (and its merge kernel when the context is split); where paged_decode's
             default is impl "row" with option rope=1 (paged_decode.row_rope_for), one launch instead:
             decode_row.row_rope_decode (rotary and the KV write inside "row", cos/sin as given);
    "merge": rope_cache, then decode_fused.decode_attention (the split merge inside the attention kernel);
    "rope":  decode_fused.rope_decode_attention: rotary (cos/sin computed in the kernel), the KV write,
             attention and the merge in one launch per layer (no cos/sin tensors at all);
    "rope-vec": "rope" with CUDA-core scores for one query head per KV head (decode_fused's vec_mha).
    "tiles" / "split": "none" with paged_decode's kernel named (impl "tiles" or "split"; "none" runs its default,
             paged_decode.default_impl) and paged_decode's own partition count: for same-run comparisons.
"+swiglu" (alone: "swiglu" = "none+swiglu"): the gate/up GEMV writes silu(gate) * up itself where its kernel
    can (kernels.quant_swiglu: packed 4-bit weights, the half2 row GEMV, no LoRA), removing the silu_mul launch.
"+cfin" (alone: "cfin" = "none+cfin"; "swiglu+cfin"): the residual add + RMSNorm after the o and down GEMVs reads the
    GEMV's split-K sums from its workspace and clears them (kernels.consumer_finish: the GEMV only adds its partial
    sums, no arrival counter, no last program). Per GEMV, only where the pick is a split-K half2 row GEMV or (session
    15, consumer_finish.TCS_DEFER) a split-K tcs tensor-core GEMV, on 4-bit weights with fp16 x, and never with LoRA:
    otherwise the GEMV and add_rms_norm as in "none". "merge+cfin": the "merge" attention with "+cfin".
"+q" ("cfin+q", "swiglu+cfin+q"): the same for the qkv GEMV into the row attention with fused rotary + KV write
    (kernels.consumer_finish.gemv_sums: its sums in a region of their own, read as fp16(sum) by
    decode_row.row_rope_decode, zeroed by the add + RMSNorm after the o GEMV). Only where that attention runs (the
    attention part "none" with paged_decode's row rope default), the qkv pick can defer, and without LoRA or "norm".
"+g" ("swiglu+cfin+g", "swiglu+cfin+q+g"; session 15, bucket 1's policy): the gate/up GEMV leaves its
    split-K sums in a region of their own and the down GEMV computes its x = silu(gate) * up from them on load; the
    add + RMSNorm after down zeroes the region (kernels.consumer_finish.gemv_gu_sums / gu_down_add_norm). Only where
    the gate/up pick can defer and down's is a half2 row GEMV (consumer_finish.gu_pair), without LoRA or "norm";
    otherwise the name without "+g".
"+dn2" ("swiglu+cfin+q+g+dn2"; session 20's design with session 21's shuffled formation, bucket 1's policy since
    session 21): no add + RMSNorm launch between layers (kernels.deferred_norm): the qkv, o, gate/up and down GEMVs
    defer their split-K sums into per-layer regions; the consumer GEMVs (gate/up, the next layer's qkv) load the
    producer's sums, h and the norm weight after their PDL wait and multiply their weights by u = fp16(h' w), h' =
    fp16(h + fp16(sums)), unscaled; one extra program column of theirs stores h' and the rows' sum(h'^2); r is applied
    by the down GEMV (gate/up's consumer, on load) and by the row attention (qkv's, "+q"). Layer 0's input norm and
    the final norm stay launches (63 of a 32-layer step's 65 add + RMSNorm launches removed: 2 x 32 - 1 consumers).
    Only where every layer's picks allow it (deferred_norm.layer_picks: one-part 4-bit weights, split-K row GEMVs),
    with the row attention's fused rotary, fp16, no LoRA and no "norm", and on CUDA (DN2_FORM "auto") only where every
    consumer runs the shuffled formation (deferred_norm.dn2_pays, _dn_picks: the per-thread one is slower than the
    fallback); otherwise the step runs as the name without "+q" and "+dn2" (bucket 1: "swiglu+cfin+g", the same
    launches; decode_graphs' FUSION_POLICY comment lists every condition). The consumers read each layer's
    pair-ordered norm weights (weights.current_pairs: made where the runner takes its weights, never when stale) where
    quant_hgemvr.shfl_layout_ok holds.
"norm" (alone: "none+norm"; "norm+swiglu" both): the residual add + RMSNorm between the o GEMV and gate/up and
    between down and the next layer's qkv run inside those GEMVs (kernels.gemv_norm: the producer adds into the
    residual stream and a per-norm sum-of-squares slot, the consumer normalises its x on load), removing 63 of the
    65 add_rms_norm launches of a 32-layer step (layer 0's input norm and the final norm stay). Per norm, only where
    both GEMVs are the half2 row GEMV on 4-bit weights with fp16 x (gemv_norm.pair_ok), and never with LoRA (its
    shrink needs the normed x): otherwise that norm runs unfused.

Operand-ordered x for quant_tcsx (TCSX_XP, env INLAID_TCSX_XP; session 17, issue 4): a "tcsx" / "tcsx2" GEMM first
writes its x in the wgmma operand's K order (quant_tcl.permute_x, one launch). In a decode step whose fusion has no
GEMV part (FUSION_POLICY's "none" at buckets over 16, where the tuner picks tcsx at M = 32-256), without LoRA,
where the consumer GEMM's pick for the step's M (the tuner's, known before the producer runs) is a tcsx kind on a
one-part weight without act-order, the producer of its x writes the operand order itself: the input / post-attention
add + RMSNorm (fused_norm.add_rms_norm(operand=True)) for qkv and gate/up, silu_mul(operand=True) for down; the GEMM
then gets it as xp (quant_matmul.launch_xp_kind -> launch_tcsx_kind) and runs no pre-pass. Same bits as the pre-pass's
(only columns move), so the step's output is unchanged. Session 18: the same for a consumer whose pick is a quant_tcl
kind ("tcl" / "tclp" / "tcls": its pre-pass writes the same order for 4-bit weights without act-order) at the M buckets
of TCL_XP_BUCKETS (quant_matmul.launch_xp_kind -> launch_tcl_kind with xp). The picks are looked up once per weight
shape and forward (_XpPicks), not once per layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from inlaid_worker.env_switch import env_switch
from inlaid_worker.kernels.consumer_finish import gemv_add_norm, gemv_gu_sums, gemv_sums, gu_down_add_norm, gu_pair
from inlaid_worker.kernels.decode_fused import decode_attention, rope_decode_attention
from inlaid_worker.kernels.decode_row import row_rope_decode
from inlaid_worker.kernels.deferred_norm import (
    DnPicks,
    DnRegions,
    dn2_pays,
    down_xnorm,
    gemv_deferred,
    gemv_dnorm2,
    layer_picks,
)
from inlaid_worker.kernels.fused_norm import add_rms_norm, add_rms_norm_sums
from inlaid_worker.kernels.gemv_norm import gemv_normed, gemv_residual, pair_ok, swiglu_possible
from inlaid_worker.kernels.gptq_packing import GPTQWeight
from inlaid_worker.kernels.paged_decode import paged_decode, row_rope_for
from inlaid_worker.kernels.paged_prefill import paged_prefill
from inlaid_worker.kernels.quant_matmul import TCL_KINDS, launch_xp_kind, tuned_config
from inlaid_worker.kernels.quant_matmul_config import TCSX_KINDS, QMMConfig, m_bucket
from inlaid_worker.kernels.quant_swiglu import gemv_swiglu
from inlaid_worker.kernels.rope_cache import rope_and_cache
from inlaid_worker.kernels.silu_mul import silu_mul
from inlaid_worker.model.attention import PrefillChunk, context_slots
from inlaid_worker.model.config import ModelConfig
from inlaid_worker.model.kernel_lora import KernelLoraContext
from inlaid_worker.model.linear import linear
from inlaid_worker.model.llama import LoraDelta
from inlaid_worker.model.quant_weights import QuantMatrix
from inlaid_worker.model.weights import LayerWeights, LlamaWeights, current_pairs

ATTENTION_FUSIONS = ("none", "merge", "rope", "rope-vec", "tiles", "split")
DECODE_FUSIONS = (*ATTENTION_FUSIONS, "swiglu", "merge+swiglu", "rope+swiglu", "norm", "norm+swiglu", "cfin",
                  "swiglu+cfin", "cfin+q", "swiglu+cfin+q", "merge+cfin", "swiglu+cfin+g", "swiglu+cfin+q+g",
                  "swiglu+cfin+q+g+dn2")  # fmt: skip
ROPE_FUSIONS = ("rope", "rope-vec")
GEMV_FUSIONS = ("norm", "swiglu", "cfin", "q", "g", "dn2")  # the parts of a fusion name that are not its attention


def attention_fusion(fusion: str) -> str:
    """The attention part of a decode fusion name ("merge+swiglu" -> "merge", "swiglu" / "norm" -> "none")."""
    head = fusion.split("+")[0]
    return "none" if head in GEMV_FUSIONS else head


def swiglu_fused(fusion: str) -> bool:
    """Does the decode fusion fold SwiGLU into the gate/up GEMV?"""
    return "swiglu" in fusion.split("+")


def norm_fused(fusion: str) -> bool:
    """Does the decode fusion fold the residual add + RMSNorm into the GEMVs around it?"""
    return "norm" in fusion.split("+")


def cfin_fused(fusion: str) -> bool:
    """Does the decode fusion let the add + RMSNorm after the o and down GEMVs finish their split-K sums?"""
    return "cfin" in fusion.split("+")


def gsums_fused(fusion: str) -> bool:
    """Does the decode fusion let the down GEMV read the gate/up GEMV's split-K sums as its x?"""
    return "g" in fusion.split("+")


def dnorm2_fused(fusion: str) -> bool:
    """Does the decode fusion defer the add + RMSNorm into the consumer GEMVs ("+dn2", kernels.deferred_norm)?"""
    return "dn2" in fusion.split("+")


def qsums_fused(fusion: str) -> bool:
    """Does the decode fusion let the row attention read the qkv GEMV's split-K sums?"""
    return "q" in fusion.split("+")


# TCSX_XP (module docstring): the producers of a tcsx GEMM's x write its operand order (no pre-pass). Env
# INLAID_TCSX_XP=0 turns it off (read at every forward, so at a decode graph's capture); unset = TCSX_XP_DEFAULT.
# Measured (bench/results/decode-2026-12-01-s17-xp.md: H200, random-weight int4 Llama-2, decode graphs with the
# runner's defaults, off / on alternating on one runner, 8 rounds): device time on / off 7B batch 32 / 64 / 128
# 0.992x / 0.981x / 0.992x, 13B 0.978x / 0.987x / 0.994x, lower in every round (~1.5 us a removed pre-pass).
TCSX_XP_DEFAULT = True


def tcsx_xp_on() -> bool:
    """Is the TCSX_XP plumbing on (env INLAID_TCSX_XP, else TCSX_XP_DEFAULT)?"""
    env = env_switch("INLAID_TCSX_XP")
    return TCSX_XP_DEFAULT if env is None else env


# the fusion of DecodeLayout's default; the decode graphs choose per bucket (model.decode_graphs.FUSION_POLICY)
DEFAULT_DECODE_FUSION = "none"


@dataclass(frozen=True)
class DecodeLayout:
    """Every row is one sequence's single new token (the CUDA-graph case)."""

    block_tables: torch.Tensor  # [S, W] int
    context_lens: torch.Tensor  # [S] int
    num_parts: int  # flash-decoding partitions (static per graph bucket)
    fusion: str = DEFAULT_DECODE_FUSION  # one of DECODE_FUSIONS (module docstring)
    positions: torch.Tensor | None = None  # [S]: "rope" rotates inside the attention kernel from these
    inv_freq: torch.Tensor | None = None  # [head_dim // 2] float32 (model.rope.inv_frequencies)

    def __post_init__(self) -> None:
        if self.fusion not in DECODE_FUSIONS:
            raise ValueError(f"decode fusion must be one of {DECODE_FUSIONS}, got {self.fusion!r}")
        if self.attention in ROPE_FUSIONS and (self.positions is None or self.inv_freq is None):
            raise ValueError("the rope decode fusion needs positions and inv_freq")

    @property
    def attention(self) -> str:
        return attention_fusion(self.fusion)

    @property
    def swiglu(self) -> bool:
        return swiglu_fused(self.fusion)

    @property
    def norm(self) -> bool:
        return norm_fused(self.fusion)

    @property
    def cfin(self) -> bool:
        return cfin_fused(self.fusion)

    @property
    def qsums(self) -> bool:
        return qsums_fused(self.fusion)

    @property
    def gsums(self) -> bool:
        return gsums_fused(self.fusion)

    @property
    def dnorm2(self) -> bool:
        return dnorm2_fused(self.fusion)


@dataclass(frozen=True)
class MixedLayout:
    """Any step: decode rows through the paged kernel, prefill chunks through SDPA (eager only)."""

    prefills: tuple[PrefillChunk, ...]  # their rows, context slots and masks
    decode_rows: torch.Tensor  # [D] int64
    decode_tables: torch.Tensor  # [D, W]
    decode_lens: torch.Tensor  # [D]


@dataclass(frozen=True)
class TiledLayout:
    """Any step, every row through kernels.paged_prefill's static tile table (prefill CUDA graphs)."""

    block_tables: torch.Tensor  # [S, W] int
    tiles: torch.Tensor  # [4, NT] int32 (kernels.paged_prefill)


Layout = DecodeLayout | MixedLayout | TiledLayout

# SDPA backends of the eager prefill chunks: cuDNN's attention is left out. It builds a graph for every new (query,
# context) length pair, and nearly every chunk of a served step is a new pair: 38-49 ms of host time per chunk on the
# H200 (torch 2.11), once per step (layer 0; the other layers reuse it), which made served eager steps take 73-1,261 ms
# (bench/results/h200-served-2026-11-30-v2.md). Flash (whole prompts, is_causal) and the memory-efficient kernel
# (masked chunks) have no per-shape set-up.
EAGER_SDPA_BACKENDS = (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH)


def _attend(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, layout: Layout,
            scale: float) -> torch.Tensor:  # fmt: skip
    """q [T, heads, D] -> [T, heads, D]."""
    if isinstance(layout, TiledLayout):
        return paged_prefill(q, k_cache, v_cache, layout.block_tables, layout.tiles, scale)
    if isinstance(layout, DecodeLayout):
        if layout.attention in ("tiles", "split"):  # paged_decode's kernel named, its own partition count
            return paged_decode(q, k_cache, v_cache, layout.block_tables, layout.context_lens, scale,
                                impl=layout.attention)  # fmt: skip
        attend = decode_attention if layout.attention == "merge" else paged_decode
        return attend(q, k_cache, v_cache, layout.block_tables, layout.context_lens, scale, layout.num_parts)
    out = torch.empty_like(q)
    if layout.decode_rows.numel():
        qd = q[layout.decode_rows]
        out[layout.decode_rows] = paged_decode(qd, k_cache, v_cache, layout.decode_tables, layout.decode_lens, scale)
    rep = q.shape[1] // k_cache.shape[2]
    k_flat = k_cache.view(-1, *k_cache.shape[2:])
    v_flat = v_cache.view(-1, *v_cache.shape[2:])
    if not layout.prefills:
        return out
    with sdpa_kernel(list(EAGER_SDPA_BACKENDS)):
        for chunk in layout.prefills:
            qc = q[chunk.rows].transpose(0, 1)[None]  # [1, heads, qlen, D]
            kc = k_flat[chunk.kv_slots].repeat_interleave(rep, dim=1).transpose(0, 1)[None]
            vc = v_flat[chunk.kv_slots].repeat_interleave(rep, dim=1).transpose(0, 1)[None]
            if qc.shape[2] == kc.shape[2]:  # a whole prompt: plain causal attention (flash kernels)
                oc = F.scaled_dot_product_attention(qc, kc, vc, is_causal=True, scale=scale)
            else:
                oc = F.scaled_dot_product_attention(qc, kc, vc, attn_mask=chunk.mask, scale=scale)
            out[chunk.rows] = oc[0].transpose(0, 1)
    return out


def forward_fast(
    w: LlamaWeights,
    c: ModelConfig,
    token_ids: torch.Tensor,  # [T]
    cos: torch.Tensor | None,  # [T, head_dim]; None with the "rope" decode fusion (computed in the kernel)
    sin: torch.Tensor | None,  # [T, head_dim]
    slot_mapping: torch.Tensor,  # [T] (-1 = do not write)
    kv_cache: torch.Tensor,  # [layers, 2, num_blocks, block_size, kv_heads, head_dim]
    layout: Layout,
    lora: LoraDelta | None,
) -> torch.Tensor:
    """Returns the final-normed hidden states [T, hidden]."""
    h = F.embedding(token_ids, w.embed)  # the residual stream, updated in place by add_rms_norm
    t, eps, scale = h.shape[0], c.rms_norm_eps, c.head_dim**-0.5
    q_end, k_end = c.q_size, c.q_size + c.kv_size
    # TCSX_XP: decode layouts without a GEMV fusion, no LoRA (xpo: the forward's pick lookup, else None; xpick: the
    # tcsx / tcl pick x is operand-ordered for, or None)
    xp_on = (isinstance(layout, DecodeLayout) and lora is None and t > 0 and h.dtype in (torch.float16, torch.bfloat16)
             and not set(layout.fusion.split("+")) & set(GEMV_FUSIONS) and tcsx_xp_on())  # fmt: skip
    xpo = _XpPicks() if xp_on else None
    xpick = xpo(h, w.layers[0].qkv) if xpo is not None and w.layers else None
    x = add_rms_norm(h, w.layers[0].input_norm, eps, operand=xpick is not None) if w.layers else h
    # SwiGLU in the gate/up GEMV: decode layouts that ask for it, without LoRA (its delta lands between the two)
    swiglu = isinstance(layout, DecodeLayout) and layout.swiglu and lora is None and h.dtype == torch.float16
    # rotary + KV write inside impl "row" (one launch) where that is the default with option rope=1
    row_rope = row_rope_for(t, c.num_heads // c.num_kv_heads, h.device) if (
        isinstance(layout, DecodeLayout) and layout.attention == "none") else None  # fmt: skip
    # residual add + RMSNorm inside the GEMVs around it (kernels.gemv_norm); never with LoRA (its shrink needs x)
    norm = isinstance(layout, DecodeLayout) and layout.norm and lora is None and h.dtype == torch.float16 and t > 0
    fuse = _NormFusion(norm, 2 * len(w.layers), t, h.device)
    # the add + RMSNorm after o / down reads their split-K sums (kernels.consumer_finish); never with LoRA
    cfin = isinstance(layout, DecodeLayout) and layout.cfin and lora is None
    # the row attention reads the qkv GEMV's sums, the norm after o clears them (consumer_finish.gemv_sums); only where
    # that attention will run (cos and sin given); an error between the GEMV and that norm zeroes the sums (below)
    qsums = (isinstance(layout, DecodeLayout) and layout.qsums and lora is None and not norm and row_rope is not None
             and cos is not None and sin is not None)  # fmt: skip
    # the down GEMV reads the gate/up GEMV's sums, the norm after down clears them (consumer_finish.gemv_gu_sums)
    gsums = isinstance(layout, DecodeLayout) and layout.gsums and lora is None and not norm and h.dtype == torch.float16
    if isinstance(layout, DecodeLayout) and layout.dnorm2:  # "+dn2" where every layer's picks allow it (qsums and
        # gsums hold: no LoRA, no "norm", the row attention with cos / sin, fp16); else without "+q" ("swiglu+cfin+g")
        picks = _dn_picks(w, c, h) if qsums and gsums and t > 0 and w.layers else None
        if picks is not None:
            return _forward_dn2(w, c, h, x, picks, cos, sin, slot_mapping, kv_cache, layout, row_rope, eps, scale)  # type: ignore[arg-type]
        qsums = False
    pending: _Pending | None = None  # the norm the next consumer GEMV applies to h on load (x is stale then)
    for i, layer in enumerate(w.layers):
        wq = _single(layer.qkv) if qsums and pending is None else None
        q_sums = gemv_sums(x, wq) if wq is not None else None  # fp32 [T, N]; None: today's GEMV
        try:  # the qkv sums (if set) are only cleared by the norm after o: zero them if anything fails before
            if q_sums is not None:
                qkv = q_sums
            else:
                qkv = (pending.gemv(h, eps) if pending is not None else
                       _xp_gemm(x, xpick) if xpick is not None else
                       _lora_linear(x, layer.qkv, lora, i, (("q_proj", 0), ("k_proj", q_end), ("v_proj", k_end))))  # fmt: skip
            if isinstance(layout, DecodeLayout) and layout.attention in ROPE_FUSIONS:
                attn = rope_decode_attention(qkv, layout.positions, layout.inv_freq, slot_mapping, kv_cache[i, 0],
                                             kv_cache[i, 1], layout.block_tables, layout.context_lens, scale,
                                             c.num_heads, layout.num_parts, vec_mha=layout.attention == "rope-vec",
                                             ).reshape(t, -1)  # type: ignore[arg-type]  # fmt: skip
            else:
                if cos is None or sin is None:
                    raise ValueError("forward_fast: cos and sin are needed unless the layout fuses rotary")
                if row_rope is not None and isinstance(layout, DecodeLayout):
                    attn = row_rope_decode(qkv, cos, sin, slot_mapping, kv_cache[i, 0], kv_cache[i, 1],
                                           layout.block_tables, layout.context_lens, scale, c.num_heads,
                                           base=row_rope, sums=q_sums is not None).reshape(t, -1)  # fmt: skip
                else:
                    q = rope_and_cache(qkv, cos, sin, slot_mapping, kv_cache[i, 0], kv_cache[i, 1], c.num_heads)
                    attn = _attend(q, kv_cache[i, 0], kv_cache[i, 1], layout, scale).reshape(t, -1)
            pending = fuse.residual(2 * i, attn, layer.o, h, layer.gate_up, layer.post_norm)
            if pending is None:
                xpick = xpo(h, layer.gate_up) if xpo is not None else None
                x = _add_norm(attn, layer.o, h, layer.post_norm, eps, lora, i, "o_proj", cfin, q_sums,
                              operand=xpick is not None)  # fmt: skip
            elif q_sums is not None:  # (qsums excludes the norm fusion: unreachable, guarded)
                raise RuntimeError("forward_fast: the qkv sums need the norm after o to clear them")
        except BaseException:
            if q_sums is not None:
                q_sums.zero_()
            raise
        nxt = w.layers[i + 1] if i + 1 < len(w.layers) else None
        x, pending, xpick = _mlp(layer, i, x, h, pending, nxt, w.norm, fuse, swiglu, lora, eps, c.intermediate_size,
                                 cfin, gsums, xpick if xpo is not None and pending is None else None, xpo)  # fmt: skip
    return x if w.layers else add_rms_norm(h, w.norm, eps)


# one layer's "+dn2" plan (_dn_picks): its picks, its qkv / o / gate/up / down weights, its pair-ordered norms
_DnLayer = tuple[DnPicks, tuple[GPTQWeight, GPTQWeight, GPTQWeight, GPTQWeight],
                 tuple[torch.Tensor | None, torch.Tensor | None]]


def _dn_picks(w: LlamaWeights, c: ModelConfig, h: torch.Tensor, cuda: bool | None = None) -> list[_DnLayer] | None:
    """deferred_norm.layer_picks of every layer (with the weights and pairs it was decided on: _forward_dn2 launches
    with them), or None where one cannot defer its norms or where "+dn2" would not pay (deferred_norm.dn2_pays: on CUDA with DN2_FORM "auto", a consumer GEMV in the per-thread formation, e.g. a
    layer without current pair-ordered norms, weights.current_pairs). cuda: the device-type decision (None: h's)."""
    cuda = h.is_cuda if cuda is None else cuda
    picks = []
    for i, layer in enumerate(w.layers):
        ws = tuple(_single(m) for m in (layer.qkv, layer.o, layer.gate_up, layer.down))
        if any(m is None for m in ws):
            return None
        p = layer_picks(h, c.num_heads * c.head_dim, *ws, layer.input_norm, layer.post_norm)  # type: ignore[arg-type]
        if p is None:
            return None
        pin, ppost = current_pairs(layer) or (None, None)
        # layer 0's qkv reads the input norm kernel's x (no consumer); its gate/up and every later qkv are consumers
        if not dn2_pays(p, ws[0] if i else None, ws[2], pin, ppost, cuda):  # type: ignore[arg-type]
            return None
        picks.append((p, ws, (pin, ppost)))
    return picks


def _forward_dn2(w: LlamaWeights, c: ModelConfig, h: torch.Tensor, x: torch.Tensor, picks: list[_DnLayer],
                 cos: torch.Tensor, sin: torch.Tensor, slot_mapping: torch.Tensor, kv_cache: torch.Tensor,
                 layout: DecodeLayout, row_rope: dict[str, int], eps: float, scale: float) -> torch.Tensor:  # fmt: skip
    """forward_fast's layers with "+dn2" (kernels.deferred_norm; the caller checked every layer's picks): x is layer
    0's input-normed h; the residual stream alternates between h and a second buffer (the consumer GEMVs' extra
    programs write h' to the one their grid does not read); qkv (layers >= 1) defers its sums into the layer's region
    and the row attention applies r. Returns the final-normed states."""
    t = h.shape[0]
    nq = max(ws[0].out_features for _, ws, _ in picks)
    reg = DnRegions(len(w.layers), t, c.hidden_size, c.intermediate_size, nq, h.device)
    hb, cur = (h, torch.empty_like(h)), 0
    down: torch.Tensor | None = None  # the previous layer's down sums (the norm the next qkv defers)
    for i, (layer, (p, (wq, wo, wgu, wd), (pin, ppost))) in enumerate(zip(w.layers, picks, strict=True)):
        rope = (cos, sin, slot_mapping, kv_cache[i, 0], kv_cache[i, 1], layout.block_tables, layout.context_lens,
                scale, c.num_heads)  # fmt: skip
        if down is None:
            attn = row_rope_decode(linear(x, layer.qkv), *rope, base=row_rope)
        else:
            qs = gemv_dnorm2(down, hb[cur], hb[1 - cur], layer.input_norm, wq, p.qkv, reg.q_slot(i),  # type: ignore[arg-type]
                             reg.q_sums(i), pin)  # fmt: skip
            cur = 1 - cur
            attn = row_rope_decode(qs, *rope, base=row_rope, sums=True, rnorm=(reg.q_slot(i), c.hidden_size, eps))
        o = gemv_deferred(attn.reshape(t, -1), wo, p.o, reg.o_sums(i))  # type: ignore[arg-type]
        gu = gemv_dnorm2(o, hb[cur], hb[1 - cur], layer.post_norm, wgu, p.gate_up, reg.gu_slot(i),  # type: ignore[arg-type]
                         reg.gu_sums(i), ppost)  # fmt: skip
        cur = 1 - cur
        down = down_xnorm(gu, wd, p.down, reg.gu_slot(i), c.hidden_size, eps, reg.down_sums(i))  # type: ignore[arg-type]
    assert down is not None
    return add_rms_norm_sums(down.reshape(-1), w.norm, eps, hb[cur])


class _Pending(NamedTuple):
    """A norm whose producer GEMV has run: its consumer GEMV normalises h on load (gemv)."""

    norm_weight: torch.Tensor  # [hidden]
    slot: torch.Tensor  # [T] fp32: the rows' sums of squares of h, written by the producer GEMV
    consumer: GPTQWeight  # the consumer's packed weight (gemv_norm.pair_ok checked it)

    def gemv(self, h: torch.Tensor, eps: float, swiglu: bool = False) -> torch.Tensor:
        """RMSNorm(h) @ consumer [T, N] (swiglu: silu(gate) * up [T, N / 2])."""
        return gemv_normed(h, self.norm_weight, self.slot, eps, self.consumer, swiglu=swiglu)


class _NormFusion:
    """The "norm" fusion in one forward (on: the layout asks for it and it may run) and its sum-of-squares slots: one
    fp32 row per norm and token, allocated and zeroed when the first pair fuses (inside the graph: every replay
    starts from zero)."""

    def __init__(self, on: bool, norms: int, rows: int, device: torch.device) -> None:
        self.on, self.shape, self.device = on, (norms, rows), device
        self.slots: torch.Tensor | None = None

    def residual(self, j: int, x: torch.Tensor, prod: QuantMatrix | torch.Tensor, h: torch.Tensor,
                 cons: QuantMatrix | torch.Tensor, norm_weight: torch.Tensor) -> _Pending | None:  # fmt: skip
        """h += x @ prod with the sum of squares into slot j, where the pair (prod, cons) can take the norm fusion
        (gemv_norm.pair_ok): then the norm for cons to apply to h; None where it cannot or is off (nothing run)."""
        if not self.on:  # every layer of every step without the fusion: nothing more to look at
            return None
        wp, wc = _single(prod), _single(cons)
        if wp is None or wc is None or not pair_ok(x, wp, h, wc, norm_weight):
            return None
        if self.slots is None:
            self.slots = torch.zeros(self.shape, dtype=torch.float32, device=self.device)
        gemv_residual(x, wp, h, self.slots[j])
        return _Pending(norm_weight, self.slots[j], wc)


def _single(m: QuantMatrix | torch.Tensor) -> GPTQWeight | None:
    """The packed weight of a one-part QuantMatrix (what the GEMV fusions take), else None."""
    return m.parts[0] if isinstance(m, QuantMatrix) and len(m.parts) == 1 else None


XpPick = tuple[GPTQWeight, QMMConfig]


# M buckets (quant_matmul_config.m_bucket) at which a consumer whose pick is a quant_tcl kind takes the operand-ordered
# x too (session 18; tcsx picks take it at every bucket). Read at every forward (so at a decode graph's capture); the
# H200 table's tcl consumers are at these two buckets only. Measured (bench/results/decode-2026-12-01-s18-tcl-xp.md:
# H200, random-weight int4 Llama-2, decode graphs with the runner's defaults, empty / this set alternating on one
# runner, 8 rounds): device time 7B batch 128 / 256 0.9963x / 0.9980x, 13B 0.9969x / 0.9988x, lower in every round
# (~1.2-1.6 us a removed pre-pass). Other buckets (no 4-bit tcl pick in the H200 table) were not measured.
TCL_XP_BUCKETS: frozenset[int] = frozenset({128, 256})


def _xp_pick(stand_in: torch.Tensor, weight: QuantMatrix | torch.Tensor) -> XpPick | None:
    """TCSX_XP: (packed weight, the tuner's pick) where the GEMM of an x shaped like stand_in [T, K] (its values unused)
    by `weight` runs a tcsx kind, or a tcl kind at an M bucket of TCL_XP_BUCKETS, on a one-part 4-bit weight without
    act-order (its producer may then write the operand order); else None. The pick is what quant_matmul would take
    for that x (tuned_config: the same key)."""
    wp = _single(weight)
    if (wp is None or wp.perm is not None or wp.bits != 4 or stand_in.shape[1] != wp.in_features
            or stand_in.shape[1] % 128):  # fmt: skip
        return None
    cfg = tuned_config(stand_in, wp)
    ok = cfg.kind in TCSX_KINDS or (cfg.kind in TCL_KINDS and m_bucket(stand_in.shape[0]) in TCL_XP_BUCKETS)
    return (wp, cfg) if ok else None


class _XpPicks:
    """_xp_pick memoised for one forward: every layer of a model has the same few weight shapes, and within a forward
    the rows, dtype, device, TCL_XP_BUCKETS and the tuner's pick for a shape do not change, so one lookup per weight
    shape instead of three a layer (H200 host, measured: a lookup 3.7-5.2 us, mostly building the tuner's key; a memo
    hit 0.8 us; so, computed, a 7B / 13B forward's picks 372-502 / 446-450 us -> 90 / 108-111 us). Only forwards on a
    DecodeLayout look picks up, which in production are a decode graph's warm-up and capture forwards: ~0.3-0.4 ms
    saved per such forward, nothing per replayed step. Keyed by what the tuner's key reads of the weight and of x's
    K (quant_matmul_config._key; its device, dtype and M bucket are the forward's); made anew per forward, so a later
    table or weight change is seen."""

    def __init__(self) -> None:
        self.memo: dict[tuple, QMMConfig | None] = {}

    def __call__(self, stand_in: torch.Tensor, weight: QuantMatrix | torch.Tensor) -> XpPick | None:
        wp = _single(weight)
        if wp is None:
            return None
        qw = wp.qweight
        key = (wp.out_features, wp.in_features, wp.bits, wp.group_size, wp.sym, wp.perm is None,
               qw.stride(0) == 1 and qw.shape[1] > 1, stand_in.shape[1])  # fmt: skip
        if key not in self.memo:
            pick = _xp_pick(stand_in, weight)
            self.memo[key] = pick[1] if pick is not None else None
        cfg = self.memo[key]
        return (wp, cfg) if cfg is not None else None


def _xp_gemm(xp: torch.Tensor, pick: XpPick) -> torch.Tensor:
    """x @ W for the operand-ordered xp (no pre-pass): quant_matmul's product with the pick `pick` was made for."""
    wp, cfg = pick
    y = torch.empty(xp.shape[0], wp.out_features, dtype=xp.dtype, device=xp.device)
    launch_xp_kind(wp, cfg, y, xp)  # a kind outside quant_matmul.XP_KINDS is refused there
    return y


def _add_norm(x: torch.Tensor, weight: QuantMatrix | torch.Tensor, h: torch.Tensor, norm_weight: torch.Tensor,
              eps: float, lora: LoraDelta | None, i: int, name: str, cfin: bool = False,
              clear: torch.Tensor | None = None, operand: bool = False,
              xpick: XpPick | None = None) -> torch.Tensor:  # fmt: skip
    """Unfused: h += x @ weight (+ LoRA `name` of layer i), then RMSNorm(h): the next GEMV's x. cfin (no LoRA): the
    norm reads the GEMV's split-K sums where the pick allows (consumer_finish.gemv_add_norm). clear: the qkv GEMV's
    sums (consumer_finish.gemv_sums), which the norm zeroes. TCSX_XP (no cfin, no LoRA): xpick, x is in that tcsx /
    tcl pick's operand order (_xp_gemm); operand, the norm writes its result in the operand order."""
    if xpick is not None or operand:
        if lora is not None or cfin:
            raise ValueError("forward_fast: the operand-ordered x takes neither LoRA nor cfin")
        y = _xp_gemm(x, xpick) if xpick is not None else linear(x, weight)
        return add_rms_norm(y, norm_weight, eps, residual=h, clear=clear, operand=operand)
    if cfin and lora is None and (wp := _single(weight)) is not None:
        out = gemv_add_norm(x, wp, h, norm_weight, eps, clear=clear)
        if out is not None:
            return out
    y = _lora_linear(x, weight, lora, i, ((name, 0),))
    return add_rms_norm(y, norm_weight, eps, residual=h, clear=clear)


def _lora_linear(x: torch.Tensor, weight: QuantMatrix | torch.Tensor, lora: LoraDelta | None, i: int,
                 modules: tuple[tuple[str, int], ...]) -> torch.Tensor:  # fmt: skip
    """linear(x, weight) plus layer i's LoRA of `modules` ((name, first output column), projections sharing x).
    KernelLoraContext: one shrink + one expand for all of them, the shrink issued before the GEMV where
    kernels.lora_early.EARLY places it (the decode graphs' small buckets), else after it (add_fused); another
    LoraDelta: add per module on its column slice."""
    if isinstance(lora, KernelLoraContext):
        early = lora.shrink_ahead(x, i, modules)
        y = linear(x, weight)
        if early is None:
            lora.add_fused(y, x, i, modules)
        else:
            KernelLoraContext.finish(y, early)
        return y
    y = linear(x, weight)
    if lora is not None:
        ends = [col for _, col in modules[1:]] + [y.shape[1]]
        for (name, col), end in zip(modules, ends, strict=True):
            lora.add(y[:, col:end], x, i, name)
    return y


def _mlp(layer: LayerWeights, i: int, x: torch.Tensor, h: torch.Tensor, pending: _Pending | None,
         nxt: LayerWeights | None, final_norm: torch.Tensor, fuse: _NormFusion, swiglu: bool,
         lora: LoraDelta | None, eps: float, inter: int, cfin: bool = False, gsums: bool = False,
         xpick: XpPick | None = None, xpo: _XpPicks | None = None,
         ) -> tuple[torch.Tensor, _Pending | None, XpPick | None]:  # fmt: skip
    """Layer i's gate/up -> SwiGLU -> down into h, then the next norm (nxt's input norm, or the final norm after the
    last layer): fused into the down GEMV and nxt's qkv where they can (-> x unchanged, its pending), else run here
    (-> the normed x, None). gate/up reads RMSNorm(h) through `pending` where set, else x. gsums (no LoRA, no norm
    fusion): the down GEMV reads the gate/up GEMV's sums where both picks allow (consumer_finish.gu_pair). TCSX_XP
    (xpo, the forward's pick lookup, where forward_fast's conditions hold): xpick, x is in that gate/up pick's operand
    order; silu_mul writes down's, and the norm after down nxt's qkv's, where their picks take it (_xp_pick: tcsx, or
    tcl at a bucket of TCL_XP_BUCKETS) (-> the third value: the pick the returned x is for)."""
    if (gsums and pending is None and lora is None and (gu := _single(layer.gate_up)) is not None
            and (wd := _single(layer.down)) is not None and (picks := gu_pair(x, gu, wd, h)) is not None):  # fmt: skip
        sums = gemv_gu_sums(x, gu, picks[0])
        if sums is not None:  # gu_down_add_norm zeroes them if it raises
            norm_weight = final_norm if nxt is None else nxt.input_norm
            return gu_down_add_norm(sums, wd, h, norm_weight, eps, cfg=picks[1], cfin=cfin), None, None
    if pending is not None:
        fused = swiglu and swiglu_possible(h, pending.consumer)
        act = pending.gemv(h, eps, swiglu=True) if fused else silu_mul(pending.gemv(h, eps))
    elif swiglu and (gu := _single(layer.gate_up)) is not None:
        act = gemv_swiglu(x, gu)  # one launch where the kernel allows (quant_swiglu)
    elif xpo is not None:  # TCSX_XP (no LoRA, no GEMV fusion)
        gate_up = _xp_gemm(x, xpick) if xpick is not None else linear(x, layer.gate_up)
        dpick = xpo(gate_up[:, :inter], layer.down)
        act = silu_mul(gate_up, operand=dpick is not None)
        qpick = xpo(h, nxt.qkv) if nxt is not None else None
        norm_weight = final_norm if nxt is None else nxt.input_norm
        return _add_norm(act, layer.down, h, norm_weight, eps, None, i, "down_proj", operand=qpick is not None,
                         xpick=dpick), None, qpick  # fmt: skip
    else:
        gate_up = _lora_linear(x, layer.gate_up, lora, i, (("gate_proj", 0), ("up_proj", inter)))
        act = silu_mul(gate_up)
    if nxt is None:  # the final norm stays a launch of its own
        return _add_norm(act, layer.down, h, final_norm, eps, lora, i, "down_proj", cfin), None, None
    nxt_pending = fuse.residual(2 * i + 1, act, layer.down, h, nxt.qkv, nxt.input_norm)
    if nxt_pending is None:
        return _add_norm(act, layer.down, h, nxt.input_norm, eps, lora, i, "down_proj", cfin), None, None
    return x, nxt_pending, None


def mixed_layout(query_start_loc: list[int], context_lens: list[int], block_tables: torch.Tensor,
                 block_size: int) -> MixedLayout:  # fmt: skip
    """The eager layout of a step; block_tables already on the device."""
    dev = block_tables.device
    decode, prefills = [], []
    for s in range(len(context_lens)):
        start, end = query_start_loc[s], query_start_loc[s + 1]
        if end - start == 1:
            decode.append(s)
        elif end > start:
            ctx, qlen = context_lens[s], end - start
            if qlen > ctx:
                raise ValueError(f"sequence {s}: {qlen} new tokens but context_len {ctx}")
            positions = torch.arange(ctx - qlen, ctx, device=dev)
            mask = torch.arange(ctx, device=dev)[None, :] <= positions[:, None]
            prefills.append(PrefillChunk(slice(start, end), context_slots(block_tables[s], ctx, block_size), mask))
    idx = torch.tensor(decode, dtype=torch.int64, device=dev)
    rows = torch.tensor([query_start_loc[s] for s in decode], dtype=torch.int64, device=dev)
    lens = torch.tensor([context_lens[s] for s in decode], dtype=torch.int32, device=dev)
    return MixedLayout(tuple(prefills), rows, block_tables[idx].contiguous(), lens)
