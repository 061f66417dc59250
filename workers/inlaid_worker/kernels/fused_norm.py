"""Residual add + RMSNorm in one pass (Triton), plus its torch reference.

    h = residual + x          (in the activation dtype, written back into `residual` in place)
    out = weight * (h32 * rsqrt(mean(h32^2) + eps)).to(dtype)       (h32 = h in fp32)
Without a residual, out = RMSNorm(x) and nothing is written back. Rounding follows model.llama.rms_norm:
the add and the normalised value are each rounded to the activation dtype before the next operation.
add_rms_norm_sums: the same with x given as a split-K GEMV's fp32 sums in its workspace (the "cfin" decode fusion,
kernels.consumer_finish): x = fp16(sum) as the GEMV's own finish would store it; the sums are loaded, then zeroed after
a CTA barrier (SUMS_MODE 2, the default: one program per row, so the barrier orders all of the row's reads before any
zero store; without it a load and a zero store in different register layouts race, quant_common.store_tile's note),
or read and cleared in one atomic exchange each (SUMS_MODE 1).
`clear` (add_rms_norm / add_rms_norm_sums; the "+q" decode fusion, kernels.consumer_finish.gemv_sums): the launch
also zeroes another GEMV's deferred fp32 sums (the qkv GEMV's, read by the row attention before the o GEMV this
norm follows; CLEAR_MODE 2, the default: a few extra programs of the launch, one block each; CLEAR_MODE 1: each row's
program zeroes its row), right after the PDL wait: every reader of those sums has completed by then.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .pdl import gdc_late, gdc_start, gdc_wait, launch_kw


@triton.jit
def operand_col(kk):
    """The column of the operand-ordered copy that x column kk goes to (quant_tcl.permute_x without act-order, K a
    multiple of 128): within each 128-column tile, kk = 32 t + 8 wi + 4 e + s -> 32 wi + 8 s + 2 t + e."""
    r = kk & 127
    return kk - r + 32 * ((r >> 3) & 3) + 8 * (r & 3) + 2 * (r >> 5) + ((r >> 2) & 1)


@triton.jit
def _take_sums(ptrs, mask, MODE: tl.constexpr, BLOCK: tl.constexpr):
    """fp32 sums at ptrs [BLOCK], left zeroed. MODE 1: one atomic exchange each (as int32: the interpreter's xchg is
    int-only); 2: plain loads, a CTA barrier, zero stores (the row's only reader is this CTA: the barrier orders all
    of its threads' loads before any thread's store)."""
    if MODE == 1:
        bits = tl.atomic_xchg(ptrs.to(tl.pointer_type(tl.int32)), tl.zeros((BLOCK,), tl.int32), mask=mask,
                              sem="relaxed")  # fmt: skip
        x = tl.where(mask, bits.to(tl.float32, bitcast=True), 0.0)  # masked lanes: 0 (the interpreter leaves them
        # uninitialised, which put garbage in the sum of squares of an N that is not a power of two)
    elif MODE == 2:  # (the host checks the mode: _mode)
        x = tl.load(ptrs, mask=mask, other=0.0)
        tl.debug_barrier()
        tl.store(ptrs, tl.zeros((BLOCK,), tl.float32), mask=mask)
    return x


@triton.jit
def _add_rms_norm_kernel(
    x_ptr, res_ptr, w_ptr, out_ptr, n, eps, stride_x, stride_r, stride_o,
    HAS_RES: tl.constexpr, BLOCK: tl.constexpr, USE_GDC: tl.constexpr = 0, FROM_SUMS: tl.constexpr = 0,
    clr_ptr=None, CLR_N: tl.constexpr = 0, CLR_MODE: tl.constexpr = 1, n_rows=0, OPERAND: tl.constexpr = 0,
):  # fmt: skip
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    mask = offs < n
    if CLR_N > 0:
        if CLR_MODE == 2:  # programs n_rows.. only clear (everything else masked off)
            mask = mask & (row < n_rows)
    gdc_start(USE_GDC)
    w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)  # a weight: before the PDL wait (kernels.pdl)
    gdc_wait(USE_GDC)
    if CLR_N > 0:  # clear the other sums (fire-and-forget stores)
        if CLR_MODE == 2:  # program n_rows + j: values [j * BLOCK, (j + 1) * BLOCK) of all rows'
            co = (row - n_rows) * BLOCK + offs
            tl.store(clr_ptr + co, tl.zeros((BLOCK,), tl.float32), mask=(row >= n_rows) & (co < n_rows * CLR_N))
        elif CLR_MODE == 1:  # each row's program its row (the host checks the mode: _mode)
            for c0 in tl.static_range(0, CLR_N, BLOCK):
                tl.store(clr_ptr + row * CLR_N + c0 + offs, tl.zeros((BLOCK,), tl.float32), mask=c0 + offs < CLR_N)
    if FROM_SUMS:  # (always with a residual) its load in flight while the sums are taken
        h_old = tl.load(res_ptr + row * stride_r + offs, mask=mask, other=0.0)
        x = _take_sums(x_ptr + row * stride_x + offs, mask, FROM_SUMS, BLOCK).to(h_old.dtype)
        h = (h_old.to(tl.float32) + x.to(tl.float32)).to(x.dtype)
        tl.store(res_ptr + row * stride_r + offs, h, mask=mask)
    else:
        x = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0)
        if HAS_RES:
            h = (tl.load(res_ptr + row * stride_r + offs, mask=mask, other=0.0).to(tl.float32) + x.to(tl.float32))
            h = h.to(x.dtype)
            tl.store(res_ptr + row * stride_r + offs, h, mask=mask)
        else:
            h = x
    h32 = h.to(tl.float32)
    inv = 1.0 / tl.sqrt(tl.sum(h32 * h32, axis=0) / n + eps)
    normed = (h32 * inv).to(x.dtype).to(tl.float32)
    gdc_late(USE_GDC)
    if OPERAND:  # the consumer's operand K order (operand_col; n % 128 == 0: a column stays in its tile)
        dst = operand_col(offs)
    else:
        dst = offs
    tl.store(out_ptr + row * stride_o + dst, (w * normed).to(out_ptr.dtype.element_ty), mask=mask)


def add_rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None,
    clear: torch.Tensor | None = None, operand: bool = False,
) -> torch.Tensor:
    """x [T, n] -> RMSNorm(residual + x) [T, n]; residual (if given) is updated in place to residual + x. clear
    (fp32 [T, C], row-major): zeroed (module docstring). operand (n a multiple of 128): the result in the wgmma
    operand's K order, = quant_tcl.permute_x(RMSNorm(...), None) bit for bit (operand_col)."""
    if x.dim() != 2 or weight.shape != (x.shape[1],) or x.stride(1) != 1:
        raise ValueError(f"add_rms_norm: x {tuple(x.shape)} (row-major 2-D) and weight {tuple(weight.shape)}")
    if operand and x.shape[1] % 128:
        raise ValueError(f"add_rms_norm: the operand order needs n a multiple of 128, got {x.shape[1]}")
    if residual is not None and (residual.shape != x.shape or residual.stride(1) != 1):
        raise ValueError(f"residual {tuple(residual.shape)} must match x {tuple(x.shape)}")
    out = torch.empty_like(x)
    t, n = x.shape
    if t == 0:
        return out
    res = residual if residual is not None else x
    block = triton.next_power_of_2(n)
    extra, clr = _clear_kw(clear, t, block)
    _add_rms_norm_kernel[(t + extra,)](
        x, res, weight, out, n, eps, x.stride(0), res.stride(0), out.stride(0),
        HAS_RES=residual is not None, BLOCK=block, num_warps=8 if block >= 2048 else 4, **clr,
        OPERAND=int(operand), **launch_kw(),
    )  # fmt: skip
    return out


