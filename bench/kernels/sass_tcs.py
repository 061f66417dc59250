"""Offline sm_90 build of the small-M TMA-ring GEMV (quant_tcs) on a machine without a GPU: registers, spills, shared
memory, wgmma / TMA counts and ptxas warnings (sass_tcl.analyse).

Usage: PYTHONPATH=workers:bench/kernels python3 bench/kernels/sass_tcs.py \
    "BM,STAGES,NWG,ITERS[,SPLIT,SLOTS,PERM,SYM,GDC,DIAG,PIPE]" ...   (PIPE 1 = kind tcs2)
"""

from __future__ import annotations

import sys

import torch
import triton
from inlaid_worker.kernels import quant_tcs
from sass_tcl import analyse
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
from triton.runtime.jit import mangle_type

PTRS = dict(
    x_ptr="*fp16", perm_ptr="*i32", sc_ptr="*fp16", qz_ptr="*i32", y_ptr="*fp16", ws_ptr="*fp32", cnt_ptr="*i32"
)
ONES = ("stride_xk", "stride_sn", "stride_zn", "stride_yn")  # specialised to 1 at launch
ALIGNED = ("stride_xm", "stride_sg", "stride_zg", "stride_ym", "N", "K")  # multiples of 16 (7B)


def pipe_layout(bm: int, pipe: int) -> dict:
    """PIPE's half-tile operand layout (launch_tcs passes it for the PIPE kinds; None otherwise)."""
    from inlaid_worker.kernels.quant_tcg import tcg_layouts

    return dict(L5H=tcg_layouts(quant_tcs.WG_N, bm, 4)["L5H"] if pipe else None)


def build(bm: int, stages: int, nwg: int, iters: int, split: int = 1, slots: int = 0, perm: int = 0, sym: int = 0,
          gdc: int = 0, diag: int = 0, pipe: int = 0) -> dict:  # fmt: skip
    """Compiled _tcs_kernel for sm_90 as launch_tcs would specialise it (g128)."""
    fn = quant_tcs._tcs_kernel
    wd = TensorDescriptor.from_tensor(torch.empty(512, 11008, dtype=torch.int32), [16, 64 * nwg],
                                      quant_tcs.word_smem_layout())  # fmt: skip
    consts = dict(ITERS=iters, GROUP=128, SYM=bool(sym), ZERO_OFFSET=1, HAS_PERM=bool(perm), USE_SPLIT=bool(split),
                  SLOTS=bool(slots), IS_BF16=False, STAGES=stages, BLOCK_M=bm, NWG=nwg,
                  CONS_REGS=quant_tcs.CONS_REGS, USE_GDC=gdc, DIAG=diag, PIPE=pipe, **pipe_layout(bm, pipe),
                  **quant_tcs.tcs_layouts(bm),
                  **{name: 1 for name in ONES})  # fmt: skip
    sig = {a: "constexpr" if a in consts else ("w_desc" == a and mangle_type(wd)) or PTRS.get(a, "i32")
           for a in fn.arg_names}  # fmt: skip
    attrs = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(fn.arg_names) if a in PTRS or a in ALIGNED}
    src = GluonASTSource(fn, sig, constexprs=consts, attrs=attrs)
    ck = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                        options=dict(num_warps=4, maxnreg=quant_tcs.LAUNCH_REGS[nwg]))  # fmt: skip
    return dict(ck.asm, shared_bytes=ck.metadata.shared)


def main() -> None:
    for arg in sys.argv[1:]:
        cfg = tuple(int(v) for v in arg.split(","))
        try:
            asm = build(*cfg)
            res = analyse(asm)
            res["setmaxnreg"] = sorted(set(ln.strip() for ln in asm["ptx"].splitlines() if "setmaxnreg" in ln))
            res["tma"] = asm["ptx"].count("cp.async.bulk.tensor")
            print(cfg, res, flush=True)
        except Exception as exc:  # noqa: BLE001 - reported per config
            print(cfg, "FAILED", repr(exc)[:3000], flush=True)


if __name__ == "__main__":
    main()
