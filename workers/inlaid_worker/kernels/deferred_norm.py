"""The deferred residual add + RMSNorm (the "+dn" decode fusion, model.llama_fast): no norm launch between layers.

Today ("swiglu+cfin+g") each layer runs two one-CTA add + RMSNorm kernels (after o and after down) that finish the
producer GEMV's deferred split-K sums: h += fp16(sums); x = RMSNorm(h) * w. Under PDL their body (not their boundary)
costs ~1.2 us each on the 7B batch-1 step's critical path (bench/results/decode-2026-12-01-s15-anatomy.md). RMSNorm
is a per-row scalar, x = (h o w) * r with r = rsqrt(mean(h^2) + eps), and a GEMV is linear: W x = r * W (h o w). So
the consumer GEMV (gate/up after o, the next layer's qkv after down) never needs r while it streams its weights:

- after its PDL wait (its first weight tiles are loaded before the wait, as today) each program reads only its K slice
  of the producer's fp32 sums and of h, forms h' = fp16(h + fp16(sums)) (today's rounding) and multiplies its tiles by
  u = fp16(w * h' * sc) (sc a power of two per tile and row, undone exactly in the group scale: quant_hgemvr._dn_ready
  says why u can neither overflow nor underflow where today's x could not);
- the pid_n == 0 programs (one per K slice) store h' to the other residual buffer (ping-pong: the grid's other
  programs still read h) and add their slice's sum(h'^2) into an fp32 slot of the row;
- whoever finishes the output applies r: for gate/up (deferred, "+g") the down GEMV, which computes
  silu(fp16(r gate)) * fp16(r up) on load (quant_hgemvr's x_norm); for qkv (self-finishing) every program adds its
  slice's sum into slot[m, pid_n] before its split-K arrival, so the tile's last arriver finds the row's full sum and
  stores y = fp16(r * sum) (quant_hgemvr._store_rows_dn), leaving that slot zero.

Regions: every deferred producer (o, gate/up, down) leaves its sums in a region of its own per layer, and the slots are
per layer too: all of them sit in one fp32 buffer that the forward zeroes once at its front (inside a decode graph:
one memset node before the embedding), so nothing is cleared while a reader may still run, and no kernel in the chain
needs to clear anything. The shared split-K workspace is used only by the self-finishing qkv GEMV (self-cleaning).
Layer 0's input norm and the final norm stay kernels (the final one reads the last down GEMV's sums:
fused_norm.add_rms_norm_sums). Only without LoRA (its shrink needs x), fp16, 4-bit, where every layer's o, gate/up and
down picks are split-K half2 row GEMVs that can defer (consumer_finish.defer_ok / gu_pair) and qkv's is a half2 row GEMV,
and no consumer weight has an act-order perm (`layer_picks`); otherwise the caller runs today's path.

"+dn2" ("swiglu+cfin+q+g+dn2"; session 20, second design, gemv_dnorm2): dn's three consumer costs removed (its ablations:
the per-tile sum(h'^2) reduction for the scale, the h' store in the K loop, the once-per-CTA load plus the shared-memory
layout conversion). Each consumer thread loads the fp32 sums, h and the norm weight of exactly the x pairs a plain x
load gives it (duplicates across the CTA hit L1; no barrier, no shared memory) and multiplies its tiles by
u = fp16(h' w), unscaled (quant_hgemvr._dn2_u). The h' store and the row's sum(h'^2) are one extra N column of the
grid (one program per K slice, quant_hgemvr._dn2_rows), which runs no tile. Every consumer defers its sums: gate/up's r
is applied by down's x_norm (as "+dn"), qkv's by the row attention, which reads the qkv GEMV's per-layer sums region
as fp16(r * sum) (decode_row's rnorm; the "+q" path). Numerics: u = h' w is the RMSNorm's x times rms(h'); it
overflows fp16 where |h'_k w_k| > 65504 for some k (then the step's output is inf / NaN: test_deferred_norm2 shows
it), where today's x cannot (|x| <= sqrt(K) |w|). Llama-2's massive activations (|h| ~ 1e3-2.5e3 in a few channels)
stay below that unless their norm weights exceed ~26; below rms(h') ~ 1 (the first layers) u is smaller than today's
x and its half2 products reach fp16's subnormals sooner (the tiny-residual test bounds that error).
"""

