"""Offline sm_90 build of quant_tct (session 22, helper B): registers, spills, shared memory (sass_tcl.analyse) on a
machine without a GPU. build() specialises a launch as launch_tct does (tct_args on CPU tensors).

Usage: PYTHONPATH=workers:bench/kernels python3 bench/kernels/s22_tct_sass.py "K,N,M,STAGES,NC[,SYM,BF16,GDC]" ...
"""

from __future__ import annotations

import sys

import torch
import triton
from inlaid_worker.kernels import quant_tct
from inlaid_worker.kernels.gptq_packing import GPTQWeight
from sass_tcl import analyse
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
from triton.runtime.jit import mangle_type


def weight(k: int, n: int, sym: bool, dtype: torch.dtype = torch.float16) -> GPTQWeight:
    qw = torch.zeros(k // 8, n, dtype=torch.int32)
    qz = torch.zeros(k // 128, n // 8, dtype=torch.int32)
    sc = torch.zeros(k // 128, n, dtype=dtype)
    return GPTQWeight(qw, qz, sc, None, 4, 128, sym, 1, k, n)


def build(
    k: int,
    n: int,
    m: int,
    stages: int,
    nc: int,
    sym: int = 0,
    bf16: int = 0,
    gdc: int = 0,
    diag: int = 0,
    ztma: int = quant_tct.ZTMA_DEFAULT,
) -> dict:
    dt = torch.bfloat16 if bf16 else torch.float16
    w = weight(k, n, bool(sym), dt)
    x = torch.zeros(m, k, dtype=dt)
    y = torch.zeros(m, n, dtype=dt)
    plan = quant_tct.plan_tct(n)
    stages = stages or quant_tct.default_stages(plan, nc)
    grid, args, consts = quant_tct.tct_args(x, w, y, stages, nc, plan)
    fn = quant_tct._tct_kernel
    consts = dict(consts, USE_GDC=gdc, DIAG=diag, ZTMA=ztma)
    names = fn.arg_names
    vals = dict(zip(names, args))
    sig = {}
    for a in names:
        if a in consts:
            sig[a] = "constexpr"
        elif a == "y_ptr":
            sig[a] = "*bf16" if bf16 else "*fp16"
        elif a == "qz_ptr":
            sig[a] = "*i32"
        elif a in vals and not isinstance(vals[a], int):
            sig[a] = mangle_type(vals[a])
        else:
            sig[a] = "i32"
    attrs = {
        (i,): [["tt.divisibility", 16]]
        for i, a in enumerate(names)
        if a in ("y_ptr", "qz_ptr", "N", "K", "stride_ym", "stride_zg")
    }
    src = GluonASTSource(fn, sig, constexprs=consts, attrs=attrs)
    ck = triton.compile(
        src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4, maxnreg=quant_tct.LAUNCH_REGS[nc])
    )
    return dict(
        ck.asm,
        warps=ck.metadata.num_warps,
        shared_bytes=ck.metadata.shared,
        grid=grid,
        consts=consts,
        stages=stages,
        plan=plan,
    )


def main() -> None:
    for arg in sys.argv[1:]:
        cfg = tuple(int(v) for v in arg.split(","))
        try:
            asm = build(*cfg)
            res = analyse(asm)
            res["mma"] = asm["ptx"].count("mma.sync")
            res["tma"] = asm["ptx"].count("cp.async.bulk.tensor")
            res["grid"] = asm["grid"]
            res["stages"] = asm["stages"]
            res["plan"] = asm["plan"]
            print(cfg, res, flush=True)
        except Exception as exc:  # noqa: BLE001 - reported per config
            print(cfg, "FAILED", repr(exc)[:4000], flush=True)


if __name__ == "__main__":
    main()
