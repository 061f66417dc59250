"""Session 22 (helper A) diagnosis of call 1's "illegal instruction": the ring-read floor's issue with parts switched
off (PARTS bit 0: the 4 word slabs, bit 1: scales, bit 2: zeros; SLABS: word slabs issued), one launch per process.
Usage: PYTHONPATH=workers:bench/kernels python3 bench/kernels/s22_ring_diag.py PARTS SLABS BC GB STAGES"""

import sys

import torch
from gemv_h200 import make_weight
from inlaid_worker.kernels import quant_hgemvt as T
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma


@gluon.jit
def _diag(w0, w1, w2, w3, s_desc, z_desc, out_ptr, TILES, NB, STAGES: gl.constexpr, PARTS: gl.constexpr,
          SLABS: gl.constexpr):  # fmt: skip
    GB: gl.constexpr = w0.block_type.shape[0]
    BC: gl.constexpr = w0.block_type.shape[2]
    ZBW: gl.constexpr = z_desc.block_type.shape[1]
    pid = gl.program_id(0)
    nprog = gl.num_programs(0)
    t_lo = pid * TILES // nprog
    count = ((pid + 1) * TILES // nprog - t_lo) * NB
    wring = gl.allocate_shared_memory(gl.int32, [STAGES * 4, GB, 4, BC], w0.layout)
    sring = gl.allocate_shared_memory(gl.float16, [STAGES, GB, BC], s_desc.layout)
    zring = gl.allocate_shared_memory(gl.int32, [STAGES, GB, ZBW], z_desc.layout)
    bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for st in gl.static_range(STAGES):
        mbarrier.init(bars.index(st), count=1)
    NBY: gl.constexpr = (
        (SLABS * w0.block_type.nbytes if PARTS % 2 else 0)
        + (s_desc.block_type.nbytes if (PARTS // 2) % 2 else 0)
        + (z_desc.block_type.nbytes if PARTS >= 4 else 0)
    )
    for i in range(count):
        s = i % STAGES
        col = (t_lo + i // NB) * BC
        g0 = (i % NB) * GB
        mbarrier.expect(bars.index(s), NBY)
        if PARTS % 2:
            tma.async_copy_global_to_shared(w0, [g0, 0, col], bars.index(s), wring.index(4 * s + 0))
            if SLABS > 1:
                tma.async_copy_global_to_shared(w1, [g0, 0, col], bars.index(s), wring.index(4 * s + 1))
                tma.async_copy_global_to_shared(w2, [g0, 0, col], bars.index(s), wring.index(4 * s + 2))
                tma.async_copy_global_to_shared(w3, [g0, 0, col], bars.index(s), wring.index(4 * s + 3))
        if (PARTS // 2) % 2:
            tma.async_copy_global_to_shared(s_desc, [g0, col], bars.index(s), sring.index(s))
        if PARTS >= 4:
            tma.async_copy_global_to_shared(z_desc, [g0, col // 8], bars.index(s), zring.index(s))
        mbarrier.wait(bars.index(s), (i // STAGES) & 1)
    gl.store(out_ptr + pid, count)


def main() -> None:
    parts, slabs, bc, gb, st = (int(a) for a in sys.argv[1:6])
    k, n = 4096, 11008
    w = make_weight(k, n, 4, False)
    cfg = T.HGEMVTConfig(bc, gb, st, 4, 1)
    p = T.plan(n, k, 1, cfg)
    out = torch.zeros(p.programs, dtype=torch.int32, device="cuda")
    try:
        _diag[(p.programs,)](*T.descriptors(w, cfg), out, p.tiles, p.nb, STAGES=st, PARTS=parts, SLABS=slabs,
                             num_warps=4)  # fmt: skip
        torch.cuda.synchronize()
        print("DIAG", sys.argv[1:6], "ok", int(out.sum()), p.tiles * p.nb, flush=True)
    except Exception as exc:  # noqa: BLE001
        print("DIAG", sys.argv[1:6], "FAIL", repr(exc)[:160], flush=True)


if __name__ == "__main__":
    main()
