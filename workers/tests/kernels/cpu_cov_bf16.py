"""bf16 arithmetic for Triton 3.6's interpreter, so the kernels' bf16 paths can be checked on the CPU (test_cpu_cov_*.py).

The interpreter keeps a bf16 tensor as its raw bits in a numpy uint16 array (numpy has no bf16) and then applies
numpy's ops to those bits: tl.dot, +, -, *, /, comparisons, math functions and casts from other float types compute
on integers (a bf16 GEMM comes out ~1e9 off; test_quant_matmul.py and test_lora_sgmv.py used to skip their bf16
cases on the CPU for that). patch_bf16() makes every such op widen bf16 operands to fp32 exactly (bits << 16),
compute in fp32 and round a bf16 result back to nearest-even, which is what the GPU does for a bf16 op (fp32
accumulation for tl.dot). Loads, stores, bitcasts, selects and shifts keep working on the bits, as before.
cases._patch_interpreter_for_numpy() applies it in every interpreted test (a process under TRITON_INTERPRET=1:
kernels.conftest explains why a subprocess); its bf16=False leaves it out. check_patch() is its own check against
torch's bf16 on the CPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_FLOAT_BINARY = ("create_fadd", "create_fsub", "create_fmul", "create_fdiv", "create_frem", "create_precise_divf",
                 "create_minimumf", "create_minnumf", "create_maximumf", "create_maxnumf")  # fmt: skip
_FLOAT_CMP = tuple(f"create_fcmp{p}{c}" for p in "OU" for c in ("LT", "GT", "LE", "GE", "EQ", "NE"))


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """uint16 bf16 bits -> float32 values (exact)."""
    return (np.asarray(bits).astype(np.uint32) << np.uint32(16)).view(np.float32)


def f32_to_bf16(values: np.ndarray) -> np.ndarray:
    """float32 values -> uint16 bf16 bits, rounded to nearest even (NaN stays NaN)."""
    v = np.ascontiguousarray(values, dtype=np.float32)
    u = v.view(np.uint32).astype(np.uint64)
    out = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(v), np.uint16(0x7FC0), out)


def patch_bf16() -> None:
    """Patch the interpreter's builder class (idempotent)."""
    import triton.language as tl
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    if getattr(builder, "_cpu_cov_bf16", False):
        return
    handle = interpreter.TensorHandle
    bf16, f32 = tl.bfloat16, tl.float32

    def is_bf16(h: Any) -> bool:
        return h.dtype.scalar == bf16

    def widen(h: Any) -> Any:
        return handle(bf16_to_f32(h.data), f32) if is_bf16(h) else h

    def narrow(h: Any) -> Any:
        return handle(f32_to_bf16(h.data), bf16)

    def arith(original: Any) -> Any:
        def op(self: Any, lhs: Any, rhs: Any) -> Any:
            if not (is_bf16(lhs) or is_bf16(rhs)):
                return original(self, lhs, rhs)
            return narrow(original(self, widen(lhs), widen(rhs)))

        return op

    def compare(original: Any) -> Any:
        def op(self: Any, lhs: Any, rhs: Any) -> Any:
            if not (is_bf16(lhs) or is_bf16(rhs)):
                return original(self, lhs, rhs)
            return original(self, widen(lhs), widen(rhs))

        return op

    for name in _FLOAT_BINARY:
        setattr(builder, name, arith(getattr(builder, name)))
    for name in _FLOAT_CMP:
        setattr(builder, name, compare(getattr(builder, name)))

    original_fma = builder.create_fma

    def create_fma(self: Any, x: Any, y: Any, z: Any) -> Any:
        if not any(is_bf16(h) for h in (x, y, z)):
            return original_fma(self, x, y, z)
        return narrow(original_fma(self, widen(x), widen(y), widen(z)))

    builder.create_fma = create_fma

    original_unary = builder.unary_op

    def unary_op(self: Any, arg: Any, op: Any) -> Any:  # exp, log, sqrt, floor, ... (fabs works on the bits)
        if not is_bf16(arg):
            return original_unary(self, arg, op)
        return narrow(original_unary(self, widen(arg), op))

    builder.unary_op = unary_op

    original_cast = builder.cast_impl

    def cast_impl(self: Any, src: Any, dst_type: Any) -> Any:
        dst = dst_type.scalar
        if is_bf16(src) and dst != bf16:
            return original_cast(self, widen(src), dst_type)
        if dst == bf16 and not is_bf16(src):  # from any int or float type: value -> fp32 -> nearest bf16
            return handle(f32_to_bf16(src.data.astype(np.float32)), bf16)
        return original_cast(self, src, dst_type)

    builder.cast_impl = cast_impl
    for name in ("create_si_to_fp", "create_ui_to_fp", "create_fp_to_si", "create_fp_to_ui", "create_fp_ext",
                 "create_fp_trunc"):  # fmt: skip
        setattr(builder, name, lambda self, src, dst_type: self.cast_impl(src, dst_type))

    original_fp_to_fp = builder.create_fp_to_fp

    def create_fp_to_fp(self: Any, src: Any, dst_type: Any, rounding_mode: Any) -> Any:
        if is_bf16(src) or dst_type.scalar == bf16:
            return self.cast_impl(src, dst_type)
        return original_fp_to_fp(self, src, dst_type, rounding_mode)

    builder.create_fp_to_fp = create_fp_to_fp

    original_dot = builder.create_dot

    def create_dot(self: Any, a: Any, b: Any, d: Any, input_precision: Any, max_num_imprecise_acc: Any) -> Any:
        if not (is_bf16(a) or is_bf16(b)):
            return original_dot(self, a, b, d, input_precision, max_num_imprecise_acc)
        if is_bf16(d):
            raise NotImplementedError("cpu_cov_bf16: a bf16 accumulator")
        return original_dot(self, widen(a), widen(b), d, input_precision, max_num_imprecise_acc)

    builder.create_dot = create_dot
    builder._cpu_cov_bf16 = True


