"""bf16 arithmetic for Triton 3.6's interpreter, so the kernels' bf16 paths can be checked on the CPU (test_cpu_cov_*.py).

The interpreter keeps a bf16 tensor as its raw bits in a numpy uint16 array (numpy has no bf16) and then applies
numpy's ops to those bits: tl.dot, +, -, *, /, fma, min / max, clamp, comparisons, math functions, casts and the fast
paths of tl.reduce / tl.associative_scan (np.sum, np.cumsum, np.max, ...) compute on integers (a bf16 GEMM comes out
~1e9 off, a bf16 tl.sum ~1e38; test_quant_matmul.py and test_lora_sgmv.py used to skip their bf16 cases on the CPU for
that). patch_bf16() makes every such op widen bf16 operands to fp32 exactly (bits << 16), compute in fp32 and round a
bf16 result back to nearest-even (or toward zero where the cast asks for fp_downcast_rounding="rtz": the fp32 bits
>> 16), which is what the GPU does for a bf16 op (fp32 accumulation for tl.dot). A bf16 tl.sum / sum-scan stays bf16
as in Triton (tl.sum only widens integers; tl.cumsum widens bf16 itself): every combine is a bf16 add, rounded, in a
halving tree for the reduce (the order of the GPU's shuffle butterfly; its within-thread and cross-warp order depends
on the layout) and in sequence for the scan. fp8 -> bf16 goes through the stock fp8 -> fp32 conversion first. Loads,
stores, bitcasts, selects, fabs and shifts keep working on the bits, as before; ops with no bf16 operand or result
(fp8 <-> fp16 / fp32 included) go to the stock interpreter unchanged.
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


# Tolerances of the test_cpu_cov_* bf16 cases (errors relative to the reference's scale, as each file measures them).
BF16_TOL = 5e-3  # operands or outputs round to bf16: measured <= 3.4e-3 under the interpreter with patch_bf16
EXACT_TOL = 1e-4  # cases the patched interpreter matches the reference in (measured 0, or ~1e-7 fp32 order)
CUDA_BF16_TOL = 1e-2  # on CUDA (the native kernels; not measured by this file's author): as before


def bf16_tol(exact: bool = False) -> float:
    """The bound for a bf16 case: CUDA_BF16_TOL on CUDA, else EXACT_TOL where the CPU case is exact, else BF16_TOL."""
    import torch

    if torch.cuda.is_available():
        return CUDA_BF16_TOL
    return EXACT_TOL if exact else BF16_TOL


def assert_far_off(res: dict[str, Any]) -> None:
    """An unpatched case's result (case_runner's "unpatched:<id>"): the stock interpreter ran it without an error and
    it came out far off, which is why the bf16 cases need patch_bf16 on the CPU and that their checks can fail."""
    assert "error" not in res, res.get("error")  # the case must run: only its numbers may be off
    assert res["err"] > 1.0, res  # NaN fails too


def assert_within(res: dict[str, Any], tol: float, keys: tuple[str, ...] = ("err",)) -> None:
    """A case's result: it ran without an error and each of `keys` (errors) is below tol (NaN fails)."""
    assert "error" not in res, res.get("error")
    assert all(res[k] < tol for k in keys), res


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """uint16 bf16 bits -> float32 values (exact)."""
    return (np.asarray(bits).astype(np.uint32) << np.uint32(16)).view(np.float32)


def f32_to_bf16(values: np.ndarray) -> np.ndarray:
    """float32 values -> uint16 bf16 bits, rounded to nearest even (NaN stays NaN)."""
    shape = np.shape(values)  # a 0-d input stays 0-d (np.ascontiguousarray makes it 1-d)
    v = np.ascontiguousarray(values, dtype=np.float32)
    u = v.view(np.uint32).astype(np.uint64)
    out = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(v), np.uint16(0x7FC0), out).reshape(shape)


def f32_to_bf16_rtz(values: np.ndarray) -> np.ndarray:
    """float32 values -> uint16 bf16 bits, rounded toward zero (the fp32 bits >> 16; NaN stays NaN)."""
    shape = np.shape(values)
    v = np.ascontiguousarray(values, dtype=np.float32)
    out = (v.view(np.uint32) >> np.uint32(16)).astype(np.uint16)
    return np.where(np.isnan(v), np.uint16(0x7FC0), out).reshape(shape)


def _round_bf16(values: np.ndarray) -> np.ndarray:
    """float32 values rounded to bf16 (nearest even), as float32."""
    return bf16_to_f32(f32_to_bf16(values))


