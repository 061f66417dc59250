"""One-wave, full-K, column-balanced Gluon int4 g128 GEMV for small M (2..16) with a deep TMA ring: kind "tct"
(issue 4, session 22; bench-only, not wired into the tuner).

The hypothesis (helper B's brief, session 22): two things no earlier kernel combines,
(a) a persistent ONE-WAVE grid where each program owns a contiguous range of output columns over the FULL K (no
    split-K, no workspace, no arrival counter: the epilogue is a direct store), balanced across the SMs, and
(b) under PDL (kernels/pdl.py) a deep weight ring issued before griddepcontrol.wait.

Column granularity. wgmma with the weight as A works on 64 columns a warpgroup: 7B down (N = 4096) would have 64
column tiles for 132 SMs, 7B up (11008) 172 (two waves' worth on 40 SMs). Here the MMA is mma.sync m16n8k16
(Gluon's ampere mma_v2) with x as A ([16 rows, K 128], rows past M padding) and the weight as B: 8 columns a unit, so a
program owns UMAX units (BLOCK_N = 8 * UMAX columns: 7B up 11 units = 88 columns, 126 programs; down 4 units = 32
columns, 128 programs; plan_tct). The B operand of mma.sync holds, per thread (g, t), column g and K rows 2t + e
(+ 8): quant_tcg's operand K order (column 32wi + 8s + 2t + e = nibble s + 4e of word 4t + wi) makes that the four
words 4t..4t+3 of one column, each read by exactly one thread; the A operand (x) in that order is, per thread, x's
row g / g + 8 at natural K 32t..32t+31 (64 contiguous bytes), so x travels by TMA in natural order and is permuted in
registers (reshape + permute, no data movement: convert_layout(assert_trivial=True)).

Structure: a producer warp TMA-copies, per K tile, the program's words [16, BLOCK_N] (as power-of-two column chunks,
CHUNKS: up to 4 boxes of <= 64 columns), its scale row [1, SB] and zero-word row [1, ZB] into a STAGES-deep ring
(before the PDL wait: weights), and x's tile [BMX, 128] (after the wait) onto the same `ready` mbarrier. NC consumer
warps (single-warp partitions) take the K tiles round-robin (warp w: tiles w, w + NC, ...), each with its own fp32
accumulators for all the program's columns: per tile wait `ready`, x operand, per chunk words -> exact (q - z)
operand (quant_tcs's one-shift fp16 asm), one mma_v2 chain, acc += part * s (quant_tc "tc" numerics, tcs_reference(
acc_scale=True)); release the slot. At the end every consumer warp writes its sums to shared memory and arrives on
`done`; the 4-warp default partition adds them, waits for the previous kernel (PDL) and stores y (plain stores, no
atomics, no workspace).

4-bit, g128, no act-order (tct_supported: False), N % 32 == 0 (TMA row strides of scales / zero words), K % 128 == 0,
M <= 16, fp16 or bf16 x. CUDA sm_90 (TMA, mbarrier); no interpreter twin (tcs_reference(acc_scale=True) is the model).

Status (bench/results/kernels-2026-12-02-s22-tct-run3.md, H200): correct (32 timed configs, ZTMA 0, worst 2.1e-4) but
1.5-2.3x slower than the shipped picks: best 7B up 24.92 / 22.92 us iso / pdl at M = 2 (9 stages, 2 consumers: a
depth refused since; tcs2a 11.90 / 9.92), 7B down 21.88 / 20.17 (11.93 / 9.92). The ring's stream alone (diag) takes 8.06-9.01 us under PDL (62-69% of copy): the
consumers' per-tile chain is what does not hide. Asym with the zero row in the ring (ZTMA 1) raised an illegal
instruction (see ZTMA_DEFAULT); 3 stages for 4 consumers crashed (refused since, see tct_args). Bench-only: not
offered by the tuner, not dispatched by quant_matmul.
"""

from __future__ import annotations

import dataclasses

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia import hopper
from triton.experimental.gluon.language.nvidia.ampere import mma_v2
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma

from .gptq_packing import GPTQWeight
from .pdl import ggdc_late, ggdc_start, ggdc_wait, ggdc_wait_first, ggdc_wait_prefetched, launch_kw
from .quant_hgemvt import SMEM_CORESIDE, SMS, smem_layout
from .quant_tcs import _QZ_BF16_C, _QZ_F16_C