from __future__ import annotations

import torch
import triton

from .consumer_finish import ROW_KINDS, config_for, defer_ok, gu_pair, stand_in_x
from .gptq_packing import GPTQWeight
from .quant_hgemvr import launch_hgemvr
from .quant_matmul import hgemvr_flags
from .quant_matmul_config import QMMConfig

# ptxas's register cap for the consumer GEMVs (gemv_dnorm) at block_m 1 (None: uncapped); read at each launch, so at a
# graph's capture. Offline sm_90a at the 7B batch-1 picks (bench/kernels/s20_dnorm_sass.py): uncapped 96 registers a
# thread (today's x load: 79-80), so 10 programs of 64 threads an SM and the qkv / gate/up grids (1536 / 1376) take
# a second wave; capped at 80: gate/up no spills, qkv 36 spill stores (5 local accesses in the K loop).
DN_MAXNREG: int | None = 80
# (bench ablations only, wrong results: 1 = no per-tile reduction, 2 = and no h' store, 3 = and x = h alone)
DN_ABL = 0
# "+dn2" (gemv_dnorm2): the register cap at block_m 1 (80: the grids stay one wave) and where u is formed (1: where a
# tile is used, its raw sums / h / weight pairs carried in the look-ahead; 2: where it is loaded)
DN2_MAXNREG: int | None = 80
DN2_MODE = 2


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
    if (h.dtype != torch.float16 or t == 0 or h.stride(1) != 1 or not h.is_contiguous() or wq.bits != 4
            or wq.perm is not None or wgu.perm is not None or wq.in_features != hidden or wgu.in_features != hidden
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
    if cfg_q.kind not in ROW_KINDS or cfg_q.block_k not in (64, 128) or cfg_gu.block_k not in (64, 128):
        return None
    return DnPicks((cfg_q, cfg_o, cfg_gu, cfg_d))


class DnRegions:
    """One forward's deferred sums and slots, per layer, in one fp32 buffer zeroed at creation (module docstring)."""

    def __init__(self, layers: int, rows: int, hidden: int, inter: int, q_tiles: int, device: torch.device,
                 qkv_n: int = 0) -> None:  # fmt: skip
        pad = lambda n: -(-n // 16) * 16  # noqa: E731  (16-value alignment: 64-byte aligned slices)
        self.rows, self.hidden, self.inter, self.qkv_n = rows, hidden, inter, qkv_n
        self.sizes = (pad(rows * hidden), pad(rows * 2 * inter), pad(rows * hidden), pad(rows), pad(rows * q_tiles),
                      pad(rows * qkv_n))  # fmt: skip
        self.q_tiles = q_tiles
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
        return self._part(layer, 4, self.rows * self.q_tiles)

    def q_sums(self, layer: int) -> torch.Tensor:
        """("+dn2", qkv_n > 0) the qkv GEMV's deferred sums of the layer."""
        return self._part(layer, 5, self.rows * self.qkv_n)


def q_tiles(picks: DnPicks, wq: GPTQWeight) -> int:
    """The qkv GEMV's N tiles (its self-finishing slot's columns)."""
    return triton.cdiv(wq.out_features, picks.qkv.block_n)


def gemv_deferred(x2: torch.Tensor, w: GPTQWeight, cfg: QMMConfig, region: torch.Tensor) -> torch.Tensor:
    """x2 @ w left as fp32 sums [M, N] in region (zero before; consumer_finish._sums_in's launch)."""
    m, n = x2.shape[0], w.out_features
    out = launch_hgemvr(x2, w, cfg.block_m, cfg.block_n, cfg.block_k, cfg.split_k, cfg.num_warps, x2, finish=True,
                        defer=True, sums=region, **hgemvr_flags(cfg.kind))  # fmt: skip
    if out is None:
        raise RuntimeError("gemv_deferred: the GEMV returned no sums")
    return out[: m * n].view(m, n)


def gemv_dnorm(sums: torch.Tensor, h: torch.Tensor, h_out: torch.Tensor, weight: torch.Tensor, w: GPTQWeight,
               cfg: QMMConfig, slot: torch.Tensor, eps: float,
               region: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """RMSNorm(h + fp16(sums)) @ w with the add + norm deferred into the GEMV (module docstring); h' goes to h_out.
    region (fp32, zero): the GEMV defers its own sums there (returned as [M, N]; r still to apply: slot [M] holds the
    rows' sum(h'^2) for down's x_norm); None: y [M, N] fp16 returned (self-finishing; slot [M, N tiles], left zero)."""
    m, n = h.shape[0], w.out_features
    args = (h, w, cfg.block_m, cfg.block_n, cfg.block_k, cfg.split_k, cfg.num_warps)
    dn = (sums, h, h_out, weight, slot, eps)
    cap = DN_MAXNREG if cfg.block_m == 1 else None
    abl = dict(dn_abl=DN_ABL) if DN_ABL else {}
    if region is not None:
        out = launch_hgemvr(*args, h, finish=True, defer=True, sums=region, dnorm=dn, maxnreg=cap,
                            **hgemvr_flags(cfg.kind), **abl)  # fmt: skip
        if out is None:
            raise RuntimeError("gemv_dnorm: the GEMV returned no sums")
        return out[: m * n].view(m, n)
    y = torch.empty(m, n, dtype=torch.float16, device=h.device)
    launch_hgemvr(*args, y, dnorm=dn, maxnreg=cap, **hgemvr_flags(cfg.kind), **abl)
    return y


def down_xnorm(gu: torch.Tensor, wd: GPTQWeight, cfg: QMMConfig, slot: torch.Tensor, norm_k: int, eps: float,
               region: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """silu(r gate) * (r up) @ wd from the gate/up GEMV's sums gu [M, 2 I] (r from slot: gemv_dnorm with a region),
    deferred into region: its sums [M, N]."""
    m = gu.shape[0]
    x2 = stand_in_x(m, wd.in_features, gu.device)
    out = launch_hgemvr(x2, wd, cfg.block_m, cfg.block_n, cfg.block_k, cfg.split_k, cfg.num_warps, x2, finish=True,
                        defer=True, sums=region, x_sums=gu, x_norm=(slot, norm_k, eps), **hgemvr_flags(cfg.kind))  # fmt: skip
    if out is None:
        raise RuntimeError("down_xnorm: the GEMV returned no sums")
    return out[: m * wd.out_features].view(m, wd.out_features)


def layer_picks2(h: torch.Tensor, attn_width: int, wq: GPTQWeight, wo: GPTQWeight, wgu: GPTQWeight, wd: GPTQWeight,
                 input_norm: torch.Tensor, post_norm: torch.Tensor) -> DnPicks | None:  # fmt: skip
    """layer_picks for "+dn2": the same, and qkv's pick must defer too (its sums go to the row attention)."""
    p = layer_picks(h, attn_width, wq, wo, wgu, wd, input_norm, post_norm)
    if p is None or not defer_ok(h, wq, p.qkv):
        return None
    return p


def gemv_dnorm2(sums: torch.Tensor, h: torch.Tensor, h_out: torch.Tensor, weight: torch.Tensor, w: GPTQWeight,
                cfg: QMMConfig, slot: torch.Tensor, eps: float, region: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """ "+dn2" (module docstring): RMSNorm(h + fp16(sums)) @ w without r, deferred into region (fp32, zero): its sums
    [M, N] returned; h' goes to h_out and the rows' sum(h'^2) into slot [M] (zero before), for the consumer's r."""
    m, n = h.shape[0], w.out_features
    cap = DN2_MAXNREG if cfg.block_m == 1 else None
    out = launch_hgemvr(h, w, cfg.block_m, cfg.block_n, cfg.block_k, cfg.split_k, cfg.num_warps, h, finish=True,
                        defer=True, sums=region, dnorm2=(sums, h, h_out, weight, slot, eps), dn2_mode=DN2_MODE,
                        maxnreg=cap, **hgemvr_flags(cfg.kind))  # fmt: skip
    if out is None:
        raise RuntimeError("gemv_dnorm2: the GEMV returned no sums")
    return out[: m * n].view(m, n)
