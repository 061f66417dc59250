"""Offline sm_90 SASS of the small-M tensor-core GEMVs (quant_tcg "tc"/"tc2", quant_tcv "tcv"/"tcv2") on a machine
without a GPU: registers, spills, shared memory, and the K loop's instructions per packed word and thread, by opcode
(ptxas/cuobjdump from Triton's wheel, as bench/kernels/sass_tcl.py). Session 11 (NOTES row "tcv").

Usage: PYTHONPATH=workers python3 bench/kernels/s11_sass.py "tcg,BM,BN,WARPS,STAGES,NSUB" "tcv,BM,BN,WARPS,DEPTH,NSUB,ITERS,DEQ"
       add --dump to print the loop body.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import tempfile

import triton
from inlaid_worker.kernels import quant_tcg, quant_tcv
from sass_tcl import ALIGNED, BIN, ONES, PTRS, analyse  # type: ignore[import-not-found]
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource

SPEC1 = (*ONES, "stride_xk")  # strides equal to 1 at launch (Triton specialises them)


def _compile(fn: object, consts: dict, warps: int) -> object:
    names = fn.arg_names  # type: ignore[attr-defined]
    ptrs = dict(PTRS, perm_ptr="*i32")
    sig = {a: "constexpr" if a in consts else ptrs.get(a, "i32") for a in names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(names) if a in ptrs or a in ALIGNED}
    return triton.compile(GluonASTSource(fn, sig, constexprs=consts, attrs=attrs), target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=warps))  # fmt: skip


def build(kind: str, cfg: tuple[int, ...]) -> tuple[object, int, int]:
    """(compiled kernel, packed words a thread dequantizes per loop iteration, warps)."""
    common = dict(GROUP=128, SYM=False, ZERO_OFFSET=1, HAS_PERM=False, USE_SPLIT=True, IS_BF16=False, USE_GDC=0,
                  **{n: 1 for n in SPEC1})  # fmt: skip
    if kind == "tcg":
        bm, bn, warps, st, nsub = cfg
        consts = dict(
            common,
            FULL_DEQUANT=False,
            DEPTH=st if st <= 2 else 0,
            NSUB=nsub,
            STAGES=st if st > 2 else 0,
            BLOCK_M=bm,
            BLOCK_N=bn,
            BLOCK_K=128,
            BITS=4,
            RING=0,
            **quant_tcg.tcg_layouts(bn, bm, warps),
        )
        fn = quant_tcg._tcg_kernel
    else:
        bm, bn, warps, depth, nsub, iters, deq = cfg
        consts = dict(common, ITERS=iters, DEPTH=depth, NSUB=nsub, DEQ=deq, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=128, WARPS=warps,
                      **quant_tcv.tcv_layouts(bn, bm, warps))  # fmt: skip
        fn = quant_tcv._tcv_kernel
    tiles = (
        consts["DEPTH"] if kind == "tcv" and consts["DEPTH"] <= 3 else 1
    )  # tcv's register loop runs DEPTH tiles a step
    return _compile(fn, consts, warps), tiles * 16 * bn // (32 * warps), warps


def loop_body(cubin: bytes) -> list[str]:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        sass = subprocess.run([os.path.join(BIN, "cuobjdump"), "-sass", f.name], capture_output=True, text=True,
                              check=True).stdout  # fmt: skip
    code = [
        (int(m.group(1), 16), m.group(3)) for m in re.finditer(r"/\*([0-9a-f]{4})\*/\s+(@!?U?P\w+\s+)?([^;]+);", sass)
    ]
    back = [(int(m.group(1), 16), a) for a, ins in code if (m := re.search(r"BRA (0x[0-9a-f]+)", ins))]
    loop = max(((lo, hi) for lo, hi in back if lo < hi), key=lambda r: r[1] - r[0], default=None)
    return [ins for a, ins in code if loop and loop[0] <= a <= loop[1]]


def report(kind: str, cfg: tuple[int, ...], dump: bool) -> dict:
    ck, words, _ = build(kind, cfg)
    res = analyse(dict(ck.asm, shared_bytes=ck.metadata.shared))  # type: ignore[attr-defined]
    body = loop_body(ck.asm["cubin"])  # type: ignore[attr-defined]
    hist = collections.Counter(i.split()[0] for i in body)
    out = dict(kind=kind, cfg=cfg, regs=res["regs"], spill=res["spill_stores"], smem=res["smem"], loop=len(body),
               words=words, per_word=round(len(body) / words, 2), hist=dict(hist.most_common()))  # fmt: skip
    if dump:
        out["body"] = body
    return out


def main() -> None:
    dump = "--dump" in sys.argv
    for arg in (a for a in sys.argv[1:] if a != "--dump"):
        kind, *rest = arg.split(",")
        try:
            r = report(kind, tuple(int(v) for v in rest), dump)
            body = r.pop("body", None)
            print(r, flush=True)
            if body:
                print("\n".join(body))
        except Exception as exc:  # noqa: BLE001 - reported per config
            print(kind, rest, "FAILED", repr(exc)[:3000], flush=True)


if __name__ == "__main__":
    main()
