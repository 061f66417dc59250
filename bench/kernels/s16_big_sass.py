"""Session 16b (issue 4, int4 GEMM at M = 17..64): offline sm_90 build of quant_tcs at block_m 32 / 64 with a chosen
x staging depth (XCH: x tiles in flight per warpgroup, quant_tcs.X_CHUNK) and the launch's register caps: registers,
spills, shared memory (s16_mid_sass.build16 with quant_tcs.X_CHUNK[BM] set: tcs_layouts hands XCH to the build).

Usage: PYTHONPATH=workers:bench/kernels python3 bench/kernels/s16_big_sass.py "BM,STAGES,NWG,ITERS,PIPE,ACC,SZ,XCH" ...
"""

from __future__ import annotations

import sys

from inlaid_worker.kernels import quant_tcs
from s16_mid_sass import build16
from sass_tcl import analyse


def build_xch(bm: int, stages: int, nwg: int, iters: int, pipe: int, acc: int, sz: int, xch: int) -> dict:
    saved = quant_tcs.X_CHUNK[bm]
    quant_tcs.X_CHUNK[bm] = xch
    try:
        return build16(bm, stages, nwg, iters, pipe, acc, sz)
    finally:
        quant_tcs.X_CHUNK[bm] = saved


def main() -> None:
    for arg in sys.argv[1:]:
        cfg = tuple(int(v) for v in arg.split(","))
        try:
            asm = build_xch(*cfg)
            res = analyse(asm)
            print(cfg, {k: res[k] for k in ("spill_stores", "loop_local", "loop_wgmma", "warnings") if k in res},
                  "regs", asm.get("n_regs", res.get("registers")), "shared", asm["shared_bytes"], flush=True)
        except Exception as exc:  # noqa: BLE001 - reported per config
            print(cfg, "FAILED", repr(exc)[:2000], flush=True)


if __name__ == "__main__":
    main()
