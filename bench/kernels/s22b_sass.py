"""Session 22 (helper A2): offline sm_90 SASS of quant_hgemvt configs (no GPU needed): registers, spills, shared
memory, and the main loop's SASS instructions per packed word and thread, by opcode (the loop = the longest backward
branch's body; per box a thread dequantizes GB * 4 * BC * 4 / (32 * warps) words).

Usage: PYTHONPATH=workers:bench/kernels python3 bench/kernels/s22b_sass.py "K,N,M,bc,gb,stages,warps,grid,vec,ws" ...
       [--sym] [--dump]
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
from inlaid_worker.kernels import quant_hgemvt as T
from inlaid_worker.kernels.gptq_packing import GPTQWeight
from sass_tcl import BIN
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
from triton.runtime.jit import mangle_type


def build(n: int, k: int, m: int, cfg: T.HGEMVTConfig, sym: bool, gdc: int = 1):
    bm = T.block_m(m)
    g = k // 128
    w = GPTQWeight(torch.zeros(k // 8, n, dtype=torch.int32), torch.zeros(g, n // 8, dtype=torch.int32),
                   torch.zeros(g, n, dtype=torch.float16), None, 4, 128, sym, 1, k, n)  # fmt: skip
    descs = T.descriptors(w, cfg)
    T._DESCS.clear()  # the cache would hold this zero weight (tens of MB) for the rest of the process
    consts = dict(SYM=sym, ZERO_OFFSET=1, STAGES=cfg.stages, BM=bm, NXB=T.x_boxes(k, cfg.gb), USE_GDC=gdc,
                  NB=T.plan(n, k, m, cfg).nb, WS=cfg.ws,
                  **T.layouts(cfg.bc, cfg.gb, cfg.warps, bm, cfg.vec))  # fmt: skip
    fn = T._hgemvt_kernel
    names = ("w0", "w1", "w2", "w3", "s_desc", "z_desc")
    sig = {a: "constexpr" if a in consts else mangle_type(descs[names.index(a)]) if a in names
           else "*fp16" if a in ("x_ptr", "y_ptr") else "i32" for a in fn.arg_names}  # fmt: skip
    src = GluonASTSource(fn, sig, constexprs=consts, attrs={})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=cfg.warps, **T.compile_kw(cfg)))


def cubin_text(ck) -> tuple[str, str]:
    """(cuobjdump -res-usage, cuobjdump -sass) of a compiled kernel's cubin (Triton's wheel's cuobjdump)."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(ck.asm["cubin"])
        f.flush()
        res = subprocess.run([os.path.join(BIN, "cuobjdump"), "-res-usage", f.name], capture_output=True,
                             text=True).stdout  # fmt: skip
        sass = subprocess.run([os.path.join(BIN, "cuobjdump"), "-sass", f.name], capture_output=True, text=True).stdout
    return res, sass


def analyse(ck, words_per_thread: float, dump: bool = False) -> dict:
    res, sass = cubin_text(ck)
    code = [(int(mm.group(1), 16), mm.group(3))
            for mm in re.finditer(r"/\*([0-9a-f]{4})\*/\s+(@!?U?P\w+\s+)?([^;]+);", sass)]  # fmt: skip
    back = [(int(mm.group(1), 16), a) for a, ins in code if (mm := re.search(r"BRA (0x[0-9a-f]+)", ins))]

    # the box loop: the smallest backward-branch range holding the HFMA2 work (the consumer's inner loop; with a
    # producer warp the longest range is the partitions' dispatch, not the math)
    def hf(r):
        return sum(ins.startswith("HFMA2") for a, ins in code if r[0] <= a <= r[1])

    ranges = [(lo, hi) for lo, hi in back if lo < hi]
    most = max((hf(r) for r in ranges), default=0)
    loop = min((r for r in ranges if hf(r) >= most // 2 and most), key=lambda r: r[1] - r[0], default=None)
    body = [ins for a, ins in code if loop and loop[0] <= a <= loop[1]]
    ops = collections.Counter(ins.split()[0].split(".")[0] for ins in body)
    if dump:
        print("\n".join(body))
    regs = re.search(r"REG:(\d+)", res)
    return dict(regs=int(regs.group(1)) if regs else None, local="LOCAL:0" in res and "STACK:0" in res,
                shared=ck.metadata.shared, loop_instrs=len(body), per_word=round(len(body) / words_per_thread, 2),
                bar=ops.get("BAR", 0), ops={k: v for k, v in ops.most_common(12)})  # fmt: skip


def main() -> None:
    sym = "--sym" in sys.argv
    dump = "--dump" in sys.argv
    for arg in [a for a in sys.argv[1:] if not a.startswith("--")]:
        k, n, m, bc, gb, st, w, grid, vec, ws = (int(v) for v in arg.split(","))
        cfg = T.HGEMVTConfig(bc, gb, st, w, grid, vec, ws)
        why = T.config_ok(n, k, m, cfg)
        try:
            ck = build(n, k, m, cfg, sym)
            wpt = gb * 4 * bc * 4 / (32 * w)
            print(arg, cfg, why or "ok", analyse(ck, wpt, dump), flush=True)
        except Exception as exc:  # noqa: BLE001 - reported per config
            print(arg, cfg, "FAILED", repr(exc)[-1500:], flush=True)


if __name__ == "__main__":
    main()
