"""Residual add + RMSNorm in one pass (Triton), plus its torch reference.

    h = residual + x          (in the activation dtype, written back into `residual` in place)
    out = weight * (h32 * rsqrt(mean(h32^2) + eps)).to(dtype)       (h32 = h in fp32)
Without a residual, out = RMSNorm(x) and nothing is written back. Rounding follows model.llama.rms_norm:
the add and the normalised value are each rounded to the activation dtype before the next operation.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .pdl import gdc_late, gdc_start, gdc_wait, launch_kw


@triton.jit
def _add_rms_norm_kernel(
    x_ptr, res_ptr, w_ptr, out_ptr, n, eps, stride_x, stride_r, stride_o,
    HAS_RES: tl.constexpr, BLOCK: tl.constexpr, USE_GDC: tl.constexpr = 0,
):  # fmt: skip
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    mask = offs < n
    gdc_start(USE_GDC)
    w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)  # a weight: before the PDL wait (kernels.pdl)
    gdc_wait(USE_GDC)
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
    tl.store(out_ptr + row * stride_o + offs, (w * normed).to(out_ptr.dtype.element_ty), mask=mask)


def add_rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> torch.Tensor:
    """x [T, n] -> RMSNorm(residual + x) [T, n]; residual (if given) is updated in place to residual + x."""
    if x.dim() != 2 or weight.shape != (x.shape[1],) or x.stride(1) != 1:
        raise ValueError(f"add_rms_norm: x {tuple(x.shape)} (row-major 2-D) and weight {tuple(weight.shape)}")
    if residual is not None and (residual.shape != x.shape or residual.stride(1) != 1):
        raise ValueError(f"residual {tuple(residual.shape)} must match x {tuple(x.shape)}")
    out = torch.empty_like(x)
    t, n = x.shape
    if t == 0:
        return out
    res = residual if residual is not None else x
    block = triton.next_power_of_2(n)
    _add_rms_norm_kernel[(t,)](
        x, res, weight, out, n, eps, x.stride(0), res.stride(0), out.stride(0),
        HAS_RES=residual is not None, BLOCK=block, num_warps=8 if block >= 2048 else 4, **launch_kw(),
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