# how add_rms_norm_sums reads and clears the sums (read at launch, so at a graph's capture): 2 = vector loads, a CTA
# barrier, zero stores; 1 = one atomic exchange per value. 7B int4 batch-1 step on the H200 (bench/results/
# decode-2026-12-01-s14-cfin.md): mode 2 0.965-0.968x the unfused step, mode 1 1.007-1.012x (4,096 exchanges from one
# CTA: 16 one-word atomics a thread, against 4 vector loads). Any other value raises ValueError at the next call.
SUMS_MODE = 2


# how `clear` is zeroed (read at launch, so at a graph's capture): 1 = by each row's program after its wait; 2 = by
# ceil(T * C / BLOCK) extra programs of the launch, one block each (the row programs do only the norm). 7B int4 step
# with "swiglu+cfin+q" on the H200 (bench/results/decode-2026-12-01-s14-cfinq.md): mode 2 0.985x mode 1 at batches
# 1 and 2 (lower in 8/8 rounds each; mode 1 puts 12,288 zero stores a row on the norm's one CTA). Any other value
# raises ValueError at the next call with `clear`.
CLEAR_MODE = 2


def _mode(name: str, value: int) -> int:
    """A module switch's value, checked: 1 or 2 (anything else, 0 included, is not a mode the kernel has)."""
    if type(value) is not int or value not in (1, 2):
        raise ValueError(f"fused_norm.{name} must be 1 or 2, got {value!r}")
    return value


