"""SwiGLU activation in one pass (Triton), plus its torch reference: out = silu(gate) * up, where
gate_up [T, 2 * I] holds gate in its first I columns and up in the last I (the fused gate/up projection).
`operand` (session 17, issue 4): out written in the tcsx wgmma operand's K order (fused_norm.operand_col: the down GEMV
then skips quant_tcsx's pre-pass; model.llama_fast's TCSX_XP plumbing decides when)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .fused_norm import operand_col
from .pdl import gdc_enter, gdc_late, launch_kw


@triton.jit
def _silu_mul_kernel(gu_ptr, out_ptr, inter, stride_g, stride_o, BLOCK: tl.constexpr, USE_GDC: tl.constexpr = 0,
                     OPERAND: tl.constexpr = 0):  # fmt: skip
    gdc_enter(USE_GDC)  # kernels.pdl
    row = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < inter
    g = tl.load(gu_ptr + row * stride_g + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(gu_ptr + row * stride_g + inter + offs, mask=mask, other=0.0).to(tl.float32)
    act = (g / (1.0 + tl.exp(-g))).to(out_ptr.dtype.element_ty).to(tl.float32)  # silu rounded like F.silu
    gdc_late(USE_GDC)
    if OPERAND:  # BLOCK a multiple of 128 (the host checks): a column stays in its 128-column tile
        dst = operand_col(offs)
    else:
        dst = offs
    tl.store(out_ptr + row * stride_o + dst, (act * u).to(out_ptr.dtype.element_ty), mask=mask)


def silu_mul(gate_up: torch.Tensor, operand: bool = False) -> torch.Tensor:
    """gate_up [T, 2 * I] -> silu(gate) * up [T, I]; operand (I a multiple of 128): in the wgmma operand's K order,
    = quant_tcl.permute_x(silu_mul(gate_up), None) bit for bit."""
    if gate_up.dim() != 2 or gate_up.shape[1] % 2 or gate_up.stride(1) != 1:
        raise ValueError(f"silu_mul needs a row-major [T, 2 * I] input, got {tuple(gate_up.shape)}")
    if operand and (gate_up.shape[1] // 2) % 128:
        raise ValueError(f"silu_mul: the operand order needs I a multiple of 128, got {gate_up.shape[1] // 2}")
    t, inter = gate_up.shape[0], gate_up.shape[1] // 2
    out = torch.empty(t, inter, dtype=gate_up.dtype, device=gate_up.device)
    if t == 0:
        return out
    block = min(1024, triton.next_power_of_2(inter))
    _silu_mul_kernel[(t, triton.cdiv(inter, block))](gate_up, out, inter, gate_up.stride(0), out.stride(0),
                                                     BLOCK=block, num_warps=4, OPERAND=int(operand),
                                                     **launch_kw())  # fmt: skip
    return out


def silu_mul_reference(gate_up: torch.Tensor) -> torch.Tensor:
    inter = gate_up.shape[1] // 2
    return torch.nn.functional.silu(gate_up[:, :inter]) * gate_up[:, inter:]
