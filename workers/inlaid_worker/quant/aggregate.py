"""How per-task Hessians of one input group become the one Hessian GPTQ uses.

- diagmax (MLGPTQ's default): the mean of the token-normalised per-task H_t (each computed with its
  adapter) with its diagonal replaced by the element-wise max of the diagonals. Every input channel gets
  the largest energy any task puts on it, as in the paper's max, while the correlations GPTQ's error
  compensation relies on are a real average of the tasks'. PSD by construction (a non-negative diagonal
  added to a PSD mean), no projection.
- max (the paper's element-wise max, selectable by name): element-wise max over tasks of H_t, projected
  onto the PSD cone (the max of PSD matrices is not PSD: on SmolLM2 eigenvalues down to -927 against a
  largest of 2.3e4). The off-diagonal max invents correlations no task has, and GPTQ "compensates" along
  them: on SmolLM2-135M its layer error (GPTQ's objective under each task's true H_t) is 2-3x the
  other aggregations' and its answer NLL collapses (bench/results/quality-nll-2026-11-29.md).
- mean, trace (each H_t rescaled to the largest trace, then the mean), corrmax (element-wise max of the
  correlation matrices rescaled by the max diagonal, projected): alternatives measured in the same table.
- pooled ("gptq", the paper's GPTQ-tweaked): the Hessian of all tasks' data pooled without adapters,
  sum_t n_t H_t / sum_t n_t (= 2 / N sum over all tokens x x^T).
- single ("gptq-task"): one task's H_t.

Every aggregation is a deterministic function of the set of stored per-task Hessians (tasks in sorted
order), so incremental quantization (stored + new) equals quantizing all tasks at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch

Aggregation = Literal["max", "mean", "diagmax", "trace", "corrmax", "pooled", "single"]
AGGREGATIONS: tuple[Aggregation, ...] = ("max", "mean", "diagmax", "trace", "corrmax", "pooled", "single")


def max_aggregate(per_task: Mapping[str, torch.Tensor]) -> torch.Tensor:
    if not per_task:
        raise ValueError("no task Hessians to aggregate")
    names = sorted(per_task)
    out = per_task[names[0]].clone()
    for name in names[1:]:
        torch.maximum(out, per_task[name], out=out)
    return out


def project_psd(h: torch.Tensor) -> torch.Tensor:
    """Nearest PSD matrix in Frobenius norm (negative eigenvalues set to 0), exactly symmetric, fp32."""
    evals, evecs = torch.linalg.eigh(h.double())
    if bool((evals >= 0).all()):
        return h.clone()
    p = (evecs * evals.clamp(min=0.0)) @ evecs.t()
    p = ((p + p.t()) * 0.5).float()
    return (p + p.t()) * 0.5


def pooled_aggregate(per_task: Mapping[str, torch.Tensor], tokens: Mapping[str, int]) -> torch.Tensor:
    if not per_task:
        raise ValueError("no task Hessians to aggregate")
    missing = set(per_task) - set(tokens)
    if missing:
        raise ValueError(f"token counts missing for {sorted(missing)}")
    total = sum(tokens[n] for n in per_task)
    names = sorted(per_task)
    out = torch.zeros_like(per_task[names[0]])
    for name in names:
        out += per_task[name] * (tokens[name] / total)
    return out


def _stack(per_task: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """[T, K, K] in sorted task order (a deterministic function of the set of tasks)."""
    if not per_task:
        raise ValueError("no task Hessians to aggregate")
    return torch.stack([per_task[n].float() for n in sorted(per_task)])


def mean_aggregate(per_task: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """(1/T) sum_t H_t: every task weighs the same whatever its token count. PSD."""
    return _stack(per_task).mean(dim=0)


def diagmax_aggregate(per_task: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean of the H_t with its diagonal raised to the element-wise max of the diagonals.

    Adds a non-negative diagonal to a PSD matrix, hence PSD without projection: every input channel gets
    the largest energy any task puts on it (the max's intent) while correlations stay a valid average.
    """
    s = _stack(per_task)
    out = s.mean(dim=0)
    out.diagonal().copy_(s.diagonal(dim1=1, dim2=2).amax(dim=0))
    return out


def trace_aggregate(per_task: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean of the H_t each rescaled to the largest trace among them, so no task is drowned. PSD."""
    s = _stack(per_task)
    tr = s.diagonal(dim1=1, dim2=2).sum(dim=1)  # [T]
    if bool((tr <= 0).any()):
        raise ValueError("a task Hessian has a non-positive trace")
    return (s * (tr.max() / tr)[:, None, None]).mean(dim=0)


def corrmax_aggregate(per_task: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Element-wise max of the correlation matrices D_t^-1/2 H_t D_t^-1/2, rescaled by the max diagonal."""
    s = _stack(per_task)
    d = s.diagonal(dim1=1, dim2=2).clamp(min=0).sqrt()  # [T, K]
    inv = torch.where(d > 0, 1.0 / d, torch.zeros_like(d))
    corr = (s * inv[:, :, None] * inv[:, None, :]).amax(dim=0)
    dmax = d.amax(dim=0)
    out = corr * dmax[:, None] * dmax[None, :]
    return (out + out.t()) * 0.5


_MULTI = {"mean": mean_aggregate, "diagmax": diagmax_aggregate, "trace": trace_aggregate}


def aggregate(how: Aggregation, per_task: Mapping[str, torch.Tensor], tokens: Mapping[str, int]) -> torch.Tensor:
    if how == "max":
        return project_psd(max_aggregate(per_task))
    if how == "corrmax":
        return project_psd(corrmax_aggregate(per_task))
    if how in _MULTI:
        return _MULTI[how](per_task)
    if how == "pooled":
        return pooled_aggregate(per_task, tokens)
    if how == "single":
        if len(per_task) != 1:
            raise ValueError(f"single-task aggregation needs exactly one task, got {sorted(per_task)}")
        return next(iter(per_task.values())).clone()
    raise ValueError(f"unknown aggregation {how!r}; expected one of {AGGREGATIONS}")