def _check_clear(clear: torch.Tensor, t: int) -> int:
    """CLEAR_MODE, once `clear` is checked: fp32 [T, C], row-major."""
    if clear.dtype != torch.float32 or clear.dim() != 2 or clear.shape[0] != t or not clear.is_contiguous():
        raise ValueError(f"clear: a row-major fp32 [{t}, C] region, got {clear.dtype} {tuple(clear.shape)}")
    return _mode("CLEAR_MODE", CLEAR_MODE)


def _clear_kw(clear: torch.Tensor | None, t: int, block: int) -> tuple[int, dict[str, object]]:
    """(extra programs, the kernel's clear arguments) for `clear` (fp32 [T, C], row-major) or none."""
    if clear is None:
        return 0, {}
    mode = _check_clear(clear, t)
    extra = triton.cdiv(clear.numel(), block) if mode == 2 else 0
    return extra, dict(clr_ptr=clear, CLR_N=clear.shape[1], CLR_MODE=mode, n_rows=t)


def check_sums_norm(residual: torch.Tensor, weight: torch.Tensor, sums_numel: int | None = None,
                    clear: torch.Tensor | None = None) -> None:  # fmt: skip
    """Raise ValueError unless add_rms_norm_sums takes these arguments (sums_numel: the workspace's size; None: not
    known yet) and the mode switches are valid. consumer_finish.gemv_add_norm calls it before its GEMV, which leaves
    its sums in the shared workspace for the norm to clear: a norm refused after that launch would leave them there."""
    if residual.dim() != 2 or residual.stride(1) != 1 or residual.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"add_rms_norm_sums: residual {residual.dtype} {tuple(residual.shape)} (row-major 2-D fp16 / "
                         "bf16)")  # fmt: skip
    t, n = residual.shape
    if (weight.shape != (n,) or not weight.is_floating_point() or weight.stride(0) != 1
            or weight.device != residual.device):  # fmt: skip
        raise ValueError(f"add_rms_norm_sums: weight {weight.dtype} {tuple(weight.shape)} on {weight.device} (a "
                         f"contiguous float vector of {n} on {residual.device})")  # fmt: skip
    if sums_numel is not None and sums_numel < t * n:
        raise ValueError(f"add_rms_norm_sums: sums of {sums_numel} values for [{t}, {n}]")
    _mode("SUMS_MODE", SUMS_MODE)
    if clear is not None:
        _check_clear(clear, t)


def add_rms_norm_sums(sums: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor,
                      clear: torch.Tensor | None = None, checked: bool = False) -> torch.Tensor:  # fmt: skip
    """add_rms_norm with x = fp16(sums) [T, n] where sums is the fp32 workspace of a split-K GEMV whose programs only
    added their partial sums (quant_hgemvr's finish epilogue with defer): its first T * n values, row-major, which are
    left zeroed. residual [T, n] (fp16 / bf16, row-major) is updated in place to residual + x. clear: as add_rms_norm's.
    Every argument is checked (check_sums_norm) before anything is launched; checked: the caller already ran
    check_sums_norm(residual, weight, None, clear) (consumer_finish, before its GEMV): only the workspace is checked."""
    if sums.dtype != torch.float32 or not sums.is_contiguous() or sums.device != residual.device:
        raise ValueError(f"add_rms_norm_sums: the workspace must be contiguous fp32 on {residual.device}, got "
                         f"{sums.dtype} on {sums.device}")  # fmt: skip
    if not checked:
        check_sums_norm(residual, weight, sums.numel(), clear)
    elif sums.numel() < residual.numel():  # (the one check the caller could not make before its GEMV)
        raise ValueError(f"add_rms_norm_sums: sums of {sums.numel()} values for {list(residual.shape)}")
    t, n = residual.shape
    out = torch.empty_like(residual)
    if t == 0:
        return out
    block = triton.next_power_of_2(n)
    extra, clr = _clear_kw(clear, t, block)
    _add_rms_norm_kernel[(t + extra,)](
        sums, residual, weight, out, n, eps, n, residual.stride(0), out.stride(0), HAS_RES=True, BLOCK=block,
        num_warps=8 if block >= 2048 else 4, FROM_SUMS=_mode("SUMS_MODE", SUMS_MODE), **clr, **launch_kw(),
    )  # fmt: skip
    return out


def add_rms_norm_reference(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> torch.Tensor:
    """Pure torch, same contract (residual updated in place)."""
    h = x
    if residual is not None:
        residual.add_(x)
        h = residual
    h32 = h.to(torch.float32)
    h32 = h32 * torch.rsqrt(h32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h32.to(x.dtype)
