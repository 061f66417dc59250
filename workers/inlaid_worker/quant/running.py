"""Running aggregates: every Hessian aggregation (aggregate.py) as a left fold over the tasks in a fixed order,
on upper triangles, whose state is small (a triangle or two and a vector) and is persisted per layer. Adding
a task folds its Hessian into the stored state, O(1) in the number of tasks; a full quantization folds the
same tasks in the same order with the same operations, so both give bit-identical Hessians (all operations
are element-wise IEEE fp32 ops, identical on CPU and GPU). Removing a task refolds the kept tasks' stored
Hessians (the rare path).

State parts per aggregation (T tasks folded, N tokens in all):
  mean     sum = H_1 + ... + H_T                       -> sum / T
  diagmax  sum, diag = max_t diag(H_t)                 -> sum / T with its diagonal replaced by diag
  max      max = max_t H_t (element-wise)              -> PSD projection of max
  pooled   wsum = n_1 H_1 + ... + n_T H_T              -> wsum / N
  trace    rsum = sum_t H_t / tr(H_t), trmax = max tr  -> rsum * (trmax / T)
  corrmax  cmax = max_t D_t^-1/2 H_t D_t^-1/2, dmax = max_t sqrt(diag H_t)  -> PSD projection of dmax cmax dmax
  single   sum (exactly one task)                      -> sum
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from .triangle import diag_index, from_triangle, scale_rows_cols, tri_size

Aggregation = Literal["max", "mean", "diagmax", "trace", "corrmax", "pooled", "single"]
AGGREGATIONS: tuple[Aggregation, ...] = ("max", "mean", "diagmax", "trace", "corrmax", "pooled", "single")
PARTS: dict[str, tuple[str, ...]] = {
    "mean": ("sum",), "diagmax": ("sum", "diag"), "max": ("max",), "pooled": ("wsum",), "trace": ("rsum", "trmax"),
    "corrmax": ("cmax", "dmax"), "single": ("sum",),
}


@dataclass
class Running:
    """One input group's fold state after `tasks` (in fold order) with `tokens` calibration tokens in all."""

    how: Aggregation
    k: int
    tasks: list[str] = field(default_factory=list)
    tokens: int = 0
    parts: dict[str, torch.Tensor] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> Running:
        return Running(self.how, self.k, list(self.tasks), self.tokens, {n: p.to(device) for n, p in self.parts.items()})


def check_aggregation(how: str) -> Aggregation:
    if how not in PARTS:
        raise ValueError(f"unknown aggregation {how!r}; expected one of {AGGREGATIONS}")
    return how  # type: ignore[return-value]


def empty(how: str, k: int) -> Running:
    return Running(check_aggregation(how), k)


def fold(state: Running, name: str, tri: torch.Tensor, tokens: int) -> Running:
    """The state with task `name` (upper triangle `tri` of its H, `tokens` tokens) folded in last."""
    how, k = state.how, state.k
    if tri.dim() != 1 or tri.numel() != tri_size(k):
        raise ValueError(f"task {name!r}: Hessian triangle has {tri.numel()} values, expected {tri_size(k)} (K={k})")
    if name in state.tasks:
        raise ValueError(f"task {name!r} is already folded into the aggregate")
    if how == "single" and state.tasks:
        raise ValueError(f"single-task aggregation needs exactly one task, got {[*state.tasks, name]}")
    tri = tri.float()
    first, p = not state.tasks, dict(state.parts)
    didx = diag_index(k, tri.device)

    def acc(part: str, value: torch.Tensor, op: str) -> None:
        if first:
            p[part] = value  # may alias `tri`: parts are never modified in place
        else:
            p[part] = p[part] + value if op == "add" else torch.maximum(p[part], value)

    if how in ("mean", "diagmax", "single"):
        acc("sum", tri, "add")
    if how == "diagmax":
        acc("diag", tri[didx], "max")
    elif how == "max":
        acc("max", tri, "max")
    elif how == "pooled":
        acc("wsum", tri * float(tokens), "add")
    elif how == "trace":
        tr = float(tri[didx].double().sum().cpu())
        if tr <= 0:
            raise ValueError(f"task {name!r}: its Hessian has a non-positive trace")
        acc("rsum", tri / torch.tensor(tr, dtype=tri.dtype, device=tri.device), "add")
        acc("trmax", torch.tensor([tr], dtype=torch.float64, device=tri.device), "max")
    elif how == "corrmax":
        d = tri[didx].clamp(min=0).sqrt()
        inv = torch.where(d > 0, 1.0 / d, torch.zeros_like(d))
        acc("cmax", scale_rows_cols(tri, k, inv), "max")
        acc("dmax", d, "max")
    return Running(how, k, [*state.tasks, name], state.tokens + int(tokens), p)


def project_psd(h: torch.Tensor) -> torch.Tensor:
    """Nearest PSD matrix in Frobenius norm (negative eigenvalues set to 0), exactly symmetric, fp32."""
    evals, evecs = torch.linalg.eigh(h.double())
    if bool((evals >= 0).all()):
        return h.clone()
    p = (evecs * evals.clamp(min=0.0)) @ evecs.t()
    p = ((p + p.t()) * 0.5).float()
    return (p + p.t()) * 0.5


def finish(state: Running) -> torch.Tensor:
    """The aggregated [K, K] Hessian GPTQ quantizes with, on the state's device."""
    how, k, p, t = state.how, state.k, state.parts, len(state.tasks)
    if t == 0:
        raise ValueError("no task Hessians to aggregate")
    if how == "single":
        return from_triangle(p["sum"], k)
    if how == "mean":
        return from_triangle(p["sum"] / t, k)
    if how == "diagmax":
        tri = p["sum"] / t
        tri[diag_index(k, tri.device)] = p["diag"]
        return from_triangle(tri, k)
    if how == "max":
        return project_psd(from_triangle(p["max"], k))
    if how == "pooled":
        return from_triangle(p["wsum"] / float(state.tokens), k)
    if how == "trace":
        scale = torch.tensor(float(p["trmax"].max()) / t, dtype=p["rsum"].dtype, device=p["rsum"].device)
        return from_triangle(p["rsum"] * scale, k)
    return project_psd(from_triangle(scale_rows_cols(p["cmax"], k, p["dmax"]), k))  # corrmax


def unprojected(state: Running) -> torch.Tensor:
    """max / corrmax before the PSD projection (what the paper's max is); other aggregations: finish()."""
    if state.how == "max":
        return from_triangle(state.parts["max"], state.k)
    if state.how == "corrmax":
        return from_triangle(scale_rows_cols(state.parts["cmax"], state.k, state.parts["dmax"]), state.k)
    return finish(state)
