"""Pure fitting core for the simulator's step-time cost model (libs/sim/src/cost-model.ts), from timed steps.

A cost point is one timed step of the worker: {"prefill_tokens", "decode_seqs", "distinct_adapters", "rank",
"kv_tokens", "step_s"} (rank = the adapters' LoRA rank, 0 when the step ran no adapter). Candidate models:

  linear5:      step_s = base + prefill*p + decode_seqs*d + distinct_adapters*a + kv_tokens*k
  +lora:        + lora_tokens*l, lora_tokens = (prefill + decode_seqs) * rank/ref_rank when the step ran
                adapters (the shrink/expand work every adapted token does, proportional to rank)
  +pstep:       + [prefill_tokens > 0]*s, a fixed cost of any step that prefills (e.g. decode steps replayed
                from CUDA graphs while prefill runs eagerly)

Fits minimise squared RELATIVE error (rows divided by step_s) with non-negative constants (Lawson-Hanson).
The error is judged on held-out points (every `holdout_every`-th point of a deterministic order), then the
kept constants are refitted on all points. The simulator has no lora term, so `project` folds it into the
per-token constants at the reference rank (every simulated request runs an adapter).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SIM_FEATURES = ("base_s", "prefill_token_s", "decode_row_s", "adapter_s", "kv_token_s")
#: The simulator's full term set: the five above plus the optional fixed cost of a prefill step.
SIM_TERMS = (*SIM_FEATURES, "prefill_step_s")
POINT_KEYS = ("prefill_tokens", "decode_seqs", "distinct_adapters", "rank", "kv_tokens", "step_s")
MODELS = {
    "linear5": SIM_FEATURES,
    "linear5+lora": (*SIM_FEATURES, "lora_token_s"),
    "linear5+pstep": SIM_TERMS,
    "linear5+pstep+lora": (*SIM_TERMS, "lora_token_s"),
    "sim": SIM_TERMS,
}


@dataclass(frozen=True)
class CostPoint:
    prefill_tokens: int
    decode_seqs: int
    distinct_adapters: int
    rank: int
    kv_tokens: float
    step_s: float

    @property
    def kind(self) -> str:
        return "mixed" if self.prefill_tokens and self.decode_seqs else "prefill" if self.prefill_tokens else "decode"


def parse_points(raw: object) -> list[CostPoint]:
    """Validates a list of cost-point dicts (extra keys are ignored); raises ValueError naming the bad point."""
    if not isinstance(raw, list) or not raw:
        raise ValueError("cost_points must be a non-empty list")
    out = []
    for i, p in enumerate(raw):
        if not isinstance(p, dict):
            raise ValueError(f"cost_points[{i}] is not an object")
        missing = [k for k in POINT_KEYS if k not in p]
        if missing:
            raise ValueError(f"cost_points[{i}] lacks {', '.join(missing)}")
        vals = {k: p[k] for k in POINT_KEYS}
        if any(
            not isinstance(v, int | float) or isinstance(v, bool) or not np.isfinite(v) or v < 0 for v in vals.values()
        ):
            raise ValueError(f"cost_points[{i}]: every field must be a finite number >= 0, got {vals}")
        if vals["step_s"] <= 0:
            raise ValueError(f"cost_points[{i}]: step_s must be > 0")
        if vals["prefill_tokens"] + vals["decode_seqs"] <= 0:
            raise ValueError(f"cost_points[{i}]: a step needs prefill_tokens or decode_seqs")
        if vals["distinct_adapters"] > 0 and vals["rank"] <= 0:
            raise ValueError(f"cost_points[{i}]: distinct_adapters > 0 needs rank > 0")
        out.append(CostPoint(int(vals["prefill_tokens"]), int(vals["decode_seqs"]), int(vals["distinct_adapters"]),
                             int(vals["rank"]), float(vals["kv_tokens"]), float(vals["step_s"])))  # fmt: skip
    return out


def design(points: Sequence[CostPoint], model: str, ref_rank: int) -> np.ndarray:
    """Feature matrix of `model` (columns in MODELS[model] order)."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; expected one of {', '.join(MODELS)}")
    rows = []
    for p in points:
        col = {
            "base_s": 1.0,
            "prefill_token_s": p.prefill_tokens,
            "decode_row_s": p.decode_seqs,
            "adapter_s": p.distinct_adapters,
            "kv_token_s": p.kv_tokens,
            "prefill_step_s": 1.0 if p.prefill_tokens else 0.0,
            "lora_token_s": (p.prefill_tokens + p.decode_seqs) * p.rank / ref_rank if p.distinct_adapters else 0.0,
        }
        rows.append([col[k] for k in MODELS[model]])
    return np.array(rows, dtype=float)