def bf16_tree_sum(values: np.ndarray, axis: int) -> np.ndarray:
    """Sum of float32 (bf16-valued) values along axis in bf16: halving tree (element i + element i + n/2, as the
    GPU's butterfly shuffles pair lanes), every partial sum rounded to bf16. Returns float32 without the axis."""
    x = np.moveaxis(np.asarray(values, dtype=np.float32), axis, -1)
    while x.shape[-1] > 1:
        n = x.shape[-1]
        h = n // 2
        head = _round_bf16(x[..., :h] + x[..., h : 2 * h])
        if n % 2:  # Triton shapes are powers of two; an odd tail joins the first partial
            head[..., :1] = _round_bf16(head[..., :1] + x[..., 2 * h :])
        x = head
    return x[..., 0]


def bf16_seq_scan(values: np.ndarray, axis: int, combine: Any = np.add) -> np.ndarray:
    """Inclusive scan of float32 (bf16-valued) values along axis in bf16: every step rounded to bf16."""
    x = np.moveaxis(np.asarray(values, dtype=np.float32), axis, -1).copy()
    for i in range(1, x.shape[-1]):
        x[..., i] = _round_bf16(combine(x[..., i - 1], x[..., i]))
    return np.moveaxis(x, -1, axis)


PATCHED_TRITON = "3.6.0"  # the version whose interpreter internals patch_bf16 replaces (checked against its source)


def patch_bf16() -> None:
    """Patch the interpreter's builder class (idempotent). Triton PATCHED_TRITON only: it replaces that version's
    interpreter internals (as cases.py's version-guarded patches do), so on another version it raises rather than
    silently computing something else; the bf16 CPU cases then fail with that message until it is checked again."""
    import triton
    import triton.language as tl
    from triton.runtime import interpreter

    if triton.__version__ != PATCHED_TRITON:
        raise RuntimeError(
            f"cpu_cov_bf16.patch_bf16 replaces Triton {PATCHED_TRITON}'s interpreter internals; this is Triton "
            f"{triton.__version__}: check the patch (and check_patch()) against its source, then update PATCHED_TRITON"
        )

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
    original_fp_to_fp = builder.create_fp_to_fp
    rtz = interpreter._ir.ROUNDING_MODE.RTZ

    def is_fp8(h: Any) -> bool:
        return h.dtype.scalar.is_fp8()

    def cast_impl(self: Any, src: Any, dst_type: Any) -> Any:
        dst = dst_type.scalar
        if is_bf16(src) and dst != bf16:
            if dst.is_fp8():  # the stock bf16 -> fp8 conversion works on the bits
                return original_fp_to_fp(self, src, dst_type, None)
            return original_cast(self, widen(src), dst_type)
        if dst == bf16 and not is_bf16(src):  # from any int or float type: value -> fp32 -> nearest bf16
            if is_fp8(src):  # fp8 bits are uint8: the stock fp8 -> fp32 conversion first (exact)
                return narrow(original_fp_to_fp(self, src, f32, None))
            return handle(f32_to_bf16(src.data.astype(np.float32)), bf16)
        return original_cast(self, src, dst_type)

    builder.cast_impl = cast_impl
    for name in ("create_si_to_fp", "create_ui_to_fp", "create_fp_to_si", "create_fp_to_ui", "create_fp_ext",
                 "create_fp_trunc"):  # fmt: skip
        setattr(builder, name, lambda self, src, dst_type: self.cast_impl(src, dst_type))

    def create_fp_to_fp(self: Any, src: Any, dst_type: Any, rounding_mode: Any) -> Any:
        if dst_type.scalar == bf16 and not is_bf16(src) and rounding_mode == rtz:  # fp32 / fp64 -> bf16 "rtz"
            value = src.data.astype(np.float32)
            if src.data.dtype == np.float64:  # toward zero to fp32 first (RTZ twice is RTZ)
                over = np.abs(value.astype(np.float64)) > np.abs(src.data)
                value = np.where(over, np.nextafter(value, np.float32(0)), value)
            return handle(f32_to_bf16_rtz(value), bf16)
        if is_bf16(src) or dst_type.scalar == bf16:
            return self.cast_impl(src, dst_type)
        return original_fp_to_fp(self, src, dst_type, rounding_mode)

    builder.create_fp_to_fp = create_fp_to_fp

    original_clamp = builder.create_clampf

    def create_clampf(self: Any, arg: Any, lo: Any, hi: Any, propagate_nans: Any) -> Any:
        if not any(is_bf16(h) for h in (arg, lo, hi)):
            return original_clamp(self, arg, lo, hi, propagate_nans)
        return narrow(original_clamp(self, widen(arg), widen(lo), widen(hi), propagate_nans))

    builder.create_clampf = create_clampf

    original_dot = builder.create_dot

    def create_dot(self: Any, a: Any, b: Any, d: Any, input_precision: Any, max_num_imprecise_acc: Any) -> Any:
        if not (is_bf16(a) or is_bf16(b)):
            return original_dot(self, a, b, d, input_precision, max_num_imprecise_acc)
        if is_bf16(d):
            raise NotImplementedError("cpu_cov_bf16: a bf16 accumulator")
        return original_dot(self, widen(a), widen(b), d, input_precision, max_num_imprecise_acc)

    builder.create_dot = create_dot
    _patch_reduce_scan(interpreter, tl)
    builder._cpu_cov_bf16 = True


