"""Offline sm_90 build of the large-M Gluon kernel (quant_tcl) on a machine without a GPU: registers, stack
(spills), shared memory and ptxas's wgmma warnings, from the ptxas/cuobjdump in Triton's wheel.

Usage: PYTHONPATH=workers python3 bench/kernels/sass_tcl.py "BM,BN,WARPS,STAGES,PIPE" ...  e.g. "256,128,8,3,1"
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

import triton
from inlaid_worker.kernels import quant_tcl
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource

BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
PTRS = dict(x_ptr="*fp16", qw_ptr="*i32", sc_ptr="*fp16", qz_ptr="*i32", y_ptr="*fp16", ws_ptr="*fp32",
            cnt_ptr="*i32")  # fmt: skip
ONES = ("stride_qn", "stride_sn", "stride_zn", "stride_yn")  # specialised to 1 at launch
ALIGNED = ("stride_xm", "stride_qk", "stride_sg", "stride_zg", "stride_ym", "N", "K")  # multiples of 16 (7B)


def build(bm: int, bn: int, warps: int, stages: int, pipe: int) -> dict:
    """Compiled kernel of _tcl_kernel for sm_90 as launch_tcl would specialise it (asym g128, split-K)."""
    fn = quant_tcl._tcl_kernel
    consts = dict(GROUP=128, SYM=False, ZERO_OFFSET=1, USE_SPLIT=True, IS_BF16=False, PIPE=pipe,
                  STAGES=stages, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=128, **quant_tcl.tcl_layouts(bn, bm, warps),
                  **{name: 1 for name in ONES})  # fmt: skip
    sig = {a: "constexpr" if a in consts else PTRS.get(a, "i32") for a in fn.arg_names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(fn.arg_names) if a in PTRS or a in ALIGNED}
    src = GluonASTSource(fn, sig, constexprs=consts, attrs=attrs)
    ck = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps))
    return dict(ck.asm, shared_bytes=ck.metadata.shared)


def analyse(asm: dict) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".ptx", mode="w") as f:
        f.write(asm["ptx"])
        f.flush()
        ptxas = subprocess.run([os.path.join(BIN, "ptxas"), "-arch=sm_90a", "-v", f.name, "-o", "/dev/null"],
                               capture_output=True, text=True)  # fmt: skip
    info = ptxas.stderr
    regs = re.search(r"Used (\d+) registers", info)
    spill = re.search(r"(\d+) bytes spill stores", info)
    smem = re.search(r"(\d+) bytes smem", info)
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(asm["cubin"])
        f.flush()
        sass = subprocess.run([os.path.join(BIN, "cuobjdump"), "-sass", f.name], capture_output=True, text=True,
                              check=True).stdout  # fmt: skip
    code = [
        (int(m.group(1), 16), m.group(3)) for m in re.finditer(r"/\*([0-9a-f]{4})\*/\s+(@!?U?P\w+\s+)?([^;]+);", sass)
    ]
    back = [(int(m.group(1), 16), a) for a, ins in code if (m := re.search(r"BRA (0x[0-9a-f]+)", ins))]
    loop = max(((lo, hi) for lo, hi in back if lo < hi), key=lambda r: r[1] - r[0], default=None)
    body = [ins.split()[0] for a, ins in code if loop and loop[0] <= a <= loop[1]]
    warn = sorted({ln.strip()[:160] for ln in info.splitlines() if "warning" in ln.lower()})
    return dict(regs=int(regs.group(1)) if regs else None, spill_stores=int(spill.group(1)) if spill else None,
                smem_static=int(smem.group(1)) if smem else None,
                smem=asm["shared_bytes"], wgmma=asm["ptx"].count("wgmma.mma_async"),
                loop_instrs=len(body), loop_local=sum(i.startswith(("STL", "LDL")) for i in body),
                loop_wgmma=sum(i.startswith("HGMMA") for i in body), loop_bar=sum(i.startswith("BAR") for i in body),
                warnings=warn)  # fmt: skip


def main() -> None:
    for arg in sys.argv[1:]:
        cfg = tuple(int(v) for v in arg.split(","))
        try:
            print(cfg, analyse(build(*cfg)), flush=True)
        except Exception as exc:  # noqa: BLE001 - reported per config
            print(cfg, "FAILED", repr(exc)[:3000], flush=True)


if __name__ == "__main__":
    main()
