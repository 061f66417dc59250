"""TMA-ring half2 GEMV for 4-bit g128 GPTQ weights (session 22, kind "hgemvt"), M = 1..4 rows, fp16 x, sm_90.

Goal (issue 4): read the int4 words at the rate of a pure read, with no split-K epilogue. A persistent one-wave grid
(one or two programs per SM); program p owns a contiguous run of column tiles (BC = 32 or 64 columns, plan_columns:
tiles [p T / P, (p + 1) T / P), runs differ by at most one tile) over the FULL K and stores y itself (no workspace,
no atomics). Its tiles are walked K-fastest in boxes of GB groups (16 GB word rows) x BC columns, each box a bulk
tensor copy (TMA) into a STAGES-deep shared-memory ring completing on a `ready` mbarrier, together with the box's
scales [GB, BC] and (asym) zero words [GB, BC / 8] (BC >= 32: a tile's zero words start 16-byte aligned).

Word box layout. The words [K/8, N] are seen by the TMA as 4 slabs j = 0..3, each [K/128 (g), 4 (a), N] with
strides (16 N, 4 N, 1) from word row j; slab j's element (g, a, n) is word row 16 g + 4 a + j. A thread's 4 words at
(g, a, n), j = 0..3, are 4 consecutive rows of one group, so quant_hgemvr's arithmetic applies unchanged: each word's
8 fields dequantized to (q - z) / 1024 as 4 half2 (_DEQ10: 4 LOP3 + SHF + 4 HFMA2), times the x pairs (x[k], x[k + 4])
in a half2 chain over the 4 words (_HDOT: 4 HFMA2 per word per row of x), then once per 4 words
acc += (p.lo + p.hi) * s in fp32 (_HFIN). A word is dequantized once for all BLOCK_M rows.

Session 22 rework (helper A2, bench/results/kernels-2026-12-02-s22-hgemvt2.md). The accumulator is 5-D
[BM, GB, 4 (a), BC / 8 (zero word), 8] with VEC (4 or 8) columns a thread and the warps along the groups, so each
thread loads the zero word of its own columns straight from the ring (no layout conversion, no CTA barrier: the old
per-box zero extraction cost ~12 barriers a box); NB (boxes per tile) is a constexpr (no runtime division); x is read
with one 16-byte load per word row, all issued at once. WS = 1 (default): a producer warp (gl.warp_specialize, 40
registers) refills slot s once the consumers arrive on its `empty` mbarrier (one arrival after a barrier of the
consumer warps): the consumers' box loop has 2 barriers and ~16.8 SASS instructions per word (sm_90, bc 32 gb 8,
4 warps, VEC 8; the old kernel ~22 with ~21 barriers a box). WS = 0: the consumers refill the ring themselves (Triton
puts a CTA barrier around every TMA copy: 8 a box). Triton pads the producer to a warpgroup (warps + 4 warps) and
would take 168 registers a thread (the whole register file: no second program on the SM under PDL), so WS builds
are capped at cfg.regs = 80 (30 K registers a program; 128 needed at M > 2).
Measured (7B, M = 1, two calls): up best 11.5-11.8 us iso / 8.8-9.0 us PDL (64% / 62% of copy, 3.0-3.2x bf16
under PDL) with bc 32 gb 8, 4 stages, 4 consumer warps, VEC 8, ws (the shipped hgemvr: 11.0 / 9.5-9.7 in the same
runs); down 11.4-11.7 us both iso and PDL (hgemvr 10.8-11.2 / 9.3-9.6). Not a tuner candidate: slower than hgemvr
iso on both shapes and under PDL on down; M = 2: 12.4 us PDL (tcs2a 9.9). The pure read of the same ring (bc 32 gb 8,
4 stages, one program per SM): 9.49 / 7.81 us iso / PDL; the best pure read, 6.71 us PDL, needs two programs per SM.

x (written by the previous kernel) is read after the PDL wait: every program turns x [M, K] into the pair words
(x[8r + i], x[8r + 4 + i]), i = 0..3, in shared memory [16 (j, i), boxes, BLOCK_M, GB, 4 (a)] (zero past K, so a
last box's zero-filled rows add exactly 0). PDL (kernels.pdl, USE_GDC): modes 1 and 3 let dependents launch at the
start, mode 2 once the last tile's boxes are consumed (before its reduction and store); modes 1 and 2 issue the first
STAGES boxes (weights only: words, scales, zeros) before the wait, mode 3 waits first; every x read and every store
comes after the wait, in every program (the default partition waits before the producer warp starts).
The end of a column tile: the accumulator summed over its (g, a) dimensions (across warps through shared memory,
gl.sum), times 1024, stored as fp16.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma

from .gptq_packing import GPTQWeight
from .pdl import ggdc_late, ggdc_start, ggdc_wait_first, ggdc_wait_prefetched, launch_kw
from .quant_hgemvr import _DEQ10_PTX, _HDOT_PTX, _HFIN_PTX

_DEQ10 = gl.constexpr(_DEQ10_PTX.value)
_HDOT = gl.constexpr(_HDOT_PTX.value)
_HFIN = gl.constexpr(_HFIN_PTX.value)

SMS = 132
SMEM_CORESIDE = 110 * 1024  # two programs of consecutive PDL kernels share an SM's 228 KB (1 KB reserved each)
SMEM_MAX = 227 * 1024
# grid 2: two programs of this kernel on one SM ((228 KB - 1 KB reserved each) / 2 = 113 KB), less 1 KB for the plan's
# estimate (the build's shared memory is within 1 KB of Plan.smem_bytes)
SMEM_GRID2 = 112 * 1024
PRODUCER_REGS = gl.constexpr(40)  # the producer warp's register budget (setmaxnreg)


@dataclass(frozen=True)
class HGEMVTConfig:
    bc: int = 32  # columns per tile / box (32 or 64: 128-byte rows at least, the tile's zero words start aligned)
    gb: int = 8  # groups (16 word rows each) per box
    stages: int = 4
    warps: int = 8
    grid: int = 1  # programs per SM (1 or 2)
    vec: int = 4  # columns per thread (4 or 8; 8 halves the x pair loads and the zero constants per word)
    ws: int = 1  # 1: a producer warp issues the ring (warps + 1 warps); 0: the consumers refill it after a CTA barrier
    regs: int = 80  # ws: the kernel's register cap (maxnreg; Triton pads to warps + 4 warps: 80 x 384 = 30 K registers,
    # so two programs of consecutive PDL kernels fit an SM's 64 K; uncapped it takes 168 = the whole register file)


@dataclass(frozen=True)
class Plan:
    tiles: int  # column tiles (ceil(N / bc))
    programs: int
    nb: int  # boxes per tile along K
    box_bytes: int  # one ring slot: words + scales + zeros
    ring_bytes: int
    x_bytes: int
    smem_bytes: int  # ring + x + barriers + reduction scratch (what the build's shared memory should be close to)
    zbw: int  # zero words per box row
    max_tiles: int  # the most tiles a program owns


def layout_params(bc: int, warps: int, vec: int = 4) -> tuple[int, int, int, int]:
    """(VEC, TC, TA, TG): columns per thread, threads along columns / a / g (product 32). The columns are seen as
    [BC / 8 (zero word), 8]: TC = TC8 * TW threads, TC8 = 8 / VEC within a zero word, TW over the words."""
    tc8 = 8 // vec
    tw = min(bc // 8, 32 // tc8)
    ta = min(4, 32 // (tc8 * tw))
    tg = 32 // (tc8 * tw * ta)
    return vec, tc8 * tw, ta, tg


def zero_words(bc: int, gb: int) -> int:
    """Zero words per box row: at least 4 (16-byte TMA rows), bc / 8, and a 128-byte slot (gb * zbw * 4)."""
    return max(4, bc // 8, -(-32 // gb))


def plan_columns(n: int, bc: int, programs: int) -> list[tuple[int, int]]:
    """Column tile runs [lo, hi) per program (tile units of bc columns): balanced, runs differ by <= 1 tile."""
    t = -(-n // bc)
    return [(p * t // programs, (p + 1) * t // programs) for p in range(programs)]


def plan(n: int, k: int, m: int, cfg: HGEMVTConfig, sms: int = SMS) -> Plan:
    g = k // 128
    tiles = -(-n // cfg.bc)
    programs = min(sms * cfg.grid, tiles)
    nb = -(-g // cfg.gb)
    zbw = zero_words(cfg.bc, cfg.gb)
    box = 64 * cfg.gb * cfg.bc + 2 * cfg.gb * cfg.bc + 4 * cfg.gb * zbw
    ring = cfg.stages * box
    nxb = x_boxes(k, cfg.gb)
    x_bytes = 16 * nxb * cfg.gb * 4 * 4 * block_m(m)  # 16 (j, i) x groups x 4 (a) int32 per row
    red = 4 * block_m(m) * cfg.warps * cfg.bc  # the tile-end reduction's scratch (across the warps' group rows)
    return Plan(tiles, programs, nb, box, ring, x_bytes, ring + x_bytes + 16 * cfg.stages + red, zbw,
                -(-tiles // programs))  # fmt: skip


def block_m(m: int) -> int:
    return 1 if m <= 1 else 2 if m <= 2 else 4


def config_ok(n: int, k: int, m: int, cfg: HGEMVTConfig, coreside: bool | None = None) -> str | None:
    """None when cfg can run this shape, else why not (shape alignment, layout coverage, shared memory: within
    SMEM_CORESIDE when `coreside` (default: at M = 1; at M = 2..4 x alone takes 2 K M bytes, 88 KB at K = 11008,
    so there only SMEM_MAX); grid 2 always within SMEM_GRID2, or its two programs cannot share an SM)."""
    if coreside is None:
        coreside = m <= 1
    if k % 128 or n % 32:
        return "needs K % 128 == 0 and N % 32 == 0 (TMA strides of the words, scales and zeros)"
    if cfg.bc not in (32, 64) or cfg.warps not in (2, 4, 8, 16) or cfg.grid not in (1, 2) or cfg.vec not in (4, 8):
        return "bc 32 or 64, warps 2..16, grid 1 or 2, vec 4 or 8"
    if cfg.ws and cfg.warps > 8:
        return "ws: at most 8 consumer warps (+ the producer, padded to a warpgroup)"
    if cfg.ws and 0 < cfg.regs < 128 and m > 2:
        return "ws at M > 2: the register cap must be >= 128 (the accumulators of 4 rows spill at 80)"
    vec, tc, ta, tg = layout_params(cfg.bc, cfg.warps, cfg.vec)
    if tc * vec > cfg.bc or ta * tc * tg != 32:
        return "the layout does not fit the tile"
    if cfg.gb < tg * cfg.warps or cfg.gb & (cfg.gb - 1) or cfg.gb > 64:
        return f"gb {cfg.gb} must be a power of 2 <= 64 covering {tg * cfg.warps} group rows of threads"
    if (2 * cfg.gb * cfg.bc) % 128:
        return "the scale slot must be a multiple of 128 bytes (gb * bc >= 64)"
    p = plan(n, k, m, cfg)
    budget = SMEM_CORESIDE if coreside else SMEM_MAX
    if cfg.grid == 2:
        budget = min(budget, SMEM_GRID2)
    if p.smem_bytes > budget:
        return f"shared memory {p.smem_bytes} > {budget}"
    return None


def supported(w: GPTQWeight, m: int) -> bool:
    """The weights this kernel takes: 4-bit, group 128, no act-order, N % 32 == 0, M <= 4, contiguous words, scales and
    zeros (descriptors() gives the words' 4-D view the row stride N) (CUDA sm_90 only)."""
    return (w.bits == 4 and w.group_size == 128 and w.perm is None and w.out_features % 32 == 0
            and w.in_features % 128 == 0 and 1 <= m <= 4
            and all(t.is_contiguous() for t in (w.qweight, w.scales, w.qzeros)))  # fmt: skip


def layouts(bc: int, gb: int, warps: int, bm: int, vec: int = 4) -> dict:
    """ACC: the accumulator's 5-D layout [BM, GB, 4 (a), BC / 8 (zero word w), 8] (rows of x in-thread, VEC columns
    per thread, warps along the groups: each warp owns its group rows, no cross-warp exchange until a tile's end);
    XB: the x build's [NXB, BM, GB, 4 (a), 4 (int32 of a word row's 8 x)] (16-byte loads)."""
    vec, tc, ta, tg = layout_params(bc, warps, vec)
    tc8 = 8 // vec
    acc = gl.BlockedLayout(size_per_thread=[bm, 1, 1, 1, vec], threads_per_warp=[1, tg, ta, tc // tc8, tc8],
                           warps_per_cta=[1, warps, 1, 1, 1], order=[4, 3, 2, 1, 0])  # fmt: skip
    tgx = min(gb, 2)
    wgx = min(warps, gb // tgx)
    xb = gl.BlockedLayout(size_per_thread=[1, 1, 1, 1, 4], threads_per_warp=[32 // (4 * tgx), 1, tgx, 4, 1],
                          warps_per_cta=[warps // wgx, 1, wgx, 1, 1], order=[4, 3, 2, 1, 0])  # fmt: skip
    return dict(ACC=acc, XB=xb)


def x_boxes(k: int, gb: int) -> int:
    """NXB: boxes in the x buffer (a power of 2 >= the boxes along K)."""
    nb = -(-(k // 128) // gb)
    return 1 << (nb - 1).bit_length()


@gluon.jit
def _issue(w0, w1, w2, w3, s_desc, z_desc, wring, sring, zring, bars, s, i, count, t_lo, NB,
           GB: gl.constexpr, BC: gl.constexpr, SYM: gl.constexpr):  # fmt: skip
    """Ring slot s <- box i of this program (tile t_lo + i // NB, groups (i % NB) * GB ..): words, scales, zeros."""
    pred = i < count
    col = (t_lo + i // NB) * BC
    g0 = (i % NB) * GB
    nbytes: gl.constexpr = (
        4 * w0.block_type.nbytes + s_desc.block_type.nbytes + (0 if SYM else z_desc.block_type.nbytes)
    )
    mbarrier.expect(bars.index(s), nbytes, pred=pred)
    tma.async_copy_global_to_shared(w0, [g0, 0, col], bars.index(s), wring.index(4 * s + 0), pred=pred)
    tma.async_copy_global_to_shared(w1, [g0, 0, col], bars.index(s), wring.index(4 * s + 1), pred=pred)
    tma.async_copy_global_to_shared(w2, [g0, 0, col], bars.index(s), wring.index(4 * s + 2), pred=pred)
    tma.async_copy_global_to_shared(w3, [g0, 0, col], bars.index(s), wring.index(4 * s + 3), pred=pred)
    tma.async_copy_global_to_shared(s_desc, [g0, col], bars.index(s), sring.index(s), pred=pred)
    if not SYM:
        # (the box's first word 16-byte aligned: an unaligned inner start coordinate is an illegal instruction,
        # s22 call 2; with bc >= 32 a tile's zero words start 16-byte aligned)
        tma.async_copy_global_to_shared(z_desc, [g0, (col // 8) & -4], bars.index(s), zring.index(s), pred=pred)


@gluon.jit
def _x_pairs(x_ptr, xs, M, K8, stride_xm, BM: gl.constexpr, GB: gl.constexpr, NXB: gl.constexpr,
             XB: gl.constexpr):  # fmt: skip
    """xs[(j * 4 + i) NXB + b, m, g, a] = the pair word (x[8 r + i], x[8 r + 4 + i]) of word row r = (b GB + g) 16 + 4 a + j
    (0 past K / 8 word rows or M rows): natural int32 words n_t = (x[8 r + 2 t], x[8 r + 2 t + 1]) re-paired. One
    16-byte load per word row, the 4 loads (j) issued before any store."""
    L4: gl.constexpr = gl.SliceLayout(4, XB)
    ob = gl.arange(0, NXB, layout=gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(3, L4))))
    om = gl.arange(0, BM, layout=gl.SliceLayout(0, gl.SliceLayout(2, gl.SliceLayout(3, L4))))
    og = gl.arange(0, GB, layout=gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(3, L4))))
    oa = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(2, L4))))
    ot = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(3, XB)))))
    r = (ob[:, None, None, None] * GB + og[None, None, :, None]) * 16 + 4 * oa[None, None, None, :]  # [NXB, 1, GB, 4]
    mm = om[None, :, None, None]
    ok = ((r < K8) & (mm < M))[:, :, :, :, None]
    x32 = x_ptr.to(gl.pointer_type(gl.int32), bitcast=True)
    offs = (gl.minimum(mm, M - 1) * (stride_xm // 2) + 4 * r)[:, :, :, :, None] + ot[None, None, None, None, :]
    v0 = gl.load(x32 + offs, mask=ok, other=0)  # [NXB, BM, GB, 4, 4]: word rows r + j
    v1 = gl.load(x32 + offs + 4, mask=ok, other=0)
    v2 = gl.load(x32 + offs + 8, mask=ok, other=0)
    v3 = gl.load(x32 + offs + 12, mask=ok, other=0)
    for j in gl.static_range(4):
        v = v0 if j == 0 else v1 if j == 1 else v2 if j == 2 else v3
        v = gl.reshape(v, [NXB, BM, GB, 4, 2, 2])  # t = 2 u + v
        ev, od = gl.split(v)  # t = 2 u, 2 u + 1
        n0, n2 = gl.split(ev)
        n1, n3 = gl.split(od)
        xs.slice((j * 4 + 0) * NXB, NXB).store((n0 & 0xFFFF) | (n2 << 16))
        xs.slice((j * 4 + 1) * NXB, NXB).store(((n0 >> 16) & 0xFFFF) | (n2 & -65536))
        xs.slice((j * 4 + 2) * NXB, NXB).store((n1 & 0xFFFF) | (n3 << 16))
        xs.slice((j * 4 + 3) * NXB, NXB).store(((n1 >> 16) & 0xFFFF) | (n3 & -65536))


@gluon.jit
def _consume(wring, sring, zring, xs, ready, empty, y_ptr, M, N, stride_ym, t_lo, ntiles,
             w0, w1, w2, w3, s_desc, z_desc, bars_issue, count,
             SYM: gl.constexpr, ZERO_OFFSET: gl.constexpr, STAGES: gl.constexpr, BM: gl.constexpr,
             NXB: gl.constexpr, NB: gl.constexpr, GB: gl.constexpr, BC: gl.constexpr, ZBW: gl.constexpr,
             ACC: gl.constexpr, WS: gl.constexpr, USE_GDC: gl.constexpr):  # fmt: skip
    """The consumer: per box wait `ready`, dequantize and multiply, release the slot (WS: a barrier of the consumer
    warps and one arrival on `empty`; else a CTA barrier and the refill issued here), per tile reduce and store
    (PDL mode 2: dependents launch once the last tile's boxes are consumed, before its reduction and store)."""
    NW: gl.constexpr = BC // 8
    WL: gl.constexpr = gl.SliceLayout(0, ACC)  # [GB, 4, NW, 8] words
    SL: gl.constexpr = gl.SliceLayout(1, WL)  # [GB, NW, 8] scales
    ZL: gl.constexpr = gl.SliceLayout(2, SL)  # [GB, NW] zero words
    XR: gl.constexpr = gl.SliceLayout(3, gl.SliceLayout(4, ACC))  # [BM, GB, 4] x pairs
    OL: gl.constexpr = gl.SliceLayout(1, gl.SliceLayout(2, ACC))  # [BM, NW, 8] outputs
    # row-major views of the ring (the TMA's unswizzled boxes), columns as [NW zero words, 8]; a multi-buffer view's
    # layout has one rank less than its shape (the leading dimension is indexed)
    RM4: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, order=[3, 2, 1, 0])
    RM3: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, order=[2, 1, 0])
    RM2: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, order=[1, 0])
    wr = wring._reinterpret(gl.int32, [STAGES * 4, GB, 4, NW, 8], RM4)
    sr = sring._reinterpret(gl.float16, [STAGES, GB, NW, 8], RM3)
    zr = zring._reinterpret(gl.int32, [STAGES, GB, ZBW], RM2)
    xr = xs._reinterpret(gl.int32, [16 * NXB, BM, GB, 4], RM3)
    oc = gl.arange(0, 8, layout=gl.SliceLayout(0, gl.SliceLayout(1, SL)))[None, None, :]  # [1, 1, 8]
    om = gl.arange(0, BM, layout=gl.SliceLayout(1, gl.SliceLayout(2, OL)))[:, None, None]
    ow = gl.arange(0, NW, layout=gl.SliceLayout(0, gl.SliceLayout(2, OL)))[None, :, None]
    oo = gl.arange(0, 8, layout=gl.SliceLayout(0, gl.SliceLayout(1, OL)))[None, None, :]
    for t in range(ntiles):
        acc = gl.zeros([BM, GB, 4, NW, 8], gl.float32, ACC)
        for kb in range(NB):
            i = t * NB + kb
            s = i % STAGES
            mbarrier.wait(ready.index(s), (i // STAGES) & 1)
            sc = sr.index(s).load(SL).to(gl.float32)  # [GB, NW, 8]
            if SYM:
                z = gl.full([GB, NW, 8], 8, gl.int32, SL)
            else:
                if ZBW == NW:
                    zw = zr.index(s).load(ZL)  # [GB, NW]: the tile's zero words (a thread: the word of its columns)
                else:
                    zw = zr.index(s).slice(0, NW, dim=1).load(ZL)
                z = ((zw[:, :, None] >> (oc * 4)) & 0xF) + ZERO_OFFSET
            c0 = gl.expand_dims(z * 0x10001 + (0xBC00BC00 - 2**32), 1)  # [GB, 1, NW, 8]: fp16 -(1 + z / 1024) x2
            c1 = gl.expand_dims(z * 0x100010 + (0xAC00AC00 - 2**32), 1)  # -(1/16 + z / 1024) x2
            p = gl.zeros([BM, GB, 4, NW, 8], gl.int32, ACC)
            for j in gl.static_range(4):
                w = wr.index(4 * s + j).load(WL)  # [GB, 4, NW, 8]: word rows 16 g + 4 a + j
                t0, t1, t2, t3 = gl.inline_asm_elementwise(_DEQ10, "=&r,=&r,=&r,=&r,r,r,r", [w, c0, c1],
                                                           dtype=(gl.int32, gl.int32, gl.int32, gl.int32),
                                                           is_pure=True, pack=1)  # fmt: skip
                x0 = xr.index((j * 4 + 0) * NXB + kb).load(XR)
                x1 = xr.index((j * 4 + 1) * NXB + kb).load(XR)
                x2 = xr.index((j * 4 + 2) * NXB + kb).load(XR)
                x3 = xr.index((j * 4 + 3) * NXB + kb).load(XR)
                p = gl.inline_asm_elementwise(_HDOT, "=r,r,r,r,r,r,r,r,r,r",
                                              [gl.expand_dims(t0, 0), gl.expand_dims(t1, 0), gl.expand_dims(t2, 0),
                                               gl.expand_dims(t3, 0), x0[:, :, :, None, None], x1[:, :, :, None, None],
                                               x2[:, :, :, None, None], x3[:, :, :, None, None], p],
                                              dtype=gl.int32, is_pure=True, pack=1)  # fmt: skip
            gl.thread_barrier()  # every (consumer) warp has read slot s before it is refilled
            if WS:
                mbarrier.arrive(empty.index(s), count=1)
            else:
                _issue(w0, w1, w2, w3, s_desc, z_desc, wring, sring, zring, bars_issue, s, i + STAGES, count, t_lo,
                       NB, GB, BC, SYM)  # fmt: skip
            s5 = gl.expand_dims(gl.expand_dims(sc, 1), 0)  # [1, GB, 1, NW, 8]
            acc = gl.inline_asm_elementwise(_HFIN, "=f,r,f,f", [p, s5, acc], dtype=gl.float32, is_pure=True, pack=1)
        if t == ntiles - 1:
            ggdc_late(USE_GDC)  # mode 2: after the main loop
        out = gl.sum(gl.sum(acc, axis=2), axis=1) * 1024.0  # [BM, NW, 8]: the tile's columns
        col = (t_lo + t) * BC + ow * 8 + oo
        gl.store(y_ptr + om * stride_ym + col, out.to(gl.float16), mask=(om < M) & (col < N))


@gluon.jit
def _produce(w0, w1, w2, w3, s_desc, z_desc, wring, sring, zring, ready, empty, count, t_lo,
             STAGES: gl.constexpr, NB: gl.constexpr, GB: gl.constexpr, BC: gl.constexpr, SYM: gl.constexpr):  # fmt: skip
    """The producer warp (WS): box i into slot i % STAGES once the consumers released box i - STAGES."""
    for i in range(STAGES, count):
        s = i % STAGES
        mbarrier.wait(empty.index(s), ((i // STAGES) & 1) ^ 1)
        _issue(w0, w1, w2, w3, s_desc, z_desc, wring, sring, zring, ready, s, i, count, t_lo, NB, GB, BC, SYM)


@gluon.jit
def _hgemvt_kernel(w0, w1, w2, w3, s_desc, z_desc, x_ptr, y_ptr, M, N, K, stride_xm, stride_ym, TILES,
                   NB: gl.constexpr, SYM: gl.constexpr, ZERO_OFFSET: gl.constexpr, STAGES: gl.constexpr,
                   BM: gl.constexpr, NXB: gl.constexpr, ACC: gl.constexpr, XB: gl.constexpr, WS: gl.constexpr = 1,
                   USE_GDC: gl.constexpr = 0):  # fmt: skip
    GB: gl.constexpr = w0.block_type.shape[0]
    BC: gl.constexpr = w0.block_type.shape[2]
    ZBW: gl.constexpr = z_desc.block_type.shape[1]
    ggdc_start(USE_GDC)
    pid = gl.program_id(0)
    nprog = gl.num_programs(0)
    t_lo = pid * TILES // nprog
    t_hi = (pid + 1) * TILES // nprog
    count = (t_hi - t_lo) * NB
    wring = gl.allocate_shared_memory(gl.int32, [STAGES * 4, GB, 4, BC], w0.layout)
    sring = gl.allocate_shared_memory(gl.float16, [STAGES, GB, BC], s_desc.layout)
    zring = gl.allocate_shared_memory(gl.int32, [STAGES, GB, ZBW], z_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    # x's pair words: [16 (j, i) x NXB, BM, GB, 4 (a)], read per (j, i) and box
    xs = gl.allocate_shared_memory(
        gl.int32, [16 * NXB, BM, GB, 4], gl.SwizzledSharedLayout(1, 1, 1, order=[3, 2, 1, 0])
    )
    for st in gl.static_range(STAGES):
        mbarrier.init(ready.index(st), count=1)
        mbarrier.init(empty.index(st), count=1)  # one arrival: the consumers' (after their barrier)
    fence_async_shared()
    ggdc_wait_first(USE_GDC)  # PDL mode 3 (the no-prefetch ablation): nothing before the wait
    for st in gl.static_range(STAGES):  # weights only: before the PDL wait (modes 1, 2)
        _issue(w0, w1, w2, w3, s_desc, z_desc, wring, sring, zring, ready, st, st, count, t_lo, NB, GB, BC, SYM)
    ggdc_wait_prefetched(USE_GDC)  # modes 1, 2: x may be written by the previous kernel
    _x_pairs(x_ptr, xs, M, K // 8, stride_xm, BM, GB, NXB, XB)
    gl.thread_barrier()
    if WS:
        gl.warp_specialize([(_consume, (wring, sring, zring, xs, ready, empty, y_ptr, M, N, stride_ym, t_lo,
                                        t_hi - t_lo, w0, w1, w2, w3, s_desc, z_desc, ready, count, SYM, ZERO_OFFSET,
                                        STAGES, BM, NXB, NB, GB, BC, ZBW, ACC, WS, USE_GDC)),
                            (_produce, (w0, w1, w2, w3, s_desc, z_desc, wring, sring, zring, ready, empty, count,
                                        t_lo, STAGES, NB, GB, BC, SYM))], [1], [PRODUCER_REGS])  # fmt: skip
    else:
        _consume(wring, sring, zring, xs, ready, empty, y_ptr, M, N, stride_ym, t_lo, t_hi - t_lo,
                 w0, w1, w2, w3, s_desc, z_desc, ready, count, SYM, ZERO_OFFSET, STAGES, BM, NXB, NB, GB, BC, ZBW,
                 ACC, WS, USE_GDC)  # fmt: skip
    for st in gl.static_range(STAGES):
        mbarrier.invalidate(ready.index(st))
        mbarrier.invalidate(empty.index(st))


def smem_layout(rank: int, bits: int) -> gl.NVMMASharedLayout:
    return gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=bits, rank=rank)


_DESCS: dict = {}


def descriptors(w: GPTQWeight, cfg: HGEMVTConfig) -> tuple:
    """The words' 4-D view [4 (j), G, 4 (a), N] (strides N, 16 N, 4 N, 1), the scales [G, N] and zeros [G, N / 8]
    descriptors with this config's boxes; cached per (tensor, box)."""
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    key = (w.qweight.data_ptr(), w.scales.data_ptr(), w.qzeros.data_ptr(), cfg.bc, cfg.gb)
    hit = _DESCS.get(key)
    if hit is not None and hit[0] is w.qweight:
        return hit[1]
    g, n = w.in_features // 128, w.out_features
    qw = w.qweight
    # slab j: word rows 16 g + 4 a + j as [G, 4 (a), N] (strides 16 N, 4 N, 1) from row j
    wd = tuple(TensorDescriptor(qw[j:], [g, 4, n], [16 * n, 4 * n, 1], [cfg.gb, 4, cfg.bc], smem_layout(3, 32))
               for j in range(4))  # fmt: skip
    sd = TensorDescriptor.from_tensor(w.scales, [cfg.gb, cfg.bc], smem_layout(2, 16))
    zd = TensorDescriptor.from_tensor(w.qzeros, [cfg.gb, zero_words(cfg.bc, cfg.gb)], smem_layout(2, 32))
    if len(_DESCS) > 4096:
        _DESCS.clear()
    _DESCS[key] = (qw, (*wd, sd, zd))
    return (*wd, sd, zd)


def launch_hgemvt(
    x2: torch.Tensor, w: GPTQWeight, cfg: HGEMVTConfig, y: torch.Tensor, sms: int = SMS, coreside: bool | None = None
) -> None:
    """y[M, N] = x2[M, K] @ W (fp16 x and y, row-major, M <= 4; CUDA sm_90); PDL inside kernels.pdl's scope."""
    m, k = x2.shape
    n = w.out_features
    if x2.dtype != torch.float16 or y.dtype != torch.float16 or not supported(w, m):
        raise ValueError("hgemvt: fp16 x / y, 4-bit g128 weights without act-order, N % 32 == 0, M <= 4")
    if k != w.in_features or tuple(y.shape) != (m, n):
        raise ValueError(f"hgemvt: x {tuple(x2.shape)} / y {tuple(y.shape)} do not match the weight's "
                         f"in_features {w.in_features} / [M, out_features {n}]")  # fmt: skip
    if x2.stride(1) != 1 or x2.stride(0) % 2 or x2.data_ptr() % 16 or y.stride(1) != 1:
        raise ValueError("hgemvt: x and y row-major, x 16-byte aligned with an even row stride")
    why = config_ok(n, k, m, cfg, coreside)
    if why:
        raise ValueError(f"hgemvt config {cfg}: {why}")
    p = plan(n, k, m, cfg, sms)
    bm = block_m(m)
    _hgemvt_kernel[(p.programs,)](*descriptors(w, cfg), x2, y, m, n, k, x2.stride(0), y.stride(0), p.tiles,
                                  NB=p.nb, SYM=w.sym, ZERO_OFFSET=w.zero_offset, STAGES=cfg.stages, BM=bm,
                                  NXB=x_boxes(k, cfg.gb), **layouts(cfg.bc, cfg.gb, cfg.warps, bm, cfg.vec),
                                  WS=cfg.ws, num_warps=cfg.warps, **compile_kw(cfg), **launch_kw())  # fmt: skip


def compile_kw(cfg: HGEMVTConfig) -> dict:
    return {"maxnreg": cfg.regs} if cfg.ws and cfg.regs else {}


def reference_math(x: torch.Tensor, w: GPTQWeight) -> torch.Tensor:
    """Pure-torch model of the kernel's arithmetic (its fp16 roundings emulated): the (q - z) / 1024 values (exact in
    fp16), per (group g, a) and half2 lane the 16 products of word rows 16 g + 4 a + j, j = 0..3, chained in fp16 (one
    rounding per HFMA2 lane), then fp32 acc += p.lo * s + p.hi * s; y = fp16(1024 * sum). The result does not depend
    on the config (no split-K: every column sums its whole K in one program)."""
    from .gptq_packing import unpack_bitstream

    m, k = x.shape
    n = w.out_features
    q = unpack_bitstream(w.qweight, 4, k, dim=0).to(torch.float32)  # [K, N]
    if w.sym:
        z = torch.full((k // 128, n), 8.0, device=x.device)
    else:
        z = (unpack_bitstream(w.qzeros, 4, n, dim=1)[:, :n] + w.zero_offset).to(torch.float32)
    t = ((q.view(k // 128, 128, n) - z[:, None, :]) / 1024).half()  # exact in fp16
    xh = x.half()
    # rows k = 128 g + 16 * (4 a + j) + ... : word row r = 16 g + 4 a + j, fields f = 0..7 -> k = 8 r + f
    tv = t.view(k // 128, 4, 4, 8, n)  # [g, a, j, f, n]
    xv = xh.view(m, k // 128, 4, 4, 8)  # [m, g, a, j, f]
    # half2 lanes: lane 0 takes fields 0..3, lane 1 fields 4..7; the chain is over (j, field pair i)
    p = torch.zeros(m, k // 128, 4, 2, n, dtype=torch.float16, device=x.device)
    for j in range(4):
        for i in range(4):
            for lane in range(2):
                f = i + 4 * lane
                prod = xv[:, :, :, j, f, None].float() * tv[None, :, :, j, f, :].float()
                p[:, :, :, lane] = (prod + p[:, :, :, lane].float()).half()
    s = w.scales.float()  # [G, N]
    acc = p[:, :, :, 0].float() * s[None, :, None, :] + p[:, :, :, 1].float() * s[None, :, None, :]
    return (acc.sum(dim=(1, 2)) * 1024).half()
