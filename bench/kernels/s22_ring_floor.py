"""Session 22 (helper A): the PDL floor of a deep TMA ring. A pure read of the int4 GEMV's bytes (words + scales +
zeros) with exactly quant_hgemvt's program mapping and boxes (a persistent one-wave grid; program p owns a run of
column tiles over the full K; boxes of GB groups x BC columns as 4 word slabs + scales + zeros on one mbarrier), the
WHOLE ring (STAGES boxes) issued before griddepcontrol.wait, then each box waited for and its slot refilled (no
math). Timed iso (graph of launches over rotating weight copies > 3x L2) and as a PDL chain (the same graph captured
in kernels.pdl.scope(1): each launch may start while the previous one runs; its programs launch once all of the
previous kernel's programs have started, and need room beside them on the SM). One int per program is stored after
the wait (a slot's first word summed), so nothing is optimized away.
Imported by s22_hgemvt.py (phase "floor").
"""

from __future__ import annotations

import torch
from inlaid_worker.kernels import quant_hgemvt as T
from inlaid_worker.kernels.pdl import ggdc_start, ggdc_wait, launch_kw
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier


@gluon.jit
def _ring_read_kernel(w0, w1, w2, w3, s_desc, z_desc, out_ptr, TILES, NB, SYM: gl.constexpr, STAGES: gl.constexpr,
                      L: gl.constexpr, USE_GDC: gl.constexpr = 0):  # fmt: skip
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
    bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for st in gl.static_range(STAGES):
        mbarrier.init(bars.index(st), count=1)
    for st in gl.static_range(STAGES):
        T._issue(w0, w1, w2, w3, s_desc, z_desc, wring, sring, zring, bars, st, st, count, t_lo, NB, GB, BC, SYM)
    ggdc_wait(USE_GDC)
    tot = gl.zeros([GB, 4, BC], gl.int32, L)
    for i in range(count):
        s = i % STAGES
        mbarrier.wait(bars.index(s), (i // STAGES) & 1)
        tot += wring.index(4 * s).load(L)
        gl.thread_barrier()
        T._issue(w0, w1, w2, w3, s_desc, z_desc, wring, sring, zring, bars, s, i + STAGES, count, t_lo, NB, GB, BC, SYM)
    for st in gl.static_range(STAGES):
        mbarrier.invalidate(bars.index(st))
    gl.store(out_ptr + pid, gl.sum(gl.sum(gl.sum(tot, axis=2), axis=1), axis=0))


def launch_read(w, cfg: T.HGEMVTConfig, out: torch.Tensor) -> None:
    p = T.plan(w.out_features, w.in_features, 1, cfg)
    _ring_read_kernel[(p.programs,)](*T.descriptors(w, cfg), out, p.tiles, p.nb, SYM=w.sym, STAGES=cfg.stages,
                                     L=gl.BlockedLayout([1, 1, 1], [1, 4, 8], [cfg.warps, 1, 1], [2, 1, 0]), num_warps=cfg.warps, **launch_kw())  # fmt: skip


def floor_configs(n: int, k: int) -> list[T.HGEMVTConfig]:
    """Ring sizes ~32 / 64 / 96 / 112 / 160 KB at boxes of ~8.5 KB (bc 8 gb 16, bc 32 gb 4) and 17 KB (bc 32 gb 8);
    one and two programs per SM. S22_SET=next: without the bc 8 boxes (32-byte rows: slow in call 3)."""
    import os

    if os.environ.get("S22_SET") == "b2":  # (call 2: no floors)
        return []
    if os.environ.get("S22_SET") == "b":  # helper A2: the call-3 best two at 7B up, and gb 16 boxes (3 stages)
        return [T.HGEMVTConfig(32, 8, 4, 4, 2, 4, 0), T.HGEMVTConfig(32, 8, 7, 4, 1, 4, 0),
                T.HGEMVTConfig(32, 16, 3, 4, 1, 4, 0)]  # fmt: skip
    out = []
    boxes = ((32, 4), (32, 8)) if os.environ.get("S22_SET") == "next" else ((8, 16), (32, 4), (32, 8))
    for bc, gb in boxes:
        box = T.plan(n, k, 1, T.HGEMVTConfig(bc, gb, 1, 4, 1)).box_bytes
        for kb in (32, 64, 96, 112, 160):
            st = max(2, round(kb * 1024 / box))
            out.append(T.HGEMVTConfig(bc, gb, st, 4, 1))
            if kb <= 96:
                out.append(T.HGEMVTConfig(bc, gb, st, 4, 2))
    return out
