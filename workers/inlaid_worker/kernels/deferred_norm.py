"""The deferred residual add + RMSNorm, "+dn2" (the decode fusion "swiglu+cfin+q+g+dn2", model.llama_fast; bucket 1's
policy since session 21): no norm launch between layers.

The fallback (session 20's bucket-1 path, "swiglu+cfin+g") runs two one-CTA add + RMSNorm kernels a layer (after o and
after down) that finish the producer GEMV's deferred split-K sums: h += fp16(sums); x = RMSNorm(h) * w. RMSNorm is a
per-row scalar, x = (h o w) * r with r = rsqrt(mean(h^2) + eps), and a GEMV is linear: W x = r * W (h o w). So the
consumer GEMV (gate/up after o, the next layer's qkv after down) multiplies its weights by u = fp16(h' w), h' = fp16(h +
fp16(sums)) (today's roundings: fused_norm's residual add), and leaves r to the kernel after it:

- each consumer program, after its PDL wait, loads the producer's fp32 sums, h and the norm weight of its own x pairs
  and forms u (quant_hgemvr DNORM2; "shfl", shipped where its lane layout was verified: each u word formed once per
  16-lane segment and shuffled; "thread" elsewhere and under the interpreter: every thread forms its own; the same
  bits);
- one extra N column of the consumer's grid (one program per K slice) stores h' to the other residual buffer
  (ping-pong: the grid's other programs still read h) and adds the slice's sum(h'^2) into the layer's slot;
- every consumer defers its own sums: gate/up's r is applied by the down GEMV, which computes silu(fp16(r gate)) *
  fp16(r up) on load (quant_hgemvr's x_norm); qkv's by the row attention, which reads the qkv sums as fp16(r * sum)
  (decode_row.row_rope_decode's rnorm; the "+q" path).

Regions: every deferred producer (qkv, o, gate/up, down) leaves its sums in a region of its own per layer, and the slots
are per layer too: all of them sit in one fp32 buffer that the forward zeroes once at its front (inside a decode graph:
one memset node), so nothing is cleared while a reader may still run. Layer 0's input norm and the final norm stay
kernels (the final one reads the last down GEMV's sums: fused_norm.add_rms_norm_sums).

Preconditions (layer_picks and dn2_pays, checked for every layer at each forward, so at a graph's capture): no LoRA (its
shrink needs x), fp16, 4-bit one-part weights, the row attention with rotary inside, no "norm" fusion, and every layer's
o, gate/up, down and qkv picks split-K half2 row GEMVs that can defer (consumer_finish.defer_ok / gu_pair; down's a
half2 row GEMV) without act-order on qkv / gate/up; on CUDA with DN2_FORM "auto" also every consumer GEMV (each layer's
gate/up, the qkv of layers >= 1) in the "shfl" formation, its layer with current pair-ordered norms
(model.weights.current_pairs) and no compiled "shfl" kernel found broken (quant_hgemvr.SHFL_BROKEN): "thread" measured
+90 us a 7B step slower than the fallback (bench/results/decode-2026-12-01-s21-dn2-port.md), so it runs only when forced
(DN2_FORM "thread", benchmarks) and under the interpreter. Otherwise the step runs as the name without "+q" and "+dn2"
(bucket 1: "swiglu+cfin+g", session 20's path, with the same launches).

Numerics: u is unscaled. u = h' w is the RMSNorm's x times rms(h'), so it overflows fp16 where |h'_k w_k| > 65504 for
some k (then the step's output is inf / NaN: test_deferred_norm2's "huge" case shows it), where today's x cannot
(|x| <= sqrt(K) |w|). Llama-2's massive activations (|h| ~ 1e3-2.5e3 in a few channels) stay below that unless their
norm weights exceed ~26 (they are small there). Below rms(h') ~ 1 (the first layers) u is smaller than today's x and
its half2 products reach fp16's subnormals sooner: a residual of rms 4e-4 gives 1.3e-2 relative error against today's
path (the "tiny" case, bound 3e-2), so a step whose rms at a norm point is below ~1e-2 loses accuracy (Llama-2's
first layers are above that; layer 0's input norm stays a kernel). bench/results/decode-2026-12-01-s20-dnorm2.md
(design, numerics), -s21-dn2shfl.md (the shuffled formation), -s21-dn2-port.md (this port, measured).
"""

from __future__ import annotations

import torch

from .consumer_finish import ROW_KINDS, config_for, defer_ok, gu_pair, stand_in_x
from .gptq_packing import GPTQWeight
from .quant_hgemv import use_asm
from .quant_hgemvr import launch_hgemvr, shfl_layout_ok
from .quant_matmul import hgemvr_flags
from .quant_matmul_config import QMMConfig

