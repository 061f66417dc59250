"""Pure GPTQ on one weight W [N, K] with its Hessian H [K, K], as in IST-DASLab/gptq `gptq.py`.

Dead columns, damping (raised automatically when a Cholesky factorisation fails), upper Cholesky of H^-1,
blocks with lazy batch updates, groups, act-order (optionally with static groups), sym/asym grids.
Rows of W are independent, so one prepared Hessian serves every module that shares an input (q/k/v).
Deviation from the reference: without static groups a group's grid is taken from the *current* (already
error-updated) columns even when the group starts inside a block; with group_size == blocksize (default)
both agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .grid import GridParams, dequantize_codes, find_params, quantize_codes
from .spec import QuantizedWeight, QuantSpec


@dataclass(frozen=True)
class PreparedHessian:
    hinv: torch.Tensor  # [K, K] upper Cholesky factor of (H + damp I)^-1, in processing (perm) order
    perm: torch.Tensor | None  # [K] processing order -> original column, None without act-order
    dead: torch.Tensor  # [K] bool, original order: columns whose input is always 0
    percdamp: float


def prepare_hessian(h: torch.Tensor, spec: QuantSpec) -> PreparedHessian:
    if h.dim() != 2 or h.shape[0] != h.shape[1]:
        raise ValueError(f"Hessian must be square [K, K], got {tuple(h.shape)}")
    h = h.detach().float().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    perm: torch.Tensor | None = None
    if spec.act_order:
        perm = torch.argsort(torch.diag(h), descending=True, stable=True)
        h = h[perm][:, perm]
    mean_diag = torch.mean(torch.diag(h)).item()
    percdamp = spec.percdamp
    while True:
        hinv = _try_inverse_cholesky(h, percdamp * mean_diag)
        if hinv is not None:
            return PreparedHessian(hinv=hinv, perm=perm, dead=dead, percdamp=percdamp)
        percdamp = round(percdamp + spec.damp_increment, 10)
        if percdamp > spec.max_percdamp:
            raise ValueError(f"Hessian not positive definite even with damping {spec.max_percdamp} of mean diag")


def _try_inverse_cholesky(h: torch.Tensor, damp: float) -> torch.Tensor | None:
    hd = h.clone()
    hd.diagonal().add_(damp)
    lower, info = torch.linalg.cholesky_ex(hd)
    if int(info) != 0:
        return None
    upper, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(lower), upper=True)
    if int(info) != 0 or not bool(torch.isfinite(upper).all()):
        return None
    return upper


def gptq_quantize(w: torch.Tensor, h: torch.Tensor | PreparedHessian, spec: QuantSpec) -> QuantizedWeight:
    """Quantize w: [N, K] against h: [K, K] (or its prepared form)."""
    prep = h if isinstance(h, PreparedHessian) else prepare_hessian(h, spec)
    n_rows, k = w.shape
    if prep.hinv.shape != (k, k):
        raise ValueError(f"Hessian {tuple(prep.hinv.shape)} does not match weight in_features {k}")
    glen, n_groups = spec.group_len(k), spec.groups(k)
    wf = w.detach().float().clone()
    wf[:, prep.dead] = 0.0
    static = _static_groups(wf, spec) if spec.static_groups or spec.group_size == -1 else None
    perm = prep.perm
    if perm is not None:
        wf = wf[:, perm]
    codes = torch.zeros_like(wf)
    deq = torch.zeros_like(wf)
    scales = torch.zeros(n_rows, n_groups, device=wf.device)
    zeros = torch.zeros(n_rows, n_groups, device=wf.device)
    params: GridParams | None = None
    for i1 in range(0, k, spec.blocksize):
        i2 = min(i1 + spec.blocksize, k)
        w1 = wf[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        hinv1 = prep.hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if static is not None:
                orig = int(perm[col]) if perm is not None else col
                params = static[orig // glen]
            elif col % glen == 0:
                params = find_params(torch.cat([w1[:, i : i + glen], wf[:, i2 : col + glen]], dim=1), spec.bits, spec.sym)
                scales[:, col // glen], zeros[:, col // glen] = params.scale, params.zero
            if params is None:
                raise RuntimeError("internal: no grid for column")
            q = quantize_codes(w1[:, i], params)
            dq = dequantize_codes(q, params)
            codes[:, col], deq[:, col] = q, dq
            e = (w1[:, i] - dq) / hinv1[i, i]
            w1[:, i:] -= e.unsqueeze(1) @ hinv1[i, i:].unsqueeze(0)
            err1[:, i] = e
        wf[:, i2:] -= err1 @ prep.hinv[i1:i2, i2:]
    if static is not None:
        for g, p in enumerate(static):
            scales[:, g], zeros[:, g] = p.scale, p.zero
    g_idx = _g_idx(k, spec, perm, wf.device)
    if perm is not None:
        inv = torch.argsort(perm)
        codes, deq = codes[:, inv], deq[:, inv]
    return QuantizedWeight(
        codes=codes.to(torch.int32), scales=scales, zeros=zeros.to(torch.int32), g_idx=g_idx,
        dequant=deq, bits=spec.bits, group_size=spec.group_size, percdamp=prep.percdamp,
    )


def _static_groups(w: torch.Tensor, spec: QuantSpec) -> list[GridParams]:
    """Grids of the original (unpermuted, not yet updated) columns, one per group."""
    glen = spec.group_len(w.shape[1])
    return [find_params(w[:, g0 : g0 + glen], spec.bits, spec.sym) for g0 in range(0, w.shape[1], glen)]


def _g_idx(k: int, spec: QuantSpec, perm: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """g_idx: [K] group of each original column."""
    if spec.group_size == -1:
        return torch.zeros(k, dtype=torch.int32, device=device)
    order = torch.arange(k, device=device)
    if perm is None or spec.static_groups:
        return (order // spec.group_size).to(torch.int32)
    g_idx = torch.empty(k, dtype=torch.int32, device=device)
    g_idx[perm.to(device)] = (order // spec.group_size).to(torch.int32)
    return g_idx
