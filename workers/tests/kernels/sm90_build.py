"""Offline sm_90 builds of Triton launches (no GPU needed): record a host function's kernel launches without running
them, then compile one for sm_90 with the launch's specialisation (16-divisible pointers and integers, integers equal
to 1 as constants, as Triton's JIT does). Shared by tests (test_dn2_shfl's lane contract and PDL order) and bench
scripts (bench/kernels/s16_omerge_sass.py: ptxas -v through sass_tcl)."""

from __future__ import annotations

import inspect
from typing import Any

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

_DT = {torch.float16: "fp16", torch.float32: "fp32", torch.int32: "i32", torch.int64: "i64"}
_OPTS = ("num_warps", "num_stages", "launch_pdl", "num_ctas", "maxnreg")


def record(launch: Any) -> list[tuple[Any, tuple, dict]]:
    """The (JITFunction, args, kwargs) of every kernel launch `launch()` makes, none run (kernels.pdl mode 1, the
    decode graphs'). An exception after a launch (host code reading the outputs of kernels that never ran) ends it."""
    from inlaid_worker.kernels import pdl
    from triton.runtime.jit import JITFunction

    seen: list[tuple[Any, tuple, dict]] = []
    real, mode = JITFunction.run, pdl._MODE.value
    JITFunction.run = lambda self, *a, grid, warmup, **kw: seen.append((self, a, dict(kw)))  # type: ignore[method-assign]
    pdl._MODE.value = 1
    try:
        launch()
    except Exception:  # noqa: BLE001, S110 - nothing ran, so host code after a launch may trip over its outputs
        pass
    finally:
        JITFunction.run, pdl._MODE.value = real, mode  # type: ignore[method-assign]
    return seen


def compile_sm90(fn: Any, args: tuple, kwargs: dict) -> Any:
    """The launch compiled for sm_90 with the JIT's specialisation of its arguments (kwargs: the launch's constexprs
    and options; the options are popped from it)."""
    params = list(inspect.signature(fn.fn).parameters.values())
    bound = dict(zip([p.name for p in params], args, strict=False))
    opts = {k: kwargs.pop(k) for k in list(kwargs) if k in _OPTS}
    bound.update(kwargs)
    sig: dict[str, str] = {}
    consts: dict[str, Any] = {}
    attrs: dict[tuple[int, ...], list] = {}
    for i, (p, jp) in enumerate(zip(params, fn.params, strict=True)):
        v = bound.get(p.name, p.default)
        if jp.is_constexpr or v is None or (isinstance(v, int) and not isinstance(v, bool) and v == 1
                                            and not jp.do_not_specialize):  # fmt: skip
            consts[p.name] = v
            sig[p.name] = "constexpr"
            continue
        if isinstance(v, torch.Tensor):
            sig[p.name] = "*" + _DT[v.dtype]
            attrs[(i,)] = [["tt.divisibility", 16]]  # (torch's allocations are 256-byte aligned)
        elif isinstance(v, bool):
            sig[p.name] = "i1"
        elif isinstance(v, int):
            sig[p.name] = "i32" if -(2**31) <= v < 2**31 else "i64"
            if v % 16 == 0 and not jp.do_not_specialize:
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(v, float):
            sig[p.name] = "fp32"
        else:
            raise TypeError(f"{fn.__name__}.{p.name}: {type(v)}")
    return triton.compile(ASTSource(fn, sig, constexprs=consts, attrs=attrs), target=GPUTarget("cuda", 90, 32),
                          options=opts)  # fmt: skip
