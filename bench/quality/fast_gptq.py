"""Batched GPTQ / RTN and batched Hessian aggregations for the quality table (pure torch).

`gptq_batched(w [B, N, K], h [B, K, K], ...)` runs B independent GPTQ problems in one column loop, so all
layers x configurations (methods, seeds, tasks) of one input group are quantized together on the GPU.
Same algorithm as inlaid_worker.quant.gptq.gptq_quantize (dead columns, damping raised by 0.01 of the mean
diagonal per element until Cholesky succeeds, upper Cholesky of H^-1, lazy block updates, groups,
act-order with or without static groups, sym/asym grids with fp16-representable scales); a test checks
equality with it. One difference: K need not be a multiple of the group size (the last group is shorter, as in
AutoGPTQ's ceil(K / group_size) layout: SmolLM2's K = 576 at g128 is 4 x 128 + 64).
Returns the fake-quantized (dequantized) weights, which is all the table needs.
"""

from __future__ import annotations

import torch

_FP16_MIN_NORMAL = 2.0**-14


def grid_batched(x: torch.Tensor, bits: int, sym: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero) [...] of each row of x [..., G]: inlaid_worker.quant.grid.find_params, batched."""
    maxq = 2**bits - 1
    x = x.float()
    xmin = x.amin(dim=-1).clamp(max=0.0)
    xmax = x.amax(dim=-1).clamp(min=0.0)
    if sym:
        xmax = torch.maximum(xmin.abs(), xmax)
        xmin = torch.where(xmin < 0, -xmax, xmin)
    empty = (xmin == 0) & (xmax == 0)
    xmin = torch.where(empty, torch.full_like(xmin, -1.0), xmin)
    xmax = torch.where(empty, torch.full_like(xmax, 1.0), xmax)
    scale = ((xmax - xmin) / maxq).clamp(min=_FP16_MIN_NORMAL).half().float()
    zero = torch.full_like(scale, (maxq + 1) / 2) if sym else torch.round(-xmin / scale).clamp(0, maxq)
    return scale, zero


def _fake(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int) -> torch.Tensor:
    return scale * (torch.clamp(torch.round(w / scale) + zero, 0, maxq) - zero)


def rtn_batched(w: torch.Tensor, bits: int, group_size: int, sym: bool = True) -> torch.Tensor:
    """Round-to-nearest of w [..., N, K] group by group along K (last group may be shorter)."""
    k = w.shape[-1]
    glen = k if group_size == -1 else group_size
    out = torch.empty_like(w, dtype=torch.float32)
    for g0 in range(0, k, glen):
        cols = w[..., g0 : g0 + glen].float()
        scale, zero = grid_batched(cols, bits, sym)
        out[..., g0 : g0 + glen] = _fake(cols, scale[..., None], zero[..., None], 2**bits - 1)
    return out


def prepare_batched(
    h: torch.Tensor, act_order: bool, percdamp: float = 0.01, step: float = 0.01, max_percdamp: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """(hinv upper [B, K, K] in processing order, perm [B, K] or None, dead [B, K], percdamp used [B])."""
    h = h.float().clone()
    b, k, _ = h.shape
    diag = torch.diagonal(h, dim1=1, dim2=2)
    dead = diag == 0
    diag.masked_fill_(dead, 1.0)  # h[dead, dead] = 1 (a view: writes into h)
    perm = None
    if act_order:
        perm = torch.sort(torch.diagonal(h, dim1=1, dim2=2), dim=1, descending=True, stable=True).indices
        h = torch.gather(h, 1, perm[:, :, None].expand(b, k, k))
        h = torch.gather(h, 2, perm[:, None, :].expand(b, k, k))
    mean_diag = torch.diagonal(h, dim1=1, dim2=2).mean(dim=1)  # [B]
    damp = torch.full((b,), percdamp, dtype=torch.float64, device=h.device)
    hinv = torch.empty_like(h)
    todo = torch.arange(b, device=h.device)
    eye = torch.eye(k, device=h.device)
    while todo.numel():
        hd = h[todo] + (damp[todo].float() * mean_diag[todo])[:, None, None] * eye
        lower, info = torch.linalg.cholesky_ex(hd)
        upper, info2 = torch.linalg.cholesky_ex(torch.cholesky_inverse(lower), upper=True)
        ok = (info == 0) & (info2 == 0) & torch.isfinite(upper).flatten(1).all(dim=1)
        hinv[todo[ok]] = upper[ok]
        todo = todo[~ok]
        if todo.numel():
            damp[todo] = torch.round((damp[todo] + step) * 1e10) / 1e10
            if bool((damp[todo] > max_percdamp).any()):
                raise ValueError(f"Hessian not positive definite even with damping {max_percdamp} of mean diag")
    return hinv, perm, dead, damp


def gptq_batched(
    w: torch.Tensor,
    h: torch.Tensor,
    bits: int,
    group_size: int = 128,
    sym: bool = True,
    act_order: bool = False,
    percdamp: float = 0.01,
    blocksize: int = 128,
    static_groups: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fake-quantized w [B, N, K] fp32 (original column order) and the damping used [B].

    static_groups: every group's grid is fixed up front from the original (unpermuted, not yet
    error-updated) columns, as gptq.py's static groups; with act-order the columns are then processed in
    the permuted order, each on its original group's grid, so g_idx stays k // group_size (the layout the
    serving kernels read)."""
    hinv, perm, dead, damp = prepare_batched(h, act_order, percdamp)
    b, n, k = w.shape
    glen = k if group_size == -1 else group_size
    maxq = 2**bits - 1
    wf = w.float().clone()
    wf.masked_fill_(dead[:, None, :], 0.0)
    static = _static_grids(wf, bits, glen, sym, perm) if static_groups else None
    if perm is not None:
        wf = torch.gather(wf, 2, perm[:, None, :].expand(b, n, k))
    deq = torch.zeros_like(wf)
    scale = zero = None
    for i1 in range(0, k, blocksize):
        i2 = min(i1 + blocksize, k)
        w1 = wf[:, :, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[:, i1:i2, i1:i2]
        d = torch.diagonal(hinv1, dim1=1, dim2=2)  # [B, count]
        if static is not None:
            s_blk, z_blk = (torch.gather(x, 2, static[2][:, None, i1:i2].expand(b, n, i2 - i1)) for x in static[:2])
        for i in range(i2 - i1):
            col = i1 + i
            if static is not None:
                scale, zero = s_blk[:, :, i], z_blk[:, :, i]
            elif col % glen == 0:
                end = col + glen
                cols = w1[:, :, i : min(i + glen, i2 - i1)]
                if end > i2:
                    cols = torch.cat([cols, wf[:, :, i2:end]], dim=2)
                scale, zero = grid_batched(cols, bits, sym)
            wc = w1[:, :, i]
            dq = _fake(wc, scale, zero, maxq)
            deq[:, :, col] = dq
            e = (wc - dq) / d[:, i : i + 1]
            w1[:, :, i:] -= e[:, :, None] * hinv1[:, i : i + 1, i:]
            err1[:, :, i] = e
        if i2 < k:
            wf[:, :, i2:] -= torch.bmm(err1, hinv[:, i1:i2, i2:])
    if perm is not None:
        inv = torch.argsort(perm, dim=1)
        deq = torch.gather(deq, 2, inv[:, None, :].expand(b, n, k))
    return deq, damp


def _static_grids(
    wf: torch.Tensor, bits: int, glen: int, sym: bool, perm: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(scale [B, N, G], zero [B, N, G], group of each processed column [B, K]) from the original columns."""
    b, _n, k = wf.shape
    grids = [grid_batched(wf[:, :, g0 : g0 + glen], bits, sym) for g0 in range(0, k, glen)]
    scale = torch.stack([g[0] for g in grids], dim=2)
    zero = torch.stack([g[1] for g in grids], dim=2)
    order = torch.arange(k, device=wf.device).expand(b, k) if perm is None else perm
    return scale, zero, order // glen


# --- aggregations, batched over a leading layer axis: per_task [T, L, K, K] -> [L, K, K] ---------------
def project_psd_batched(h: torch.Tensor) -> torch.Tensor:
    """aggregate.project_psd per matrix: unchanged where PSD, else negative eigenvalues clipped."""
    evals, evecs = torch.linalg.eigh(h.double())
    p = (evecs * evals.clamp(min=0.0)[..., None, :]) @ evecs.transpose(-1, -2)
    p = ((p + p.transpose(-1, -2)) * 0.5).float()
    p = (p + p.transpose(-1, -2)) * 0.5
    psd = (evals >= 0).all(dim=-1)
    return torch.where(psd[..., None, None], h, p)


def aggregate_batched(how: str, per_task: torch.Tensor) -> torch.Tensor:
    """per_task [T, L, K, K] (tasks in sorted order) -> [L, K, K], as aggregate.aggregate does per layer."""
    if how == "max":
        return project_psd_batched(per_task.amax(dim=0))
    if how == "mean":
        return per_task.mean(dim=0)
    if how == "diagmax":
        out = per_task.mean(dim=0)
        torch.diagonal(out, dim1=-2, dim2=-1).copy_(torch.diagonal(per_task, dim1=-2, dim2=-1).amax(dim=0))
        return out
    if how == "trace":
        tr = torch.diagonal(per_task, dim1=-2, dim2=-1).sum(dim=-1)  # [T, L]
        return (per_task * (tr.amax(dim=0) / tr)[:, :, None, None]).mean(dim=0)
    raise ValueError(f"unknown aggregation {how!r}")
