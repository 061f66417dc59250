"""Offline sm_90 builds of Triton launches (no GPU needed): record a host function's kernel launches without running
them, then compile one for sm_90 with the launch's specialisation (16-divisible pointers and integers, integers equal
to 1 as constants, as Triton's JIT does). Shared by tests (test_dn2_shfl's lane contract and PDL order; test_pdl_ptx_order: record, bind and
arg_type) and bench scripts (bench/kernels/s16_omerge_sass.py: ptxas -v through sass_tcl; s16_b1_merge.py)."""

from __future__ import annotations

import inspect
from typing import Any

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

_DT = {torch.float16: "fp16", torch.float32: "fp32", torch.bfloat16: "bf16", torch.int32: "i32", torch.int64: "i64",
       torch.int8: "i8", torch.uint8: "u8"}  # fmt: skip
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


def bind(fn: Any, args: tuple, kwargs: dict) -> tuple[list[inspect.Parameter], dict[str, Any], dict[str, Any]]:
    """fn's parameters, the launch's value of each by name (args, then kwargs: its constexprs) and the launch's
    options (popped from kwargs)."""
    params = list(inspect.signature(fn.fn).parameters.values())
    bound = dict(zip([p.name for p in params], args, strict=False))
    opts = {k: kwargs.pop(k) for k in list(kwargs) if k in _OPTS}
    bound.update(kwargs)
    return params, bound, opts


def arg_type(fn: Any, name: str, v: Any) -> str:
    """The Triton signature type of a non-constexpr argument's value."""
    if isinstance(v, torch.Tensor):
        return "*" + _DT[v.dtype]
    if isinstance(v, bool):
        return "i1"
    if isinstance(v, int):
        return "i32" if -(2**31) <= v < 2**31 else "i64"
    if isinstance(v, float):
        return "fp32"
    raise TypeError(f"{fn.__name__}.{name}: {type(v)}")


def compile_sm90(fn: Any, args: tuple, kwargs: dict) -> Any:
    """The launch compiled for sm_90 with the JIT's specialisation of its arguments (kwargs: the launch's constexprs
    and options; the options are popped from it)."""
    params, bound, opts = bind(fn, args, kwargs)
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
        sig[p.name] = arg_type(fn, p.name, v)
        if isinstance(v, torch.Tensor):
            attrs[(i,)] = [["tt.divisibility", 16]]  # (torch's allocations are 256-byte aligned)
        elif isinstance(v, int) and not isinstance(v, bool) and v % 16 == 0 and not jp.do_not_specialize:
            attrs[(i,)] = [["tt.divisibility", 16]]
    return triton.compile(ASTSource(fn, sig, constexprs=consts, attrs=attrs), target=GPUTarget("cuda", 90, 32),
                          options=opts)  # fmt: skip