# ptxas's register cap for the consumer GEMVs at block_m 1 (80: the 7B / 13B batch-1 grids stay one wave; None:
# uncapped). Read at each launch, so at a graph's capture.
DN2_MAXNREG: int | None = 80
# the formation of u (quant_hgemvr DNORM2): "auto" = "shfl" where use_asm(), the layer has its pair-ordered norm
# weights (model.weights.current_pairs) and quant_hgemvr.shfl_layout_ok holds (never once the runtime guard found a
# broken "shfl" kernel: quant_hgemvr.SHFL_BROKEN), else "thread" (on CUDA the forward then runs without "+dn2":
# dn2_pays); "thread" / "shfl" force one (benchmarks; "shfl" where its layout is unverified raises
# on CUDA). Read at each launch and by dn2_pays, so at a graph's capture. A module constant, no environment variable.
DN2_FORM = "auto"


class DnPicks(tuple):
    """(qkv, o, gate/up, down) configs of one layer (layer_picks)."""

    @property
    def qkv(self) -> QMMConfig:
        return self[0]

    @property
    def o(self) -> QMMConfig:
        return self[1]

    @property
    def gate_up(self) -> QMMConfig:
        return self[2]

    @property
    def down(self) -> QMMConfig:
        return self[3]


def _norm_ok(weight: torch.Tensor, k: int) -> bool:
    return weight.dtype == torch.float16 and weight.shape == (k,) and weight.stride(0) == 1


def layer_picks(h: torch.Tensor, attn_width: int, wq: GPTQWeight, wo: GPTQWeight, wgu: GPTQWeight, wd: GPTQWeight,
                input_norm: torch.Tensor, post_norm: torch.Tensor) -> DnPicks | None:  # fmt: skip
    """The layer's picks where both of its norms can be deferred (module docstring), else None. h: the residual
    stream [T, hidden] (fp16); attn_width: the o GEMV's K."""
    t, hidden = h.shape
    if (h.dtype != torch.float16 or t == 0 or not h.is_contiguous() or wq.bits != 4 or wq.perm is not None
            or wgu.perm is not None or wq.in_features != hidden or wgu.in_features != hidden
            or wo.out_features != hidden or wd.out_features != hidden or not _norm_ok(input_norm, hidden)
            or not _norm_ok(post_norm, hidden)):  # fmt: skip
        return None
    attn = stand_in_x(t, attn_width, h.device)
    cfg_o = config_for(attn, wo)
    if not defer_ok(attn, wo, cfg_o):
        return None
    pair = gu_pair(h, wgu, wd, h)
    if pair is None:
        return None
    cfg_gu, cfg_d = pair
    if not defer_ok(stand_in_x(t, wd.in_features, h.device), wd, cfg_d):
        return None
    cfg_q = config_for(h, wq)
    if (cfg_q.kind not in ROW_KINDS or cfg_q.block_k not in (64, 128) or cfg_gu.block_k not in (64, 128)
            or not defer_ok(h, wq, cfg_q)):  # fmt: skip
        return None
    return DnPicks((cfg_q, cfg_o, cfg_gu, cfg_d))


