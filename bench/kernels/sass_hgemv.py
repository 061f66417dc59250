"""Offline sm_90 build of the half2 GEMV (quant_hgemv) on a machine without a GPU: registers, stack (spills),
and the instruction mix of the K loop, from the cuobjdump in Triton's wheel. Used to keep spilling
configs out of the tuner's candidates (quant_matmul_config.HGEMVP_SHAPES).

Usage: PYTHONPATH=workers python3 bench/kernels/sass_hgemv.py "BM,BN,BK,WARPS,STAGES,ITERS,AHEAD[,POLICY]" ...
  e.g. "1,256,128,8,1,8,2" (STAGES > 1 with AHEAD 0: Triton's cp.async pipeline, as in v4);
  AHEAD -1: the v6 burst variant (kind hgemvb: all ITERS <= 4 tiles loaded at once), e.g. "1,64,128,2,1,3,-1"
  "r:BM,BN,BK,WARPS,ITERS,BURST,QK,PIN": the v7 row-accumulating GEMV (quant_hgemvr); QK = the word row stride
  compiled in (0: at run time), e.g. "r:1,64,128,2,6,0,11008,0" (kind hgemvr), "r:1,64,128,2,3,1,4096,0" (hgemvrb)
Instructions per packed word = loop_instrs / (BLOCK_N * BLOCK_K / 8 / (32 * WARPS)), e.g. / 16 at n64 k128 w2.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import tempfile

import triton
from inlaid_worker.kernels import quant_hgemv, quant_hgemvr
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
PTRS = dict(x_ptr="*fp16", qw_ptr="*i32", sc_ptr="*fp16", qz_ptr="*i32", perm_ptr="*i32", y_ptr="*fp16",
            ws_ptr="*fp32", cnt_ptr="*i32")  # fmt: skip
ONES = ("stride_xk", "stride_qn", "stride_sn", "stride_zn", "stride_yn")  # specialised to 1 at launch
ALIGNED = ("stride_xm", "stride_qk", "stride_sg", "stride_zg", "stride_ym", "N", "K")  # multiples of 16 (7B)


def build(bm: int, bn: int, bk: int, warps: int, stages: int, iters: int, ahead: int, policy: str = "") -> bytes:
    """cubin of _hgemv_kernel for sm_90 as launch_hgemv would specialise it (asym g128, no act-order, split-K)."""
    fn = quant_hgemv._hgemv_kernel
    burst = iters if ahead < 0 else 0
    ahead = max(ahead, 0)
    consts = dict(BURST=burst, GROUP=128, SYM=False, ZERO_OFFSET=1, HAS_PERM=False, USE_SPLIT=True, USE_ASM=True,
                  SINGLE=iters == 1, PIPE=iters > 1 and stages > 1 and not ahead and not burst, STAGES=max(stages, 1), AHEAD=ahead, WORD_POLICY=policy,
                  BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, **{name: 1 for name in ONES})  # fmt: skip
    sig = {a: "constexpr" if a in consts else PTRS.get(a, "i32") for a in fn.arg_names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(fn.arg_names) if a in PTRS or a in ALIGNED}
    src = ASTSource(fn, sig, constexprs=consts, attrs=attrs)
    opts = dict(num_warps=warps, num_stages=1 if ahead or burst else stages)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=opts).asm["cubin"]


def build_rows(bm: int, bn: int, bk: int, warps: int, iters: int, burst: int, qk: int, pin: int) -> bytes:
    """cubin of quant_hgemvr's kernel for sm_90 as launch_hgemvr would specialise it (asym g128, N % BN == 0)."""
    fn = quant_hgemvr._hgemvr_kernel
    consts = dict(PIN=bool(pin), EVEN_N=True, QK_CONST=qk, BURST=iters if burst else 0, GROUP=128, SYM=False,
                  ZERO_OFFSET=1, HAS_PERM=False, USE_SPLIT=True, USE_ASM=True, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
                  **{name: 1 for name in ONES})  # fmt: skip
    sig = {a: "constexpr" if a in consts else PTRS.get(a, "i32") for a in fn.arg_names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(fn.arg_names) if a in PTRS or a in ALIGNED}
    src = ASTSource(fn, sig, constexprs=consts, attrs=attrs)
    opts = dict(num_warps=warps, num_stages=1)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=opts).asm["cubin"]


def analyse(cubin: bytes) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        usage = subprocess.run([os.path.join(BIN, "cuobjdump"), "--dump-resource-usage", f.name], capture_output=True,
                               text=True, check=True).stdout  # fmt: skip
        sass = subprocess.run([os.path.join(BIN, "cuobjdump"), "-sass", f.name], capture_output=True, text=True,
                              check=True).stdout  # fmt: skip
    found = re.finditer(r"/\*([0-9a-f]{4})\*/\s+(@!?U?P\w+\s+)?([^;]+);", sass)
    code = [(int(m.group(1), 16), m.group(3)) for m in found]
    back = [(int(m.group(1), 16), a) for a, ins in code if (m := re.search(r"BRA (0x[0-9a-f]+)", ins))]
    loop = next(((lo, hi) for lo, hi in back if lo < hi), None)  # the K loop: the backward branch
    body = [ins.split()[0] for a, ins in code if loop and loop[0] <= a <= loop[1]]
    return dict(regs=int(re.search(r"REG:(\d+)", usage).group(1)), stack=int(re.search(r"STACK:(\d+)", usage).group(1)),
                loop_instrs=len(body), loop_mix=dict(collections.Counter(body).most_common(12)))  # fmt: skip


def main() -> None:
    for arg in sys.argv[1:]:
        if arg.startswith("r:"):
            cfg_r = tuple(int(v) for v in arg[2:].split(","))
            print("hgemvr", cfg_r, analyse(build_rows(*cfg_r)), flush=True)
            continue
        fields = arg.split(",")  # an 8th field: the words' eviction policy, e.g. evict_first
        cfg = (*(int(v) for v in fields[:7]), *fields[7:])
        print(cfg, analyse(build(*cfg)), flush=True)


if __name__ == "__main__":
    main()
