"""Round-to-nearest on the same grid as GPTQ (no data, groups in natural column order)."""

from __future__ import annotations

import torch

from .grid import dequantize_codes, find_params, quantize_codes
from .spec import QuantizedWeight, QuantSpec


def rtn_quantize(w: torch.Tensor, spec: QuantSpec) -> QuantizedWeight:
    """Quantize w: [N, K] group by group; act_order does not apply (no Hessian)."""
    n_rows, k = w.shape
    glen, n_groups = spec.group_len(k), spec.groups(k)
    wf = w.detach().float()
    codes = torch.empty_like(wf)
    deq = torch.empty_like(wf)
    scales = torch.empty(n_rows, n_groups, device=wf.device)
    zeros = torch.empty(n_rows, n_groups, device=wf.device)
    for g in range(n_groups):
        cols = slice(g * glen, (g + 1) * glen)
        p = find_params(wf[:, cols], spec.bits, spec.sym)
        codes[:, cols] = quantize_codes(wf[:, cols], p)
        deq[:, cols] = dequantize_codes(codes[:, cols], p)
        scales[:, g], zeros[:, g] = p.scale, p.zero
    g_idx = (torch.arange(k, device=wf.device) // glen).to(torch.int32)
    return QuantizedWeight(
        codes=codes.to(torch.int32), scales=scales, zeros=zeros.to(torch.int32), g_idx=g_idx,
        dequant=deq, bits=spec.bits, group_size=spec.group_size,
    )
