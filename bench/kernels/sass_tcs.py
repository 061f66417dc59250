"""Offline sm_90 build of the small-M TMA-ring GEMV (quant_tcs) on a machine without a GPU: registers, spills, shared
memory, wgmma / TMA counts and ptxas warnings (sass_tcl.analyse), and the consumer K loops' SASS instruction mix
(loop_mix). build specialises every switch launch_tcs sets, ACC_SCALE and EARLY_RELEASE included (a switch left out
would be a runtime argument, with both of its paths built); s13_tcs_sass.py is a CLI over it with session 13's
argument order; tests/kernels/test_quant_tcs.py builds through it.

Usage: PYTHONPATH=workers:bench/kernels python3 bench/kernels/sass_tcs.py \
    "BM,STAGES,NWG,ITERS[,SPLIT,SLOTS,PERM,SYM,GDC,DIAG,PIPE,ACC,BF16,EARLY]" ...
    (PIPE 1 = kind tcs2, ACC 1 = tcsa, both = tcs2a; BF16 1 = bf16 x / scales / y; EARLY 1 = bench kind tcs0)
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import tempfile

import torch
import triton
from inlaid_worker.kernels import quant_tcs
from sass_tcl import BIN, analyse
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
          gdc: int = 0, diag: int = 0, pipe: int = 0, acc: int = 0, bf16: int = 0, early: int = 0,
          sz: int = 0) -> dict:  # fmt: skip
    """Compiled _tcs_kernel for sm_90 as launch_tcs would specialise it (g128; split: its USE_SPLIT flag; sz: SZ_MODE,
    session 14: 2 = scale / zero rows by TMA, with their descriptors)."""
    fn = quant_tcs._tcs_kernel
    launch_regs, cons_regs = quant_tcs.tcs_regs(bm, nwg)  # (block_m 64: WIDE_REGS, as launch_tcs)
    wd = TensorDescriptor.from_tensor(torch.empty(512, 11008, dtype=torch.int32), [16, 64 * nwg],
                                      quant_tcs.word_smem_layout())  # fmt: skip
    consts = dict(ITERS=iters, GROUP=128, SYM=bool(sym), ZERO_OFFSET=1, HAS_PERM=bool(perm), USE_SPLIT=bool(split),
                  SLOTS=bool(slots), IS_BF16=bool(bf16), STAGES=stages, BLOCK_M=bm, NWG=nwg,
                  CONS_REGS=cons_regs, USE_GDC=gdc, DIAG=diag, PIPE=pipe, ACC_SCALE=acc,
                  EARLY_RELEASE=early, SZ_MODE=sz, **pipe_layout(bm, pipe), **quant_tcs.tcs_layouts(bm),
                  **{name: 1 for name in ONES})  # fmt: skip
    ptrs = dict(PTRS, x_ptr="*bf16", sc_ptr="*bf16", y_ptr="*bf16") if bf16 else PTRS
    descs = dict(w_desc=wd)
    if sz == 2:  # SZ_MODE 2's scale / zero descriptors (7B up's 32 groups x 11008 columns)
        sc = torch.empty(32, 11008, dtype=torch.bfloat16 if bf16 else torch.float16)
        descs["s_desc"], descs["z_desc"] = quant_tcs.sz_descriptors(
            sc, torch.empty(32, 11008 // 8, dtype=torch.int32), iters)
    sig = {a: "constexpr" if a in consts else (a in descs and mangle_type(descs[a])) or ptrs.get(a, "i32")
           for a in fn.arg_names}  # fmt: skip
    attrs = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(fn.arg_names) if a in ptrs or a in ALIGNED}
    src = GluonASTSource(fn, sig, constexprs=consts, attrs=attrs)
    ck = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                        options=dict(num_warps=4, maxnreg=launch_regs))  # fmt: skip
    return dict(ck.asm, shared_bytes=ck.metadata.shared)


def loop_mix(asm: dict) -> dict:
    """Opcode counts of the consumer K loops: the innermost backward-branch loops holding a wgmma (kloop0, ...)."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(asm["cubin"])
        f.flush()
        sass = subprocess.run([os.path.join(BIN, "cuobjdump"), "-sass", f.name], capture_output=True, text=True,
                              check=True).stdout  # fmt: skip
    code = [(int(m.group(1), 16), m.group(3))
            for m in re.finditer(r"/\*([0-9a-f]{4})\*/\s+(@!?U?P\w+\s+)?([^;]+);", sass)]  # fmt: skip
    back = [(int(m.group(1), 16), a) for a, ins in code if (m := re.search(r"BRA (0x[0-9a-f]+)", ins))]
    loops = sorted((lo, hi) for lo, hi in back if lo < hi)

    def body(lo: int, hi: int) -> list[str]:
        return [ins.split()[0].split(".")[0] for a, ins in code if lo <= a <= hi]

    # the innermost loops holding a wgmma: each consumer warpgroup's K loop
    k_loops = [
        r
        for r in loops
        if "HGMMA" in body(*r)
        and not any(o != r and r[0] <= o[0] and o[1] <= r[1] and "HGMMA" in body(*o) for o in loops)
    ]
    out = {}
    for i, r in enumerate(k_loops):
        b = body(*r)
        out[f"kloop{i}"] = dict(n=len(b), mix=dict(collections.Counter(b).most_common(16)))
    return out


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
