"""Offline sm_90 build of the warp-specialized large-M kernel (quant_tcw) on a machine without a GPU: registers,
spills, shared memory, wgmma count and ptxas warnings (sass_tcl.analyse).

Usage: PYTHONPATH=workers:bench/kernels python3 bench/kernels/sass_tcw.py "BM,STAGES[,SPLIT,PP,SLOTS]" ...  e.g. "256,3"
"""

from __future__ import annotations

import sys

import torch
import triton
from inlaid_worker.kernels import quant_tcw
from sass_tcl import analyse
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
from triton.runtime.jit import mangle_type

PTRS = dict(sc_ptr="*fp16", qz_ptr="*i32", y_ptr="*fp16", ws_ptr="*fp32", cnt_ptr="*i32")
ONES = ("stride_sn", "stride_zn", "stride_yn")  # specialised to 1 at launch
ALIGNED = ("stride_sg", "stride_zg", "stride_ym", "N", "K")  # multiples of 16 (7B)


def build(bm: int, stages: int, split: bool = True, pp: bool = True, slots: bool = True) -> dict:
    """Compiled _tcw_kernel for sm_90 as launch_tcw would specialise it (asym g128)."""
    fn = quant_tcw._tcw_kernel
    xl, wl = quant_tcw.smem_layouts()
    xd = TensorDescriptor.from_tensor(torch.empty(512, 4096, dtype=torch.float16), [bm, 128], xl)
    wd = TensorDescriptor.from_tensor(torch.empty(512, 11008, dtype=torch.int32), [16, 128], wl)
    consts = dict(GROUP=128, SYM=False, ZERO_OFFSET=1, USE_SPLIT=split, IS_BF16=False, STAGES=stages, BLOCK_M=bm, PP=pp, SLOTS=slots,
                  CONS_REGS=quant_tcw.CONSUMER_REGS, **quant_tcw.tcw_layouts(bm), **{name: 1 for name in ONES})  # fmt: skip
    descs = dict(x_desc=mangle_type(xd), w_desc=mangle_type(wd))
    sig = {a: "constexpr" if a in consts else descs.get(a) or PTRS.get(a, "i32") for a in fn.arg_names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(fn.arg_names) if a in PTRS or a in ALIGNED}
    src = GluonASTSource(fn, sig, constexprs=consts, attrs=attrs)
    ck = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4, maxnreg=quant_tcw.MAXNREG))
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