def _patch_reduce_scan(interpreter: Any, tl: Any) -> None:
    """The fast paths of ReduceOps / ScanOps (np.sum, np.cumsum, np.cumprod, np.max / np.argmax, ...) on bf16 bits:
    widen to fp32, compute, round back. sum / cumsum / cumprod combine in bf16 (bf16_tree_sum, bf16_seq_scan): a bf16
    tl.sum is a bf16 reduction in Triton (the GPU rounds every combine); min / max / arg* are exact either way. Other
    combine functions take generic_reduce / generic_scan, whose combine runs through the patched builder."""
    reduce_ops, scan_ops = interpreter.ReduceOps, interpreter.ScanOps
    bf16 = tl.bfloat16

    def is_bf16(t: Any) -> bool:
        return t.dtype.scalar == bf16

    original_sum = reduce_ops.sum

    def sum_(self: Any, input: Any) -> Any:
        if not is_bf16(input):
            return original_sum(self, input)
        data = bf16_to_f32(input.handle.data)
        axis = self.axis
        if axis is None:
            out = bf16_tree_sum(data.reshape(-1), 0)
            if self.keep_dims:
                out = out.reshape((1,) * data.ndim)
        else:
            out = bf16_tree_sum(data, axis)
            if self.keep_dims:
                out = np.expand_dims(out, axis)
        return self.to_tensor(f32_to_bf16(out), input.dtype)

    reduce_ops.sum = sum_

    original_min_max = reduce_ops.min_max

    def min_max(self: Any, input: Any, val_reduce_op: Any, idx_reduce_op: Any = None) -> Any:
        t = input[0] if isinstance(input, tuple) else input
        if not is_bf16(t):
            return original_min_max(self, input, val_reduce_op, idx_reduce_op)
        wide_type = t.type.with_element_ty(tl.float32) if t.type.is_block() else tl.float32
        wide = tl.core.tensor(interpreter.TensorHandle(bf16_to_f32(t.handle.data), tl.float32), wide_type)
        res = original_min_max(self, wide, val_reduce_op, idx_reduce_op)
        if val_reduce_op is None:
            return res
        val = res[0] if isinstance(res, tuple) else res
        val = self.to_tensor(f32_to_bf16(val.handle.data), t.dtype)  # exact: a min / max of bf16 values
        return (val, res[1]) if isinstance(res, tuple) else val

    reduce_ops.min_max = min_max

    for name, combine in (("cumsum", np.add), ("cumprod", np.multiply)):
        original = getattr(scan_ops, name)

        def scan(self: Any, input: Any, _original: Any = original, _combine: Any = combine) -> Any:
            if not is_bf16(input):
                return _original(self, input)
            out = bf16_seq_scan(bf16_to_f32(input.handle.data), self.axis, _combine)
            return [self.to_tensor(f32_to_bf16(out), input.dtype)]

        setattr(scan_ops, name, scan)


