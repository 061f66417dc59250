"""Session 16 (issue 4, int4 GEMM at M = 17..64): offline sm_90 build of quant_tcs at block_m 32 / 64 (no GPU) with the
launch's register caps of quant_tcs.tcs_regs (or overridden): registers, spills, shared memory, K-loop instructions
(sass_tcs.build / sass_tcl.analyse).

Usage: PYTHONPATH=workers:bench/kernels python3 bench/kernels/s16_mid_sass.py \
    "BM,STAGES,NWG,ITERS,PIPE,ACC,SZ[,LAUNCH_REGS,CONS_REGS]" ...
    (tcs2a = PIPE 1 ACC 1 SZ 0; tcsat = PIPE 0 ACC 1 SZ 2; split-K on)
"""

from __future__ import annotations

import sys

from inlaid_worker.kernels import quant_tcs
from sass_tcl import analyse
from sass_tcs import build


def build16(bm: int, stages: int, nwg: int, iters: int, pipe: int, acc: int, sz: int, launch: int = 0,
            cons: int = 0) -> dict:  # fmt: skip
    """sass_tcs.build with quant_tcs's register caps for this block_m (sass_tcs reads the module globals)."""
    lr, cr = quant_tcs.tcs_regs(bm, nwg)
    saved = quant_tcs.CONS_REGS, dict(quant_tcs.LAUNCH_REGS)
    quant_tcs.CONS_REGS, quant_tcs.LAUNCH_REGS[nwg] = cons or cr, launch or lr
    try:
        return build(bm, stages, nwg, iters, 1, pipe=pipe, acc=acc, sz=sz)
    finally:
        quant_tcs.CONS_REGS, quant_tcs.LAUNCH_REGS = saved[0], saved[1]


def main() -> None:
    for arg in sys.argv[1:]:
        cfg = tuple(int(v) for v in arg.split(","))
        try:
            asm = build16(*cfg)
            res = analyse(asm)
            res["setmaxnreg"] = sorted({ln.split()[-1] for ln in asm["ptx"].splitlines() if "setmaxnreg" in ln})
            print(cfg, res, flush=True)
        except Exception as exc:  # noqa: BLE001 - reported per config
            print(cfg, "FAILED", repr(exc)[:2000], flush=True)


if __name__ == "__main__":
    main()
