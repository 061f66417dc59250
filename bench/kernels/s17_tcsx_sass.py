"""Session 17 (issue 4): offline sm_90 build of quant_tcsx (x streamed through the word ring; no GPU): registers,
spills, shared memory (compiled and estimated), wgmma / TMA counts, ptxas warnings (sass_tcl.analyse), the consumer
K loops' SASS mix (sass_tcs.loop_mix) and the ring's release order in the PTX (tests/kernels/tcs_ptx_order.py).

build() specialises what launch_tcsx specialises (g128, the 7B shapes' divisibility, strides of 1 as constexprs); ITERS
is a runtime argument (the ring does not depend on it), so one build serves every split of a shape.
Usage: PYTHONPATH=workers:bench/kernels python3 bench/kernels/s17_tcsx_sass.py [--json FILE] \
    "BM,STAGES,NWG,SPLIT,PIPE[,BF16,SYM,GDC,LAUNCH_REGS,CONS_REGS]" ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import triton
from inlaid_worker.kernels import quant_tcsx
from sass_tcl import analyse
from sass_tcs import loop_mix
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
from triton.runtime.jit import mangle_type

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "workers" / "tests" / "kernels"))
from tcs_ptx_order import early_releases, k_loops  # noqa: E402

PTRS = dict(sc_ptr="*fp16", qz_ptr="*i32", y_ptr="*fp16", ws_ptr="*fp32", cnt_ptr="*i32")
ONES = ("stride_sn", "stride_zn", "stride_yn")  # specialised to 1 at launch
ALIGNED = ("stride_sg", "stride_zg", "stride_ym", "N", "K")  # multiples of 16 (7B / 13B)


def build(bm: int, stages: int, nwg: int, split: int = 1, pipe: int = 0, bf16: int = 0, sym: int = 0, gdc: int = 0,
          launch_regs: int = 0, cons_regs: int = 0, k: int = 4096, n: int = 11008) -> dict:  # fmt: skip
    """Compiled _tcsx_kernel for sm_90 as launch_tcsx would specialise it (split > 1: USE_SPLIT)."""
    fn = quant_tcsx._tcsx_kernel
    lr, cr = quant_tcsx.tcsx_regs(bm, nwg)
    lr, cr = launch_regs or lr, cons_regs or cr
    dt = torch.bfloat16 if bf16 else torch.float16
    xd = TensorDescriptor.from_tensor(torch.empty(bm, k, dtype=dt), [bm, 128], quant_tcsx.x_smem_layout())
    wd = TensorDescriptor.from_tensor(torch.empty(k // 8, n, dtype=torch.int32), [16, 64 * nwg],
                                      quant_tcsx.word_smem_layout())  # fmt: skip
    lay = quant_tcsx.tcs_layouts(bm)
    consts = dict(GROUP=128, SYM=bool(sym), ZERO_OFFSET=1, USE_SPLIT=split > 1, IS_BF16=bool(bf16), STAGES=stages,
                  BLOCK_M=bm, NWG=nwg, CONS_REGS=cr, MMA=lay["MMA"], DOT=lay["DOT"], L5=lay["L5"], L4=lay["L4"],
                  D2=lay["D2"], L5H=quant_tcsx.tcg_layouts(64, bm, 4)["L5H"], PIPE=pipe, USE_GDC=gdc,
                  **{name: 1 for name in ONES})  # fmt: skip
    ptrs = dict(PTRS, sc_ptr="*bf16", y_ptr="*bf16") if bf16 else PTRS
    descs = dict(x_desc=xd, w_desc=wd)
    sig = {a: "constexpr" if a in consts else (a in descs and mangle_type(descs[a])) or ptrs.get(a, "i32")
           for a in fn.arg_names}  # fmt: skip
    attrs = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(fn.arg_names) if a in ptrs or a in ALIGNED}
    src = GluonASTSource(fn, sig, constexprs=consts, attrs=attrs)
    ck = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4, maxnreg=lr))
    return dict(ck.asm, shared_bytes=ck.metadata.shared, regs=(lr, cr))


def summary(cfg: tuple[int, ...], asm: dict) -> dict:
    """analyse() + the shared-memory estimate, programs an SM, setmaxnreg values, TMA copies, release order."""
    bm, stages, nwg = cfg[:3]
    res = analyse(asm)
    ptx = asm["ptx"]
    loops = k_loops(ptx)
    res.update(
        regs_caps=asm["regs"],
        shared_bytes=asm["shared_bytes"],
        smem_estimate=quant_tcsx.tcsx_smem_bytes(stages, bm, nwg),
        programs_per_sm=quant_tcsx.programs_per_sm(stages, bm, nwg, asm["regs"]),
        setmaxnreg=sorted({ln.split()[-1] for ln in ptx.splitlines() if "setmaxnreg" in ln}),
        tma=ptx.count("cp.async.bulk.tensor"),
        k_loops=len(loops),
        early_releases=[early_releases(lp) for lp in loops],
        mix=loop_mix(asm),
    )
    return res


def main() -> None:
    args = sys.argv[1:]
    out = None
    if args[:1] == ["--json"]:
        out, args = args[1], args[2:]
    rows = []
    for arg in args:
        cfg = tuple(int(v) for v in arg.split(","))
        try:
            res = summary(cfg, build(*cfg))
            print(cfg, {k: v for k, v in res.items() if k != "mix"}, flush=True)
            rows.append(dict(cfg=cfg, **res))
        except Exception as exc:  # noqa: BLE001 - reported per config
            print(cfg, "FAILED", repr(exc)[:3000], flush=True)
            rows.append(dict(cfg=cfg, error=repr(exc)[:3000]))
    if out:
        Path(out).write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
