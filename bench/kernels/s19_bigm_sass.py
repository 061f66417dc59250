"""Session 19 helper H2 (issue 4): offline sm_90 build of quant_tcsxk (the stream-K tcsx grid; no GPU): registers,
spills, shared memory, ptxas warnings and the consumer loops' release order, as s17_tcsx_sass.py does for quant_tcsx.
DIAG 0 / ORDER 1 builds the package kernel (the shipped path); any other DIAG / ORDER, or --variant (build's
variant=True), the bench-only variant (tcsxk_diag.py): at DIAG 0 / ORDER 1 its PTX is the package kernel's but for the
entry name (test_quant_tcsxk.py's test_bench_diag_variant_compiles_to_the_shipped_ptx).
Usage: PYTHONPATH=workers:bench/kernels python3 bench/kernels/s19_bigm_sass.py [--variant] "BM,STAGES,NWG[,DIAG,BF16,SYM,GDC,SLOTS,ORDER]" ...
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import triton
from inlaid_worker.kernels import quant_tcsx, quant_tcsxk
from sass_tcl import analyse
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
from triton.runtime.jit import mangle_type

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "workers" / "tests" / "kernels"))
from tcs_ptx_order import early_releases, k_loops  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tcsxk_diag  # noqa: E402

PTRS = dict(sc_ptr="*fp16", qz_ptr="*i32", y_ptr="*fp16", ws_ptr="*fp32", cnt_ptr="*i32")
ONES = ("stride_sn", "stride_zn", "stride_yn")
ALIGNED = ("stride_sg", "stride_zg", "stride_ym", "N")


def build(bm: int, stages: int, nwg: int, diag: int = 0, bf16: int = 0, sym: int = 0, gdc: int = 0, slots: int = 0,
          order: int = 1, k: int = 4096, n: int = 11008, variant: bool = False) -> dict:  # fmt: skip
    """variant: the bench variant (tcsxk_diag.py) even at DIAG 0 / ORDER 1 (else the shipped kernel there)."""
    shipped = diag == 0 and order == 1 and not variant
    fn = quant_tcsxk._tcsxk_kernel if shipped else tcsxk_diag._tcsxk_diag_kernel
    lr, cr = quant_tcsx.tcsx_regs(bm, nwg)
    dt = torch.bfloat16 if bf16 else torch.float16
    xd = TensorDescriptor.from_tensor(torch.empty(bm, k, dtype=dt), [bm, 128], quant_tcsx.x_smem_layout())
    wd = TensorDescriptor.from_tensor(torch.empty(k // 8, n, dtype=torch.int32), [16, 64 * nwg],
                                      quant_tcsx.word_smem_layout())  # fmt: skip
    lay = quant_tcsx.tcs_layouts(bm)
    consts = dict(GROUP=128, SYM=bool(sym), ZERO_OFFSET=1, IS_BF16=bool(bf16), STAGES=stages, BLOCK_M=bm, NWG=nwg,
                  CONS_REGS=cr, MMA=lay["MMA"], DOT=lay["DOT"], L5=lay["L5"], L4=lay["L4"], D2=lay["D2"],
                  USE_GDC=gdc, SLOTS=slots, **{name: 1 for name in ONES})  # fmt: skip
    if not shipped:
        consts.update(DIAG=diag, ORDER=order)
    ptrs = dict(PTRS, sc_ptr="*bf16", y_ptr="*bf16") if bf16 else PTRS
    descs = dict(x_desc=xd, w_desc=wd)
    sig = {a: "constexpr" if a in consts else (a in descs and mangle_type(descs[a])) or ptrs.get(a, "i32")
           for a in fn.arg_names}  # fmt: skip
    attrs = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(fn.arg_names) if a in ptrs or a in ALIGNED}
    src = GluonASTSource(fn, sig, constexprs=consts, attrs=attrs)
    ck = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4, maxnreg=lr))
    return dict(ck.asm, shared_bytes=ck.metadata.shared, regs=(lr, cr))


def main() -> None:
    variant = "--variant" in sys.argv[1:]
    for arg in (a for a in sys.argv[1:] if a != "--variant"):
        cfg = tuple(int(v) for v in arg.split(","))
        try:
            asm = build(*cfg, variant=variant)
            res = analyse(asm)
            loops = k_loops(asm["ptx"])
            res.update(shared_bytes=asm["shared_bytes"], regs_caps=asm["regs"], k_loops=len(loops),
                       early_releases=[early_releases(lp) for lp in loops])  # fmt: skip
            print(cfg, res, flush=True)
        except Exception as exc:  # noqa: BLE001 - reported per config
            print(cfg, "FAILED", repr(exc)[:3000], flush=True)


if __name__ == "__main__":
    main()
