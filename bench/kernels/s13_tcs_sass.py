"""Session 13: offline sm_90 build of quant_tcs (no GPU) with the ACC_SCALE switch (kinds tcsa / tcs2a): registers,
spills, shared memory, the consumer K loop's SASS instruction count (and its instruction mix), wgmma serialization
warnings. sass_tcs.build's specialisation (SPLIT is its USE_SPLIT flag) plus ACC_SCALE, which sass_tcs.build does not
pass (without it ACC_SCALE is a runtime argument and both K loops are built).

Usage: PYTHONPATH=workers:bench/kernels python3 bench/kernels/s13_tcs_sass.py \
    "BM,STAGES,NWG,ITERS,SPLIT,PIPE,ACC[,BF16,EARLY]" ...
"""

from __future__ import annotations

import collections
import re
import sys

import sass_tcs
import torch
import triton
from inlaid_worker.kernels import quant_tcs
from sass_tcl import analyse
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
from triton.runtime.jit import mangle_type


def build(bm: int, stages: int, nwg: int, iters: int, split: int = 1, pipe: int = 0, acc: int = 0,
          bf16: int = 0, early: int = 0) -> dict:  # fmt: skip
    fn = quant_tcs._tcs_kernel
    wd = TensorDescriptor.from_tensor(torch.empty(512, 11008, dtype=torch.int32), [16, 64 * nwg],
                                      quant_tcs.word_smem_layout())  # fmt: skip
    consts = dict(ITERS=iters, GROUP=128, SYM=False, ZERO_OFFSET=1, HAS_PERM=False, USE_SPLIT=bool(split),
                  SLOTS=False, IS_BF16=bool(bf16), STAGES=stages, BLOCK_M=bm, NWG=nwg, CONS_REGS=quant_tcs.CONS_REGS,
                  USE_GDC=0, DIAG=0, PIPE=pipe, ACC_SCALE=acc, EARLY_RELEASE=early, **sass_tcs.pipe_layout(bm, pipe),
                  **quant_tcs.tcs_layouts(bm), **{name: 1 for name in sass_tcs.ONES})  # fmt: skip
    ptrs = dict(sass_tcs.PTRS)
    if bf16:
        ptrs.update(x_ptr="*bf16", sc_ptr="*bf16", y_ptr="*bf16")
    sig = {a: "constexpr" if a in consts else ("w_desc" == a and mangle_type(wd)) or ptrs.get(a, "i32")
           for a in fn.arg_names}  # fmt: skip
    attrs = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(fn.arg_names) if a in ptrs or a in sass_tcs.ALIGNED}
    src = GluonASTSource(fn, sig, constexprs=consts, attrs=attrs)
    ck = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                        options=dict(num_warps=4, maxnreg=quant_tcs.LAUNCH_REGS[nwg]))  # fmt: skip
    return dict(ck.asm, shared_bytes=ck.metadata.shared)


def loop_mix(asm: dict) -> dict:
    """Opcode counts of the longest backward-branch loop (the consumer K loop)."""
    import os
    import subprocess
    import tempfile

    from sass_tcl import BIN

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
            res["mix"] = loop_mix(asm)
            print(cfg, res, flush=True)
        except Exception as exc:  # noqa: BLE001 - reported per config
            print(cfg, "FAILED", repr(exc)[:3000], flush=True)


if __name__ == "__main__":
    main()