def check_patch() -> dict[str, float]:
    """A small kernel's bf16 ops against torch's bf16 on the CPU: the max abs difference per output (0 where both
    round the same fp32 value; the dot within fp32 summation order). dot, +, -, *, /, fma, maximum, compare, casts fp16 -> bf16 ("up"), bf16 -> fp16 / int32, fp8 (e5m2, e4m3) -> bf16, fp32 -> bf16 with
    fp_downcast_rounding="rtz", a bf16 tl.sum along an axis and over all (reference: the same halving tree in torch's bf16, every partial
    rounded), a bf16 tl.max, a bf16 sum scan (sequential, every step rounded) and the builder's exp on bf16 (unary_op)."""
    import torch
    import triton
    import triton.language as tl

    @triton.jit
    def _k(a_ptr, b_ptr, c_ptr, h_ptr, f_ptr, e5_ptr, e4_ptr, dot_ptr, add_ptr, sub_ptr, mul_ptr, div_ptr, fma_ptr,
           max_ptr, gt_ptr, up_ptr, f16_ptr, i32_ptr, e5b_ptr, e4b_ptr, rtz_ptr, sum_ptr, sum_all_ptr,
           rmax_ptr, scan_ptr, N: tl.constexpr):  # fmt: skip
        r = tl.arange(0, N)
        o = r[:, None] * N + r[None, :]
        a = tl.load(a_ptr + o)
        b = tl.load(b_ptr + o)
        c = tl.load(c_ptr + o)
        tl.store(dot_ptr + o, tl.dot(a, b))
        tl.store(add_ptr + o, a + b)
        tl.store(sub_ptr + o, a - b)
        tl.store(mul_ptr + o, a * b)
        tl.store(div_ptr + o, a / b)
        tl.store(fma_ptr + o, tl.fma(a, b, c))
        tl.store(max_ptr + o, tl.maximum(a, b))
        tl.store(gt_ptr + o, (a > b).to(tl.int32))
        tl.store(up_ptr + o, tl.load(h_ptr + o).to(tl.bfloat16))  # fp16 -> bf16
        tl.store(f16_ptr + o, a.to(tl.float16))
        tl.store(i32_ptr + o, a.to(tl.int32))
        tl.store(e5b_ptr + o, tl.load(e5_ptr + o).to(tl.bfloat16))
        tl.store(e4b_ptr + o, tl.load(e4_ptr + o).to(tl.bfloat16))
        tl.store(rtz_ptr + o, tl.load(f_ptr + o).to(tl.bfloat16, fp_downcast_rounding="rtz"))
        tl.store(sum_ptr + r, tl.sum(a, axis=1))
        tl.store(sum_all_ptr, tl.sum(a))  # axis None: a scalar
        tl.store(rmax_ptr + r, tl.max(a, axis=1))
        tl.store(scan_ptr + o, tl.associative_scan(a, 1, tl.standard._sum_combine))

    n = 16
    g = torch.Generator().manual_seed(0)
    a = (torch.randn(n, n, generator=g) * 3).bfloat16()
    b = (torch.randn(n, n, generator=g) * 3).bfloat16()
    c = (torch.randn(n, n, generator=g) * 3).bfloat16()
    h = (torch.randn(n, n, generator=g) * 3).half()
    f = torch.randn(n, n, generator=g) * 3
    e5 = (torch.randn(n, n, generator=g) * 3).to(torch.float8_e5m2)
    e4 = (torch.randn(n, n, generator=g) * 3).to(torch.float8_e4m3fn)
    bf, mat, vec = torch.bfloat16, (n, n), (n,)
    shapes = dict(dot=(mat, torch.float32), add=(mat, bf), sub=(mat, bf), mul=(mat, bf), div=(mat, bf),
                  fma=(mat, bf), max=(mat, bf), gt=(mat, torch.int32), up=(mat, bf),
                  f16=(mat, torch.float16), i32=(mat, torch.int32), fp8e5=(mat, bf), fp8e4=(mat, bf), rtz=(mat, bf),
                  sum=(vec, bf), sum_all=((1,), bf), rmax=(vec, bf), scan=(mat, bf))  # fmt: skip
    outs = {k: torch.empty(shape, dtype=dt) for k, (shape, dt) in shapes.items()}
    _k[(1,)](a, b, c, h, f, e5, e4, *outs.values(), N=n)
    # tl.exp / log / sqrt / ... reject bf16 in Triton 3.6's frontend (GPU and interpreter alike: "Expected dtype
    # ['fp32', 'fp64']"), so the builder's unary_op meets bf16 only from a direct builder call: exp on bf16 bits
    from triton.runtime import interpreter

    bits = a.view(torch.int16).numpy().view(np.uint16)
    try:
        exp = interpreter.InterpreterBuilder().create_exp(interpreter.TensorHandle(bits, tl.bfloat16))
        outs["exp"] = torch.from_numpy(bf16_to_f32(exp.data)) if exp.dtype == tl.bfloat16 else torch.full(mat, np.nan)
    except ValueError:  # the stock interpreter: fp32 data in a bf16 handle
        outs["exp"] = torch.full(mat, np.nan)

    def tree_sum(t: torch.Tensor) -> torch.Tensor:  # torch's bf16 add rounds each partial, as the GPU's combine
        while t.shape[-1] > 1:
            half = t.shape[-1] // 2
            t = t[..., :half] + t[..., half:]
        return t[..., 0]

    scan = a.clone()
    for i in range(1, n):
        scan[:, i] = scan[:, i - 1] + a[:, i]
    ref = dict(dot=a.float() @ b.float(), add=a + b, sub=a - b, mul=a * b, div=a / b,
               fma=(a.float() * b.float() + c.float()).bfloat16(), max=torch.maximum(a, b), exp=torch.exp(a),
               gt=(a > b).int(), up=h.bfloat16(), f16=a.half(), i32=a.int(), fp8e5=e5.bfloat16(),
               fp8e4=e4.bfloat16(), rtz=(f.view(torch.int32) & -65536).view(torch.float32).bfloat16(),
               sum=tree_sum(a), sum_all=tree_sum(a.reshape(-1)).reshape(1), rmax=a.max(dim=1).values, scan=scan)  # fmt: skip
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