BLOCK_K = 128
UNIT = 8  # columns a unit (the mma.sync n8)
MAX_CHUNKS = 4
CHUNK_MAX = 64  # widest column chunk (one TMA box, one B operand: 64 columns x 128 K = 128 fp16 registers a thread)
H200_SMS = SMS
SMEM_BUDGET = SMEM_CORESIDE  # ring + reduction: leaves >= 118 KiB of the SM's 228 KiB for the next kernel's programs


def chunks_of(block_n: int, cmax: int = CHUNK_MAX) -> tuple[int, ...]:
    """block_n (a multiple of 8) as power-of-two column chunks of at most cmax, widest first."""
    out = []
    rest = block_n
    while rest:
        c = min(cmax, 1 << (rest.bit_length() - 1))
        out.append(c)
        rest -= c
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class TctPlan:
    units: int  # units (8 columns) a program
    programs: int
    chunks: tuple[int, ...]

    @property
    def block_n(self) -> int:
        return UNIT * self.units


def plan_tct(n: int, sms: int = H200_SMS, max_chunks: int = MAX_CHUNKS, cmax: int = CHUNK_MAX) -> TctPlan:
    """Column ranges (pure): every program but the last owns `units` contiguous 8-column units (the last the rest,
    columns past N are TMA zero fill, not stored); units = the fewest that put the N/8 units on at most `sms`
    programs (one wave), raised until BLOCK_N splits into at most max_chunks power-of-two chunks. The slowest SM's
    columns are `units` * 8: the balance is (N / sms) / (units * 8)."""
    total = -(-n // UNIT)
    u = -(-total // sms)
    if UNIT * u > max_chunks * cmax:
        raise ValueError(f"tct: {n} columns on {sms} programs need {UNIT * u} a program, over {max_chunks} x {cmax}")
    while len(chunks_of(UNIT * u, cmax)) > max_chunks:
        u += 1
    return TctPlan(u, -(-total // u), chunks_of(UNIT * u, cmax))


def balance(n: int, plan: TctPlan, sms: int = H200_SMS) -> float:
    """Mean columns an SM over the largest program's columns (1.0 = perfect)."""
    return n / sms / plan.block_n


def tct_supported(w: GPTQWeight, k: int, m: int) -> bool:
    """4-bit, g128, no act-order, K % 128 == 0, N % 32 == 0, M <= 16, N-contiguous 16-byte-aligned tensors."""
    tensors = (w.qweight, w.scales, w.qzeros)
    rows_ok = all(t.stride(1) == 1 and (t.stride(0) * t.element_size()) % 16 == 0 and t.data_ptr() % 16 == 0
                  for t in tensors)  # fmt: skip
    return (w.bits == 4 and w.group_size == BLOCK_K and w.perm is None and k % BLOCK_K == 0 and 1 <= m <= 16
            and w.out_features % 32 == 0 and rows_ok)  # fmt: skip


def _p2(v: int) -> int:
    return 1 << max(0, (v - 1).bit_length())


def sz_boxes(plan: TctPlan) -> tuple[int, int]:
    """(SB, ZB): the scale-row box (16-bit, >= 64 = 128 bytes) and zero-word box (>= 32 words = 128 bytes): every TMA
    destination in the ring must be 128-byte aligned (smaller boxes put odd stages off alignment: "misaligned
    address" on the H200, session 22 run 1)."""
    return max(64, _p2(plan.block_n)), max(32, _p2(plan.units))


def box_rows(m: int) -> int:
    """x's TMA box rows: M rounded up to a power of two (>= 2)."""
    return max(2, _p2(m))


def smem_bytes(plan: TctPlan, stages: int, nc: int) -> int:
    """Shared memory of one program, as _tct_kernel allocates it (+ 1 KiB for alignment): per stage x (16 rows,
    16-bit), the word chunks, the scale row [1, SB] and the zero-word row [1, ZB]; each consumer warp's sums
    [16, chunk] (fp32) and the barriers (the absent chunks' 8-column dummies are never used: the compiler drops them).
    (M and sym change nothing: the x slot has 16 rows whatever the box, the zero row is allocated in every mode.)"""
    cols = plan.block_n
    sb, zb = sz_boxes(plan)
    stage = 16 * BLOCK_K * 2 + 16 * cols * 4 + sb * 2 + zb * 4
    return stages * stage + nc * 16 * cols * 4 + (2 * stages + 1) * 8 + 1024


@gluon.jit
def _x_operand(xv, XB: gl.constexpr, ADOT: gl.constexpr):
    """x's tile [16, 128] (natural K order in shared memory) -> the A operand in quant_tcg's K order: thread (g, t)
    reads rows g, g + 8 at K 32t..32t+31; k = 32t + 8wi + 4e + s -> operand column 32wi + 8s + 2t + e."""
    x = xv.load(XB)
    x5 = gl.reshape(x, [16, 4, 4, 2, 4])
    a = gl.reshape(gl.permute(x5, [0, 2, 4, 1, 3]), [16, 128])
    return gl.convert_layout(a, ADOT, assert_trivial=True)


@gluon.jit
def _chunk(acc, xa, wv, srow, zrow, zg_ptr, zcol, NZ, COFF: gl.constexpr, W: gl.constexpr, SYM: gl.constexpr,
           ZERO_OFFSET: gl.constexpr, IS_BF16: gl.constexpr, WB: gl.constexpr, MMA: gl.constexpr,
           BDOT: gl.constexpr, ZTMA: gl.constexpr):  # fmt: skip
    """acc [16, W] += x_tile @ ((q - z) of the chunk's words [16, W]) * s: one K tile of one column chunk."""
    U: gl.constexpr = W // 8
    dt: gl.constexpr = xa.dtype
    words = wv.load(WB)  # [16 (4t + wi), W (8u + g)]: thread (t, g) rows 4t..4t+3 of columns 8u + g
    w3 = gl.reshape(words, [16, U, 8])
    L3: gl.constexpr = w3.type.layout
    ZL: gl.constexpr = gl.SliceLayout(0, L3)  # [U, 8]
    if IS_BF16:
        magic = 0x4300
    else:
        magic = 0x6400
    if SYM:
        z = gl.full([U, 8], 8, gl.int32, layout=ZL)
    else:
        if ZTMA:  # the producer's zero-word row in the ring slot
            zw = zrow.slice(COFF // 8, U).load(gl.SliceLayout(1, ZL))  # one zero word a unit
        else:  # ZTMA 0: this tile's zero words from global memory (zg_ptr: the tile's qzeros row; weights)
            zc = zcol + COFF // 8 + gl.arange(0, U, layout=gl.SliceLayout(1, ZL))
            zw = gl.load(zg_ptr + zc, mask=zc < NZ, other=0)
        g = gl.arange(0, 8, layout=gl.SliceLayout(0, ZL))
        z = ((zw[:, None] >> (4 * g)[None, :]) & 0xF) + ZERO_OFFSET
    zm = magic + z
    zlb = gl.broadcast((zm | (zm << 16))[None, :, :], w3)[0]
    if IS_BF16:
        o = gl.inline_asm_elementwise(_QZ_BF16_C, "=r,=r,=r,=r,r,r", [w3, zlb], [gl.int32] * 4, True, 1)
    else:
        zh = (zm << 4) + (0xD400 - 0x64000)  # fp16 -(64 + z)
        zhb = gl.broadcast((zh | (zh << 16))[None, :, :], w3)[0]
        o = gl.inline_asm_elementwise(_QZ_F16_C, "=r,=r,=r,=r,r,r,r", [w3, zlb, zhb], [gl.int32] * 4, True, 1)
    p = gl.join(gl.join(o[0], o[2]), gl.join(o[1], o[3]))  # [16, U, 8, j, i]: pair s = 2j + i
    pairs = gl.reshape(p, [16, U, 8, 4])
    w5 = gl.join(pairs.to(gl.int16), (pairs >> 16).to(gl.int16))  # [16, U, 8, s, e]
    w6 = gl.reshape(w5, [4, 4, U, 8, 4, 2])  # [t, wi, u, g, s, e]
    b = gl.reshape(gl.permute(w6, [1, 4, 0, 5, 2, 3]), [128, W]).to(dt, bitcast=True)
    b = gl.convert_layout(b, BDOT, assert_trivial=True)
    part = mma_v2(xa, b, gl.zeros([16, W], gl.float32, layout=MMA))
    sv = srow.slice(COFF, W).load(gl.SliceLayout(0, MMA)).to(dt).to(gl.float32)
    return acc + part * sv[None, :]


@gluon.jit
def _acc_init(C: gl.constexpr, MMA: gl.constexpr):
    return gl.zeros([16, C if C > 0 else 8], gl.float32, layout=MMA)


@gluon.jit
def _red_put(acc, red, WID: gl.constexpr, C: gl.constexpr):
    if C > 0:
        red.index(WID).store(acc)


@gluon.jit
def _red_sum(red, NC: gl.constexpr, C: gl.constexpr, EL: gl.constexpr):
    acc = gl.zeros([16, C if C > 0 else 8], gl.float32, layout=EL)
    if C > 0:
        for i in gl.static_range(NC):
            acc = acc + red.index(i).load(EL)
    return acc


@gluon.jit
def _y_store(acc, y_ptr, M, N, stride_ym, col, C: gl.constexpr, MMA: gl.constexpr):
    if C > 0:
        rows = gl.arange(0, 16, layout=gl.SliceLayout(1, MMA))
        cols = col + gl.arange(0, C, layout=gl.SliceLayout(0, MMA))
        mask = (rows < M)[:, None] & (cols < N)[None, :]
        gl.store(y_ptr + rows[:, None] * stride_ym + cols[None, :], acc.to(y_ptr.dtype.element_ty), mask=mask)


@gluon.jit
def _tct_consumer(x_smem, w0, w1, w2, w3, s_smem, z_smem, ready, empty, done, r0, r1, r2, r3, y_ptr, M, N,
                  stride_ym, col0, n_tiles, qz_ptr, stride_zg, WID: gl.constexpr, NC: gl.constexpr, C0: gl.constexpr, C1: gl.constexpr,
                  C2: gl.constexpr, C3: gl.constexpr, STAGES: gl.constexpr, SYM: gl.constexpr,
                  ZERO_OFFSET: gl.constexpr, IS_BF16: gl.constexpr, USE_GDC: gl.constexpr, MMA: gl.constexpr,
                  ADOT: gl.constexpr, BDOT: gl.constexpr, XB: gl.constexpr, WB: gl.constexpr,
                  DIAG: gl.constexpr, ZTMA: gl.constexpr):  # fmt: skip
    # the scale / zero boxes [STAGES, 1, SB] seen as rows [STAGES, SB] through a rank-1 layout (quant_tcs's FLAT)
    FLAT: gl.constexpr = gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[0])
    s_rows = s_smem._reinterpret(s_smem.dtype, [s_smem.shape[0], s_smem.shape[2]], FLAT)
    z_rows = z_smem._reinterpret(gl.int32, [z_smem.shape[0], z_smem.shape[2]], FLAT)
    a0 = _acc_init(C0, MMA)
    a1 = _acc_init(C1, MMA)
    a2 = _acc_init(C2, MMA)
    a3 = _acc_init(C3, MMA)
    for it in range(WID, n_tiles, NC):
        st = it % STAGES
        mbarrier.wait(ready.index(st), (it // STAGES) & 1)
        if DIAG == 0:  # (DIAG 1, bench-only: the ring's stream alone, no operand or MMA: wrong results)
            xa = _x_operand(x_smem.index(st), XB, ADOT)
            srow = s_rows.index(st)
            zrow = z_rows.index(st)
            zg = qz_ptr + it * stride_zg  # (ZTMA 0) this tile's qzeros row
            zc0 = col0 // 8
            nz = (N + 7) // 8
            a0 = _chunk(a0, xa, w0.index(st), srow, zrow, zg, zc0, nz, 0, C0, SYM, ZERO_OFFSET, IS_BF16, WB, MMA, BDOT,
                        ZTMA)  # fmt: skip
            if C1 > 0:
                a1 = _chunk(a1, xa, w1.index(st), srow, zrow, zg, zc0, nz, C0, C1, SYM, ZERO_OFFSET, IS_BF16, WB, MMA,
                            BDOT, ZTMA)  # fmt: skip
            if C2 > 0:
                a2 = _chunk(a2, xa, w2.index(st), srow, zrow, zg, zc0, nz, C0 + C1, C2, SYM, ZERO_OFFSET, IS_BF16, WB,
                            MMA, BDOT, ZTMA)  # fmt: skip
            if C3 > 0:
                a3 = _chunk(a3, xa, w3.index(st), srow, zrow, zg, zc0, nz, C0 + C1 + C2, C3, SYM, ZERO_OFFSET,
                            IS_BF16, WB, MMA, BDOT, ZTMA)  # fmt: skip
        mbarrier.arrive(empty.index(st), count=1)  # after the MMAs that consumed the slot's words and x
    _red_put(a0, r0, WID, C0)
    _red_put(a1, r1, WID, C1)
    _red_put(a2, r2, WID, C2)
    _red_put(a3, r3, WID, C3)
    mbarrier.arrive(done.index(0), count=1)


@gluon.jit
def _tct_epilogue(done, r0, r1, r2, r3, y_ptr, M, N, stride_ym, col0, NC: gl.constexpr, C0: gl.constexpr,
                  C1: gl.constexpr, C2: gl.constexpr, C3: gl.constexpr, USE_GDC: gl.constexpr):  # fmt: skip
    """The default partition (4 warps, idle during the K loop): once every consumer warp put its sums in shared
    memory, add them, wait for the previous kernel (PDL: every store after the wait) and store y."""
    EL: gl.constexpr = gl.BlockedLayout([1, 1], [4, 8], [4, 1], [1, 0])
    mbarrier.wait(done.index(0), 0)
    ggdc_late(USE_GDC)
    ggdc_wait(USE_GDC)
    _y_store(_red_sum(r0, NC, C0, EL), y_ptr, M, N, stride_ym, col0, C0, EL)
    _y_store(_red_sum(r1, NC, C1, EL), y_ptr, M, N, stride_ym, col0 + C0, C1, EL)
    _y_store(_red_sum(r2, NC, C2, EL), y_ptr, M, N, stride_ym, col0 + C0 + C1, C2, EL)
    _y_store(_red_sum(r3, NC, C3, EL), y_ptr, M, N, stride_ym, col0 + C0 + C1 + C2, C3, EL)


@gluon.jit
def _w_copies(w_descs, s_desc, z_desc, w0, w1, w2, w3, s_smem, z_smem, bar, it, st, col0, zcol0,
              C0: gl.constexpr, C1: gl.constexpr, C2: gl.constexpr, C3: gl.constexpr, SYM: gl.constexpr,
              ZTMA: gl.constexpr):  # fmt: skip
    d0, d1, d2, d3 = w_descs
    tma.async_copy_global_to_shared(d0, [it * 16, col0], bar, w0.index(st))
    if C1 > 0:
        tma.async_copy_global_to_shared(d1, [it * 16, col0 + C0], bar, w1.index(st))
    if C2 > 0:
        tma.async_copy_global_to_shared(d2, [it * 16, col0 + C0 + C1], bar, w2.index(st))
    if C3 > 0:
        tma.async_copy_global_to_shared(d3, [it * 16, col0 + C0 + C1 + C2], bar, w3.index(st))
    tma.async_copy_global_to_shared(s_desc, [it, col0], bar, s_smem.index(st))
    if ZTMA and not SYM:
        tma.async_copy_global_to_shared(z_desc, [it, zcol0], bar, z_smem.index(st))


@gluon.jit
def _xdst(x_smem, st, x_desc):
    """The first BMX rows of slot st (x's box; rows past it are never stored: padding rows of the A operand)."""
    BMX: gl.constexpr = x_desc.block_type.shape[0]
    return x_smem.index(st).slice(0, BMX, dim=0)


@gluon.jit
def _tct_producer(w_descs, x_desc, s_desc, z_desc, x_smem, w0, w1, w2, w3, s_smem, z_smem, ready, empty, col0,
                  zcol0, n_tiles, C0: gl.constexpr, C1: gl.constexpr, C2: gl.constexpr, C3: gl.constexpr,
                  STAGES: gl.constexpr, SYM: gl.constexpr, USE_GDC: gl.constexpr, ZTMA: gl.constexpr):  # fmt: skip
    d0, d1, d2, d3 = w_descs
    NB: gl.constexpr = (d0.block_type.nbytes + (d1.block_type.nbytes if C1 > 0 else 0)
                        + (d2.block_type.nbytes if C2 > 0 else 0) + (d3.block_type.nbytes if C3 > 0 else 0)
                        + s_desc.block_type.nbytes + (z_desc.block_type.nbytes if ZTMA and not SYM else 0)
                        + x_desc.block_type.nbytes)  # fmt: skip
    ggdc_wait_first(USE_GDC)  # PDL mode 3 (ablation): nothing before the wait
    npro = gl.minimum(n_tiles, STAGES)
    for it in range(npro):  # the ring's first STAGES tiles of weights: before the PDL wait
        mbarrier.expect(ready.index(it), NB)
        _w_copies(w_descs, s_desc, z_desc, w0, w1, w2, w3, s_smem, z_smem, ready.index(it), it, it, col0, zcol0,
                  C0, C1, C2, C3, SYM, ZTMA)  # fmt: skip
    ggdc_wait_prefetched(USE_GDC)  # x may be written by the previous kernel
    for it in range(npro):
        tma.async_copy_global_to_shared(x_desc, [0, it * 128], ready.index(it), _xdst(x_smem, it, x_desc))
    for it in range(npro, n_tiles):
        st = it % STAGES
        mbarrier.wait(empty.index(st), ((it // STAGES) & 1) ^ 1)
        bar = ready.index(st)
        mbarrier.expect(bar, NB)
        _w_copies(w_descs, s_desc, z_desc, w0, w1, w2, w3, s_smem, z_smem, bar, it, st, col0, zcol0, C0, C1, C2, C3,
                  SYM, ZTMA)  # fmt: skip
        tma.async_copy_global_to_shared(x_desc, [0, it * 128], bar, _xdst(x_smem, st, x_desc))


@gluon.jit
def _ws_cons(args, WID: gl.constexpr, consts):
    _tct_consumer(*args, WID, *consts)


@gluon.jit
def _ws_prod(pargs):
    _tct_producer(*pargs)


@gluon.jit
def _tct_kernel(
    d0, d1, d2, d3, x_desc, s_desc, z_desc, y_ptr, qz_ptr, M, N, K, stride_ym, stride_zg,
    UNITS: gl.constexpr, C0: gl.constexpr, C1: gl.constexpr, C2: gl.constexpr, C3: gl.constexpr, NC: gl.constexpr,
    STAGES: gl.constexpr, SYM: gl.constexpr, ZERO_OFFSET: gl.constexpr, IS_BF16: gl.constexpr,
    MMA: gl.constexpr, ADOT: gl.constexpr, BDOT: gl.constexpr, XB: gl.constexpr, WB: gl.constexpr,
    CONS_REGS: gl.constexpr, USE_GDC: gl.constexpr = 0, DIAG: gl.constexpr = 0, ZTMA: gl.constexpr = 0,
):  # fmt: skip
    ggdc_start(USE_GDC)
    pid = gl.program_id(0)
    col0 = pid * (UNITS * 8)
    zcol0 = pid * UNITS
    n_tiles = K // 128
    xdt: gl.constexpr = x_desc.dtype
    x_smem = gl.allocate_shared_memory(xdt, [STAGES, 16, 128], x_desc.layout)
    w0 = gl.allocate_shared_memory(gl.int32, [STAGES, 16, C0], d0.layout)
    w1 = gl.allocate_shared_memory(gl.int32, [STAGES, 16, C1 if C1 > 0 else 8], d1.layout)
    w2 = gl.allocate_shared_memory(gl.int32, [STAGES, 16, C2 if C2 > 0 else 8], d2.layout)
    w3 = gl.allocate_shared_memory(gl.int32, [STAGES, 16, C3 if C3 > 0 else 8], d3.layout)
    s_smem = gl.allocate_shared_memory(s_desc.dtype, [STAGES] + s_desc.block_type.shape, s_desc.layout)
    z_smem = gl.allocate_shared_memory(gl.int32, [STAGES] + z_desc.block_type.shape, z_desc.layout)
    RL: gl.constexpr = gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[1, 0])
    RN: gl.constexpr = NC
    r0 = gl.allocate_shared_memory(gl.float32, [RN, 16, C0], RL)
    r1 = gl.allocate_shared_memory(gl.float32, [RN, 16, C1 if C1 > 0 else 8], RL)
    r2 = gl.allocate_shared_memory(gl.float32, [RN, 16, C2 if C2 > 0 else 8], RL)
    r3 = gl.allocate_shared_memory(gl.float32, [RN, 16, C3 if C3 > 0 else 8], RL)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    done = gl.allocate_shared_memory(gl.int64, [1, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=1)  # each tile belongs to one consumer warp
    mbarrier.init(done.index(0), count=NC)  # every consumer warp puts its sums
    hopper.fence_async_shared()
    # the partitions' arguments as call arguments (a Gluon tuple assigned to a name loses its constexprs: quant_tcs)
    _ws(
        (x_smem, w0, w1, w2, w3, s_smem, z_smem, ready, empty, done, r0, r1, r2, r3, y_ptr, M, N, stride_ym, col0,
         n_tiles, qz_ptr, stride_zg),
        (NC, C0, C1, C2, C3, STAGES, SYM, ZERO_OFFSET, IS_BF16, USE_GDC, MMA, ADOT, BDOT, XB, WB, DIAG, ZTMA),
        ((d0, d1, d2, d3), x_desc, s_desc, z_desc, x_smem, w0, w1, w2, w3, s_smem, z_smem, ready, empty, col0, zcol0,
         n_tiles, C0, C1, C2, C3, STAGES, SYM, USE_GDC, ZTMA),
        (done, r0, r1, r2, r3, y_ptr, M, N, stride_ym, col0, NC, C0, C1, C2, C3, USE_GDC), NC, CONS_REGS)  # fmt: skip


@gluon.jit
def _ws_epi(eargs):
    _tct_epilogue(*eargs)


@gluon.jit
def _ws(cargs, cconst, pargs, eargs, NC: gl.constexpr, CONS_REGS: gl.constexpr):
    """The default partition (4 warps: the epilogue), NC single-warp consumers and the producer warp."""
    if NC == 1:
        gl.warp_specialize([(_ws_epi, (eargs,)), (_ws_cons, (cargs, 0, cconst)), (_ws_prod, (pargs,))], [1, 1],
                           [CONS_REGS, 24])  # fmt: skip
    elif NC == 2:
        gl.warp_specialize([(_ws_epi, (eargs,)), (_ws_cons, (cargs, 0, cconst)), (_ws_cons, (cargs, 1, cconst)),
                            (_ws_prod, (pargs,))], [1, 1, 1], [CONS_REGS, CONS_REGS, 24])  # fmt: skip
    else:
        gl.static_assert(NC == 4, "NC in (1, 2, 4): at 8 the 16-warp launch leaves the consumers 80 registers (spills)")
        gl.warp_specialize([(_ws_epi, (eargs,)), (_ws_cons, (cargs, 0, cconst)), (_ws_cons, (cargs, 1, cconst)),
                            (_ws_cons, (cargs, 2, cconst)), (_ws_cons, (cargs, 3, cconst)), (_ws_prod, (pargs,))],
                           [1, 1, 1, 1, 1], [CONS_REGS, CONS_REGS, CONS_REGS, CONS_REGS, 24])  # fmt: skip


def tct_layouts() -> dict:
    mma = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[1, 1], instr_shape=[16, 8])
    return dict(MMA=mma, ADOT=gl.DotOperandLayout(0, mma, 2), BDOT=gl.DotOperandLayout(1, mma, 2),
                XB=gl.BlockedLayout([1, 32], [8, 4], [1, 1], [1, 0]),
                WB=gl.BlockedLayout([4, 1], [4, 8], [1, 1], [0, 1]))  # fmt: skip


# Where asym zero words come from. Session 22's run 2: every asym launch with the zero-word row in the ring (ZTMA 1:
# a [1, 32] int32 TMA box a K tile) raised "illegal instruction", the diag build too (its consumers do no math, so
# the zero copy is the only asym-specific code it runs), while the sym launch passed. Likely cause (quant_hgemvt hit
# the same fault, see its _issue): the box starts at zero word zcol0 = pid * UNITS, not 16-byte aligned for odd UNITS
# (7B up: 11); a TMA box start off 16 bytes is an illegal instruction on the H200, not a descriptor error. ZTMA 0 (untested
# on the device) has the consumers load the zero words of each tile from global memory instead.
ZTMA_DEFAULT = 0

# launch register caps by consumer warps: the launch has 4 (epilogue) + NC + 1 (producer) warps, worker partitions
# padded to warpgroups (12 warps at NC = 4, 16 at NC = 8: 65536 / threads caps the launch's maxnreg, run 1's
# OutOfResources); setmaxnreg then gives the consumer warpgroup(s) CONS_REGS, the producer 24, the epilogue the rest
# (NC = 8, 16 warps at 128, spilled 4.5 KB offline whatever CONS_REGS asked: refused)
LAUNCH_REGS = {1: 232, 2: 232, 4: 168}
CONS_REGS = {1: 232, 2: 232, 4: 232}


def tct_args(x2: torch.Tensor, w: GPTQWeight, y: torch.Tensor, stages: int, nc: int, plan: TctPlan | None = None,
             sms: int = H200_SMS) -> tuple[tuple, tuple, dict]:  # fmt: skip
    """(grid, positional args, constexpr kwargs) of one launch (shared with the offline build)."""
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    m, k = x2.shape
    n = w.out_features
    if not tct_supported(w, k, m):
        raise ValueError("tct: 4-bit g128, no act-order, K % 128 == 0, N % 32 == 0, M <= 16, 16-byte rows")
    if (
        x2.dtype not in (torch.float16, torch.bfloat16)
        or x2.stride(1) != 1
        or (x2.stride(0) * 2) % 16
        or x2.data_ptr() % 16
    ):
        raise ValueError("tct: x must be fp16 / bf16 with 16-byte-aligned rows (its TMA descriptor)")
    if x2.shape[1] != w.in_features:
        raise ValueError(f"tct: x has {x2.shape[1]} columns, the weight's in_features is {w.in_features}")
    # stages a multiple of nc (>= 2): consumer w takes K tiles w, w + nc, ...; a slot's previous tile (it - stages) is
    # then its own, already consumed. Otherwise that tile is another consumer's and may still be in flight, and an
    # mbarrier's 1-bit phase parity lets a wait two phases ahead pass at once (it reads a slot not yet filled and
    # releases it twice). Seen on the H200: nc 4 with 3 stages, "unspecified launch failure".
    if nc not in LAUNCH_REGS or stages < max(2, nc) or stages % nc:
        raise ValueError(f"tct: 1, 2 or 4 consumer warps, stages a multiple of them and >= 2 (got {nc}, {stages})")
    plan = plan or plan_tct(n, sms)
    ch = plan.chunks + (0,) * (MAX_CHUNKS - len(plan.chunks))
    descs = []
    for c in ch:
        descs.append(TensorDescriptor.from_tensor(w.qweight, [BLOCK_K // 8, c or 8], smem_layout(2, 32)))
    sb, zb = sz_boxes(plan)
    s_desc = TensorDescriptor.from_tensor(w.scales, [1, sb], smem_layout(2, w.scales.element_size() * 8))
    z_desc = TensorDescriptor.from_tensor(w.qzeros, [1, zb], smem_layout(2, 32))
    x_desc = TensorDescriptor.from_tensor(x2, [box_rows(m), BLOCK_K], smem_layout(2, x2.element_size() * 8))
    args = (*descs, x_desc, s_desc, z_desc, y, w.qzeros, m, n, k, y.stride(0), w.qzeros.stride(0))
    consts = dict(UNITS=plan.units, C0=ch[0], C1=ch[1], C2=ch[2], C3=ch[3], NC=nc, STAGES=stages, SYM=w.sym,
                  ZERO_OFFSET=w.zero_offset, IS_BF16=x2.dtype == torch.bfloat16, CONS_REGS=CONS_REGS[nc],
                  **tct_layouts())  # fmt: skip
    return (plan.programs,), args, consts


def default_stages(plan: TctPlan, nc: int, budget: int = SMEM_BUDGET, most: int = 16) -> int:
    """The deepest ring (a multiple of nc, 2..most stages: see tct_args) whose program fits `budget` bytes of shared
    memory (0: none fits)."""
    fit = [s for s in range(max(2, nc), most + 1, nc) if smem_bytes(plan, s, nc) <= budget]
    return max(fit, default=0)


def launch_tct(x2: torch.Tensor, w: GPTQWeight, y: torch.Tensor, stages: int = 0, nc: int = 4,
               plan: TctPlan | None = None, diag: int = 0, ztma: int = ZTMA_DEFAULT) -> None:  # fmt: skip
    """y[M, N] = x2[M, K] @ W (CUDA sm_90); PDL inside kernels.pdl's scope (launch_kw). stages 0: default_stages.
    diag 1 (benches only, wrong results): the consumers only wait and release (the ring's stream alone). ztma (asym
    weights): 1 = the zero-word row travels in the ring by TMA, 0 = each consumer loads its tile's zero words from
    global memory (see ZTMA_DEFAULT)."""
    if x2.stride(1) != 1 or y.stride(1) != 1 or y.shape != (x2.shape[0], w.out_features):
        raise ValueError("tct: row-major x [M, K] and y [M, N]")
    plan = plan or plan_tct(w.out_features)
    if ztma and not w.sym and plan.units % 4:
        raise ValueError(f"tct: ZTMA 1 needs the zero box's start 16-byte aligned (units % 4 == 0, got {plan.units})")
    stages = stages or default_stages(plan, nc)
    if not stages:
        raise ValueError(
            f"tct: no ring of {nc} consumer warps' multiple fits {SMEM_BUDGET} bytes for {plan.block_n} columns"
        )
    grid, args, consts = tct_args(x2, w, y, stages, nc, plan)
    _tct_kernel[grid](
        *args, **consts, DIAG=diag, ZTMA=ztma, num_warps=4, maxnreg=LAUNCH_REGS[nc], **launch_kw(tensor_core=True)
    )


__all__ = ["TctPlan", "balance", "box_rows", "chunks_of", "default_stages", "sz_boxes", "launch_tct", "plan_tct", "smem_bytes", "tct_args",
           "tct_layouts", "tct_supported"]  # fmt: skip
