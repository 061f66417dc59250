"""Offline sm_90 builds of the Gluon kernels for the CPU tests (test_cpu_cov_quant_tcl.py, test_cpu_cov_quant_tcv.py):
the kernel compiled as its launch function would specialise it, from that module's own (grid, args, constexprs)
function (tcl_args, tcv_args) on CPU tensors, with Triton's ptxas (no GPU); nothing runs."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from typing import Any

import torch

_PTR = {torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.float32: "*fp32", torch.int32: "*i32",
        torch.int64: "*i64"}  # fmt: skip


def build(fn: Any, args: tuple, consts: dict, num_warps: int, **options: Any) -> tuple[Any, list[str]]:
    """(the compiled kernel (triton.compile's CompiledKernel), the names of its PTX parameters in order) of a Gluon
    @jit `fn` launched with positional `args` and constexpr `consts`, for sm_90: tensors become typed pointers (16-byte
    aligned, as torch allocates them), ints equal to 1 constexprs and ints divisible by 16 get the divisibility hint
    (Triton's launch-time specialisation)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    sig: dict[str, str] = {}
    cst = dict(consts)
    attrs: dict[tuple, list] = {}
    for i, name in enumerate(fn.arg_names):
        if name in cst:
            sig[name] = "constexpr"
            continue
        if i >= len(args):
            continue  # a defaulted constexpr left at its default
        a = args[i]
        if torch.is_tensor(a):
            sig[name] = _PTR[a.dtype]
            if a.data_ptr() % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(a, bool) or not isinstance(a, int):
            raise TypeError(f"{name}: unsupported argument {a!r}")
        elif a == 1:
            cst[name] = 1
            sig[name] = "constexpr"
        else:
            sig[name] = "i32"
            if a % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    src = GluonASTSource(fn, sig, constexprs=cst, attrs=attrs)
    ck = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=num_warps, **options))
    return ck, [n for n in fn.arg_names if sig.get(n, "constexpr") != "constexpr"]


def ptxas_info(ptx: str) -> dict[str, Any]:
    """ptxas -v of the PTX for sm_90a: registers, spill stores / loads, and its warnings."""
    import triton

    bin_dir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    with tempfile.NamedTemporaryFile(suffix=".ptx", mode="w") as f:
        f.write(ptx)
        f.flush()
        info = subprocess.run([os.path.join(bin_dir, "ptxas"), "-arch=sm_90a", "-v", f.name, "-o", "/dev/null"],
                              capture_output=True, text=True, check=True).stderr  # fmt: skip
    regs = re.search(r"Used (\d+) registers", info)
    stores = re.search(r"(\d+) bytes spill stores", info)
    loads = re.search(r"(\d+) bytes spill loads", info)
    return dict(regs=int(regs.group(1)) if regs else None, spill_stores=int(stores.group(1)) if stores else None,
                spill_loads=int(loads.group(1)) if loads else None,
                warnings=sorted({ln.strip()[:200] for ln in info.splitlines() if "warning" in ln.lower()}))  # fmt: skip