class DnRegions:
    """One forward's deferred sums and slots, per layer, in one fp32 buffer zeroed at creation (module docstring)."""

    def __init__(self, layers: int, rows: int, hidden: int, inter: int, qkv_n: int, device: torch.device) -> None:
        pad = lambda n: -(-n // 16) * 16  # noqa: E731  (16-value alignment: 64-byte aligned slices)
        self.rows, self.hidden, self.inter, self.qkv_n = rows, hidden, inter, qkv_n
        self.sizes = (pad(rows * hidden), pad(rows * 2 * inter), pad(rows * hidden), pad(rows), pad(rows),
                      pad(rows * qkv_n))  # fmt: skip
        self.per_layer = sum(self.sizes)
        self.buf = torch.zeros(layers * self.per_layer, dtype=torch.float32, device=device)

    def _part(self, layer: int, j: int, n: int) -> torch.Tensor:
        off = layer * self.per_layer + sum(self.sizes[:j])
        return self.buf[off : off + n]

    def o_sums(self, layer: int) -> torch.Tensor:
        return self._part(layer, 0, self.rows * self.hidden)

    def gu_sums(self, layer: int) -> torch.Tensor:
        return self._part(layer, 1, self.rows * 2 * self.inter)

    def down_sums(self, layer: int) -> torch.Tensor:
        return self._part(layer, 2, self.rows * self.hidden)

    def gu_slot(self, layer: int) -> torch.Tensor:
        return self._part(layer, 3, self.rows)

    def q_slot(self, layer: int) -> torch.Tensor:
        return self._part(layer, 4, self.rows)

    def q_sums(self, layer: int) -> torch.Tensor:
        return self._part(layer, 5, self.rows * self.qkv_n)


def gemv_deferred(x2: torch.Tensor, w: GPTQWeight, cfg: QMMConfig, region: torch.Tensor) -> torch.Tensor:
    """x2 @ w left as fp32 sums [M, N] in region (zero before; consumer_finish._sums_in's launch)."""
    m, n = x2.shape[0], w.out_features
    out = launch_hgemvr(x2, w, cfg.block_m, cfg.block_n, cfg.block_k, cfg.split_k, cfg.num_warps, x2, finish=True,
                        defer=True, sums=region, **hgemvr_flags(cfg.kind))  # fmt: skip
    if out is None:
        raise RuntimeError("gemv_deferred: the GEMV returned no sums")
    return out[: m * n].view(m, n)


def down_xnorm(gu: torch.Tensor, wd: GPTQWeight, cfg: QMMConfig, slot: torch.Tensor, norm_k: int, eps: float,
               region: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """silu(r gate) * (r up) @ wd from the gate/up GEMV's sums gu [M, 2 I] (r from slot: gemv_dnorm2), deferred into
    region: its sums [M, N]."""
    m = gu.shape[0]
    x2 = stand_in_x(m, wd.in_features, gu.device)
    out = launch_hgemvr(x2, wd, cfg.block_m, cfg.block_n, cfg.block_k, cfg.split_k, cfg.num_warps, x2, finish=True,
                        defer=True, sums=region, x_sums=gu, x_norm=(slot, norm_k, eps), **hgemvr_flags(cfg.kind))  # fmt: skip
    if out is None:
        raise RuntimeError("down_xnorm: the GEMV returned no sums")
    return out[: m * wd.out_features].view(m, wd.out_features)


def dn2_form(cfg: QMMConfig, w: GPTQWeight, pairs: torch.Tensor | None) -> str:
    """The formation gemv_dnorm2 launches (DN2_FORM): "shfl" or "thread"."""
    if DN2_FORM == "thread" or pairs is None:
        return "thread"
    if DN2_FORM == "shfl":
        return "shfl"
    if DN2_FORM != "auto":
        raise ValueError(f"deferred_norm.DN2_FORM must be 'auto', 'thread' or 'shfl', got {DN2_FORM!r}")
    flags = hgemvr_flags(cfg.kind)
    ok = shfl_layout_ok(cfg.block_m, cfg.block_n, cfg.block_k, cfg.num_warps, flags["burst"], flags["pin"],
                        w.out_features)  # fmt: skip
    return "shfl" if use_asm() and ok else "thread"


def dn2_pays(p: DnPicks, wq: GPTQWeight | None, wgu: GPTQWeight, pairs_in: torch.Tensor | None,
             pairs_post: torch.Tensor | None, cuda: bool) -> bool:  # fmt: skip
    """May one layer's consumers run "+dn2" (module docstring, Preconditions)? Always off CUDA (the interpreter's
    per-thread formation: the same bits) and with DN2_FORM forced; on CUDA with DN2_FORM "auto" only where its gate/up
    consumer and (wq given: layers >= 1) its qkv consumer get the "shfl" formation (dn2_form), the pairs being the
    layer's current pair-ordered input / post-attention norms (None: none or stale)."""
    if not cuda or DN2_FORM != "auto":
        return True
    return dn2_form(p.gate_up, wgu, pairs_post) == "shfl" and (wq is None or dn2_form(p.qkv, wq, pairs_in) == "shfl")


def gemv_dnorm2(sums: torch.Tensor, h: torch.Tensor, h_out: torch.Tensor, weight: torch.Tensor, w: GPTQWeight,
                cfg: QMMConfig, slot: torch.Tensor, region: torch.Tensor,
                pairs: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """RMSNorm(h + fp16(sums)) @ w without r, deferred into region (fp32, zero): its sums [M, N] returned; h' goes to
    h_out and the rows' sum(h'^2) into slot [M] (zero before), for the consumer's r (module docstring). pairs: the
    norm weight in pair order (model.weights.current_pairs), which the "shfl" formation reads (dn2_form)."""
    m, n = h.shape[0], w.out_features
    cap = DN2_MAXNREG if cfg.block_m == 1 else None
    out = launch_hgemvr(h, w, cfg.block_m, cfg.block_n, cfg.block_k, cfg.split_k, cfg.num_warps, h, finish=True,
                        defer=True, sums=region, dnorm2=(sums, h, h_out, weight, slot),
                        dn2_form=dn2_form(cfg, w, pairs), dn2_pairs=pairs, maxnreg=cap, **hgemvr_flags(cfg.kind))  # fmt: skip
    if out is None:
        raise RuntimeError("gemv_dnorm2: the GEMV returned no sums")
    return out[: m * n].view(m, n)