def check_patch() -> dict[str, float]:
    """A small kernel's bf16 dot, +, -, *, exp, compare and casts against torch's bf16 on the CPU: the max abs
    difference per output (0 where both round the same fp32 value; the dot within fp32 summation order)."""
    import torch
    import triton
    import triton.language as tl

    @triton.jit
    def _k(a_ptr, b_ptr, h_ptr, dot_ptr, add_ptr, sub_ptr, mul_ptr, exp_ptr, gt_ptr, up_ptr, N: tl.constexpr):
        r = tl.arange(0, N)
        a = tl.load(a_ptr + r[:, None] * N + r[None, :])
        b = tl.load(b_ptr + r[:, None] * N + r[None, :])
        h = tl.load(h_ptr + r[:, None] * N + r[None, :])  # fp16
        o = r[:, None] * N + r[None, :]
        tl.store(dot_ptr + o, tl.dot(a, b))
        tl.store(add_ptr + o, a + b)
        tl.store(sub_ptr + o, a - b)
        tl.store(mul_ptr + o, a * b)
        tl.store(exp_ptr + o, tl.exp(a.to(tl.float32)).to(tl.bfloat16))
        tl.store(gt_ptr + o, (a > b).to(tl.int32))
        tl.store(up_ptr + o, h.to(tl.bfloat16))

    n = 16
    g = torch.Generator().manual_seed(0)
    a = (torch.randn(n, n, generator=g) * 3).bfloat16()
    b = (torch.randn(n, n, generator=g) * 3).bfloat16()
    h = (torch.randn(n, n, generator=g) * 3).half()
    outs = dict(dot=torch.empty(n, n), add=torch.empty(n, n, dtype=torch.bfloat16),
                sub=torch.empty(n, n, dtype=torch.bfloat16), mul=torch.empty(n, n, dtype=torch.bfloat16),
                exp=torch.empty(n, n, dtype=torch.bfloat16), gt=torch.empty(n, n, dtype=torch.int32),
                up=torch.empty(n, n, dtype=torch.bfloat16))  # fmt: skip
    _k[(1,)](a, b, h, *outs.values(), N=n)
    ref = dict(dot=a.float() @ b.float(), add=a + b, sub=a - b, mul=a * b, exp=torch.exp(a.float()).bfloat16(),
               gt=(a > b).int(), up=h.bfloat16())  # fmt: skip
    return {k: float((outs[k].float() - ref[k].float()).abs().max()) for k in outs}


def script_main(case_ids: list[str], run_case: Any, unpatched: tuple[str, ...] = ()) -> None:
    """A test_cpu_cov_*.py file run as a script under TRITON_INTERPRET=1: the `unpatched` cases first (keys
    "unpatched:<id>", before patch_bf16: what the stock interpreter gives), then check_patch() ("patch_check") and
    every case with bf16 patched; one JSON line. Errors are reported per case."""
    import json
    import os

    import torch
    from cases import _patch_interpreter_for_numpy  # type: ignore[import-not-found]

    if os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("run under TRITON_INTERPRET=1")
    _patch_interpreter_for_numpy(bf16=False)  # the stock bf16 for the unpatched cases, then patch_bf16 below
    torch.set_num_threads(1)

    def safe(case_id: str) -> dict:
        try:
            return run_case(case_id, "cpu")
        except Exception as exc:  # noqa: BLE001 - reported per case by the test that owns it
            return {"error": repr(exc)[:2000]}

    out: dict[str, Any] = {f"unpatched:{c}": safe(c) for c in unpatched}
    patch_bf16()
    out["patch_check"] = check_patch()
    out.update({c: safe(c) for c in case_ids})
    print(json.dumps(out))


def case_runner(script: str, run_case: Any, timeout: int = 600) -> Any:
    """case id -> result: in-process on CUDA (the real kernels, bf16 native), else every case once in `script` under
    the interpreter with bf16 patched (script_main)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import torch

    if torch.cuda.is_available():
        return lambda case_id: run_case(case_id, "cuda")
    here = Path(__file__).resolve().parent
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=f"{here.parents[1]}{os.pathsep}{here}")
    proc = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"interpreted cases of {script} failed:\n{proc.stderr[-4000:]}")
    results: dict[str, dict] = json.loads(proc.stdout.strip().splitlines()[-1])
    return lambda case_id: results[case_id]