def nnls(a: np.ndarray, b: np.ndarray, max_iter: int = 200) -> np.ndarray:
    """Lawson-Hanson non-negative least squares: argmin ||a x - b|| subject to x >= 0."""
    n = a.shape[1]
    x, passive = np.zeros(n), np.zeros(n, dtype=bool)
    scale = np.linalg.norm(a, axis=0)
    scale[scale == 0] = 1.0
    a_s = a / scale  # columns of very different magnitude (1 vs 1e5 tokens): solve in unit-norm columns
    for _ in range(max_iter):
        w = a_s.T @ (b - a_s @ x)
        if passive.all() or w[~passive].max(initial=-np.inf) <= 1e-12:
            break
        passive[int(np.argmax(np.where(passive, -np.inf, w)))] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a_s[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            neg = passive & (z <= 0)
            alpha = np.min(x[neg] / (x[neg] - z[neg]))
            x = x + alpha * (z - x)
            passive &= x > 1e-15
            x[~passive] = 0.0
    return x / scale


def fit(points: Sequence[CostPoint], model: str, ref_rank: int) -> dict[str, float]:
    """Constants of `model` minimising squared relative error, all >= 0."""
    x = design(points, model, ref_rank)
    y = np.array([p.step_s for p in points])
    coef = nnls(x / y[:, None], np.ones(len(points)))
    return dict(zip(MODELS[model], (float(c) for c in coef), strict=True))


def predict(coef: dict[str, float], points: Sequence[CostPoint], model: str, ref_rank: int) -> np.ndarray:
    return design(points, model, ref_rank) @ np.array([coef.get(k, 0.0) for k in MODELS[model]])


def rel_errors(coef: dict[str, float], points: Sequence[CostPoint], model: str, ref_rank: int) -> np.ndarray:
    y = np.array([p.step_s for p in points])
    return np.abs(predict(coef, points, model, ref_rank) - y) / y


def summary(rel: np.ndarray) -> dict[str, float]:
    if rel.size == 0:
        return {"n": 0}
    return {"n": int(rel.size), "mean_rel": float(np.mean(rel)), "median_rel": float(np.median(rel)), "p90_rel": float(np.quantile(rel, 0.9)),
            "max_rel": float(rel.max())}  # fmt: skip


def split(points: Sequence[CostPoint], holdout_every: int) -> tuple[list[CostPoint], list[CostPoint]]:
    """Deterministic held-out split: sort by (kind, shape), hold out every `holdout_every`-th point."""
    if holdout_every < 2:
        raise ValueError("holdout_every must be >= 2")
    order = sorted(
        points, key=lambda p: (p.kind, p.distinct_adapters, p.rank, p.decode_seqs, p.prefill_tokens, p.kv_tokens)
    )
    held = [p for i, p in enumerate(order) if i % holdout_every == holdout_every // 2]
    train = [p for i, p in enumerate(order) if i % holdout_every != holdout_every // 2]
    return train, held


def project(coef: dict[str, float], model: str) -> dict[str, float]:
    """The simulator's constants at the reference rank for steps whose rows all run an adapter."""
    out = {k: coef.get(k, 0.0) for k in SIM_TERMS}
    if "lora_token_s" in MODELS[model]:
        out["prefill_token_s"] += coef["lora_token_s"]
        out["decode_row_s"] += coef["lora_token_s"]
    return out


def serving_points(points: Sequence[CostPoint], ref_rank: int) -> list[CostPoint]:
    """Points in the simulator's regime: every row runs an adapter of the reference rank."""
    return [p for p in points if p.distinct_adapters > 0 and p.rank == ref_rank]


def choose_and_fit(points: Sequence[CostPoint], ref_rank: int, holdout_every: int = 5) -> dict:
    """Fits every candidate on the training split, keeps the one with the lowest held-out mean relative
    error (the mean, not the median: a few badly fitted prefill steps matter) of its simulator projection on serving points (all held-out points when there are none), refits it
    on all points. Returns the projected constants, the choice and every candidate's errors."""
    train, held = split(points, holdout_every)
    if len(train) < len(SIM_FEATURES) + 1:
        raise ValueError(f"need at least {len(SIM_FEATURES) + 1 + len(held)} points, got {len(points)}")
    cands = {}
    for model in (m for m in MODELS if m != "sim"):
        c = fit(train, model, ref_rank)
        sim = project(c, model)
        judge = serving_points(held, ref_rank) or held
        cands[model] = {
            "train_constants": c,
            "heldout_all": summary(rel_errors(c, held, model, ref_rank)),
            "heldout_sim_projection_serving": summary(rel_errors(sim, judge, "sim", ref_rank)),
        }
    best = min(cands, key=lambda m: cands[m]["heldout_sim_projection_serving"].get("mean_rel", np.inf))
    full = fit(points, best, ref_rank)
    sim = project(full, best)
    serving = serving_points(points, ref_rank)
    return {
        "model": best,
        "constants": sim,
        "raw_constants": full,
        "candidates": cands,
        "heldout": cands[best]["heldout_sim_projection_serving"],
        "in_sample_all": summary(rel_errors(full, points, best, ref_rank)),
        "in_sample_sim_projection_serving": summary(rel_errors(sim, serving, "sim", ref_rank)),
        "n_points": len(points),
        "n_train": len(train),
        "n_heldout": len(held),
    }


def by_kind(coef: dict[str, float], points: Sequence[CostPoint], ref_rank: int) -> dict[str, dict[str, float]]:
    """Simulator-projection error per step kind (decode / prefill / mixed), serving points only."""
    serving = serving_points(points, ref_rank)
    out = {}
    for kind in ("decode", "prefill", "mixed"):
        pts = [p for p in serving if p.kind == kind]
        if pts:
            out[kind] = summary(rel_errors(coef, pts, "sim", ref_rank))
    return out
