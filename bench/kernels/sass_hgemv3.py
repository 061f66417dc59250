"""Offline sm_90 build of the 3-bit half2 GEMV (quant_hgemv3) on a machine without a GPU: registers, stack
(spills) and the K loop's instruction mix (sass_hgemv.analyse), per config.

Usage: PYTHONPATH=workers:bench/kernels python3 bench/kernels/sass_hgemv3.py "BM,BN,BK,WARPS,ITERS[,AHEAD]" ...
"""

from __future__ import annotations

import sys

import triton
from inlaid_worker.kernels import quant_hgemv3
from sass_hgemv import ALIGNED, ONES, PTRS, analyse
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource


def build(bm: int, bn: int, bk: int, warps: int, iters: int, ahead: int = 1) -> bytes:
    """cubin of _hgemv3_kernel for sm_90 as launch_hgemv3 would specialise it (asym g128, no act-order)."""
    fn = quant_hgemv3._hgemv3_kernel
    consts = dict(GROUP=128, SYM=False, ZERO_OFFSET=1, HAS_PERM=False, USE_SPLIT=iters > 1, USE_ASM=True, AHEAD=ahead,
                  BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, **{name: 1 for name in ONES})  # fmt: skip
    sig = {a: "constexpr" if a in consts else PTRS.get(a, "i32") for a in fn.arg_names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(fn.arg_names) if a in PTRS or a in ALIGNED}
    src = ASTSource(fn, sig, constexprs=consts, attrs=attrs)
    opts = dict(num_warps=warps, num_stages=1)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=opts).asm["cubin"]


def main() -> None:
    for arg in sys.argv[1:]:
        cfg = tuple(int(v) for v in arg.split(","))
        res = analyse(build(*cfg))
        words = 3 * cfg[2] // 32 * cfg[1] / (32 * cfg[3])  # packed words per thread per K tile
        print(cfg, res, f"loop instructions per word {res['loop_instrs'] / words:.1f}", flush=True)


if __name__ == "__main__":
    main()
