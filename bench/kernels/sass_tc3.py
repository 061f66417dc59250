"""Offline sm_90 build of the tensor-core kernels with 3-bit weights (quant_tcg kinds tc/tcf, quant_tcl kind tcl)
on a machine without a GPU: registers, spills, shared memory, and the K loop's local / shared-memory traffic,
next to the same config with 4-bit weights (bench/kernels/sass_tcl.py does the ptxas/cuobjdump part).

Usage: PYTHONPATH=workers python3 bench/kernels/sass_tc3.py "tcg,BM,BN,WARPS,DEPTH,FULL,BITS" "tcl,BM,BN,WARPS,STAGES,PIPE,BITS"
"""

from __future__ import annotations

import re
import sys

import triton
from inlaid_worker.kernels import quant_tcg, quant_tcl
from sass_tcl import ALIGNED, ONES, PTRS, analyse  # type: ignore[import-not-found]
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource


def _compile(fn: object, consts: dict, warps: int) -> dict:
    names = fn.arg_names  # type: ignore[attr-defined]
    ptrs = dict(PTRS, perm_ptr="*i32")
    sig = {a: "constexpr" if a in consts else ptrs.get(a, "i32") for a in names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(names) if a in ptrs or a in ALIGNED}
    ck = triton.compile(GluonASTSource(fn, sig, constexprs=consts, attrs=attrs), target=GPUTarget("cuda", 90, 32),
                        options=dict(num_warps=warps))  # fmt: skip
    return dict(ck.asm, shared_bytes=ck.metadata.shared)


def build_tcg(bm: int, bn: int, warps: int, depth: int, full: int, bits: int) -> dict:
    """_tcg_kernel as launch_tcg specialises it (asym g128 v1, split-K, nsub 1; 3-bit: x through its index)."""
    consts = dict(GROUP=128, SYM=False, ZERO_OFFSET=1, HAS_PERM=bits == 3, USE_SPLIT=True, IS_BF16=False,
                  FULL_DEQUANT=bool(full), DEPTH=depth if depth <= 2 else 0, NSUB=1, STAGES=depth if depth > 2 else 0,
                  BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=128, BITS=bits, **quant_tcg.tcg_layouts(bn, bm, warps),
                  **{name: 1 for name in ONES})  # fmt: skip
    return _compile(quant_tcg._tcg_kernel, consts, warps)


def build_tcl(bm: int, bn: int, warps: int, stages: int, pipe: int, bits: int) -> dict:
    consts = dict(GROUP=128, SYM=False, ZERO_OFFSET=1, USE_SPLIT=True, IS_BF16=False, PIPE=pipe, STAGES=stages,
                  BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=128, BITS=bits, **quant_tcl.tcl_layouts(bn, bm, warps),
                  **{name: 1 for name in ONES})  # fmt: skip
    return _compile(quant_tcl._tcl_kernel, consts, warps)


def main() -> None:
    for arg in sys.argv[1:]:
        kind, *rest = arg.split(",")
        cfg = tuple(int(v) for v in rest)
        try:
            asm = (build_tcg if kind == "tcg" else build_tcl)(*cfg)
            res = analyse(asm)
            res["ptx_shared_ld_st"] = len(re.findall(r"\b(?:ld|st)\.shared", asm["ptx"]))
            print(kind, cfg, res, flush=True)
        except Exception as exc:  # noqa: BLE001 - reported per config
            print(kind, cfg, "FAILED", repr(exc)[:3000], flush=True)


if __name__ == "__main__":
    main()
