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

Each is a left fold over the tasks in a fixed order (running.py): checkpoints fold in task insertion order
(the order tasks were quantized or added), which is what makes adding a task O(1) and incremental = full
bit for bit. The functions here take full symmetric matrices and fold them in name order, so they are
functions of the set of tasks.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .running import AGGREGATIONS, Aggregation, Running, empty, finish, fold, project_psd, unprojected
from .triangle import to_triangle

__all__ = ["AGGREGATIONS", "Aggregation", "aggregate", "fold_named", "max_aggregate", "pooled_aggregate",
           "project_psd"]


def fold_named(how: str, per_task: Mapping[str, torch.Tensor], tokens: Mapping[str, int]) -> Running:
    """Fold full symmetric [K, K] matrices in name order (pooled needs every task's token count)."""
    if not per_task:
        raise ValueError("no task Hessians to aggregate")
    if how == "pooled":
        missing = set(per_task) - set(tokens)
        if missing:
            raise ValueError(f"token counts missing for {sorted(missing)}")
    names = sorted(per_task)
    state = empty(how, per_task[names[0]].shape[0])
    for n in names:
        state = fold(state, n, to_triangle(per_task[n].float()), tokens.get(n, 0))
    return state


def aggregate(how: Aggregation, per_task: Mapping[str, torch.Tensor], tokens: Mapping[str, int]) -> torch.Tensor:
    if how == "single" and len(per_task) != 1:
        raise ValueError(f"single-task aggregation needs exactly one task, got {sorted(per_task)}")
    return finish(fold_named(how, per_task, tokens))


def max_aggregate(per_task: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Element-wise max (not projected)."""
    return unprojected(fold_named("max", per_task, {}))


def pooled_aggregate(per_task: Mapping[str, torch.Tensor], tokens: Mapping[str, int]) -> torch.Tensor:
    return finish(fold_named("pooled", per_task, tokens))


def mean_aggregate(per_task: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """(1/T) sum_t H_t: every task weighs the same whatever its token count. PSD."""
    return finish(fold_named("mean", per_task, {}))


def diagmax_aggregate(per_task: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean of the H_t with its diagonal raised to the element-wise max of the diagonals (PSD, see above)."""
    return finish(fold_named("diagmax", per_task, {}))


def trace_aggregate(per_task: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean of the H_t each rescaled to the largest trace among them, so no task is drowned. PSD."""
    return finish(fold_named("trace", per_task, {}))


def corrmax_aggregate(per_task: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Element-wise max of the correlation matrices D_t^-1/2 H_t D_t^-1/2, rescaled by the max diagonal."""
    return unprojected(fold_named("corrmax", per_task, {}))
