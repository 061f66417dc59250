"""Every quantized base of the quality table from one set of full-precision Hessians (GPU, batched).

Configs (method, bits, seed, task): rtn (no data), gptq (GPTQ-tweaked: all tasks' calibration pooled, no
adapters), mlgptq (per-task Hessians with each task's adapter, aggregated: diagmax by default) and its
variants, gptq-task (one task's own Hessian). Hessians come from batch_hessians on the fp model, so they
are collected once per (seed, task, adapter on/off) and shared by every method and bit width: exactly
what quantize_checkpoint computes layer by layer, since its streams never see quantized weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from batch_hessians import collect_sums, finalize, merged
from fast_gptq import aggregate_batched, gptq_batched, rtn_batched

# row name -> (aggregation, act_order, percdamp) for the MLGPTQ family
MLGPTQ_VARIANTS = {
    "mlgptq": ("diagmax", False, 0.01),
    "mlgptq-max": ("max", False, 0.01),
    "mlgptq-mean": ("mean", False, 0.01),
    "mlgptq-trace": ("trace", False, 0.01),
    "mlgptq-ao": ("diagmax", True, 0.01),
    "mlgptq-damp": ("diagmax", False, 0.1),
}
GROUPS = ("qkv", "o", "gate_up", "down")


@dataclass
class HessianSet:
    """Per seed: {task: {group: H [L, K, K]}} with adapters, and the pooled no-adapter {group: H}."""

    per_task: dict[int, dict[str, dict[str, torch.Tensor]]]
    pooled: dict[int, dict[str, torch.Tensor]]
    seconds: float = 0.0
    aggregated: dict[tuple[str, int], dict[str, torch.Tensor]] = field(default_factory=dict)


def collect(
    model, seqs: dict[tuple[int, str], Sequence[torch.Tensor]], adapters: Callable[[str], object],
    need_task: set[tuple[int, str]], need_pooled: set[int], device, log=print,
) -> HessianSet:
    """seqs[(seed, task)] -> calibration ids; adapters(task) -> TaskAdapter (may block until trained).
    Pooled sums first (no adapter needed), then per-task ones in the order given."""
    t0 = time.time()
    hs = HessianSet({}, {})
    tasks = sorted({t for (_s, t) in seqs})
    for seed in sorted(need_pooled):
        total: dict[str, torch.Tensor] = {}
        n = 0
        for t in tasks:
            sums, tok = collect_sums(model, seqs[(seed, t)], device)
            for g, s in sums.items():
                total[g] = total[g] + s if g in total else s
            n += tok
        hs.pooled[seed] = {g: finalize(s, n) for g, s in total.items()}
    for seed, t in sorted(need_task, key=lambda st: (st[1] in ("xsum", "en_es", "humaneval"), st)):
        if adapters(t) is None:
            continue  # a task without adapter (training failed) is left out of every per-task Hessian
        with merged(model, adapters(t)):
            sums, tok = collect_sums(model, seqs[(seed, t)], device)
        hs.per_task.setdefault(seed, {})[t] = {g: finalize(s, tok) for g, s in sums.items()}
    torch.cuda.synchronize() if torch.cuda.is_available() else None
    hs.seconds = time.time() - t0
    log(f"hessians: {len(need_pooled)} pooled + {len(need_task)} per-task in {hs.seconds:.1f}s")
    return hs


def hessian_for(method: str, seed: int, task: str | None, hs: HessianSet) -> dict[str, torch.Tensor]:
    if method == "gptq":
        return hs.pooled[seed]
    if method == "gptq-task":
        return hs.per_task[seed][task]
    how = MLGPTQ_VARIANTS[method][0]
    if (how, seed) not in hs.aggregated:  # shared by both bit widths and by variants of one aggregation
        tasks = sorted(hs.per_task[seed])
        hs.aggregated[(how, seed)] = {
            g: aggregate_batched(how, torch.stack([hs.per_task[seed][t][g] for t in tasks])) for g in GROUPS
        }
    return hs.aggregated[(how, seed)]


ACT_ORDER = ("off", "static", "desc")


def gptq_settings(method: str, act_order: str = "off") -> tuple[bool, bool, float]:
    """(act_order, static_groups, percdamp) of a GPTQ-family row. act_order "static" / "desc" turns act-order
    on for every row (gptq, gptq-task, mlgptq and its variants) with / without static groups; "off" keeps
    each row's own setting (only mlgptq-ao: act-order without static groups)."""
    if act_order not in ACT_ORDER:
        raise ValueError(f"act_order must be one of {ACT_ORDER}, got {act_order!r}")
    ao, damp = MLGPTQ_VARIANTS[method][1:] if method in MLGPTQ_VARIANTS else (False, 0.01)
    if act_order == "off":
        return ao, False, damp
    return True, act_order == "static", damp


def quantize_configs(
    base: dict[str, torch.Tensor], configs: list[tuple[str, int, int | None, str | None]], hs: HessianSet | None,
    group_size: int, chunk: int = 16, log=print, act_order: str = "off",
) -> tuple[dict[tuple, dict[str, torch.Tensor]], dict[str, float]]:
    """{config: {group: fake-quantized W [L, N, K]}} and timings. base: fused fp weights {group: [L, N, K]}.
    act_order: see gptq_settings."""
    out: dict[tuple, dict[str, torch.Tensor]] = {}
    times: dict[str, float] = {}
    for cfg in [c for c in configs if c[0] == "rtn"]:
        t0 = time.time()
        out[cfg] = {g: rtn_batched(w, cfg[1], group_size) for g, w in base.items()}
        _sync()
        times[f"rtn {cfg[1]}-bit"] = time.time() - t0
    data = [c for c in configs if c[0] != "rtn"]
    settings = {}
    for c in data:
        settings.setdefault((c[1], *gptq_settings(c[0], act_order)), []).append(c)
    for (bits, ao, static, damp), cfgs in settings.items():
        for i in range(0, len(cfgs), chunk):
            part = cfgs[i : i + chunk]
            t0 = time.time()
            hsets = [hessian_for(m, s, t, hs) for (m, _b, s, t) in part]
            _sync()
            t_agg = time.time() - t0
            res: dict[str, torch.Tensor] = {}
            for g in GROUPS:
                w = base[g]
                n_l = w.shape[0]
                wb = w.repeat(len(part), 1, 1)  # [C * L, N, K]
                hb = torch.cat([h[g] for h in hsets])
                res[g], _ = gptq_batched(wb, hb, bits, group_size, act_order=ao, percdamp=damp,
                                         static_groups=static)
                res[g] = res[g].view(len(part), n_l, *w.shape[1:])
                del wb, hb
            for j, c in enumerate(part):
                out[c] = {g: res[g][j].clone() for g in GROUPS}
            del res
            _sync()
            label = f"gptq {bits}-bit ao={ao}{' static' if static else ''} damp={damp} x{len(part)}"
            times[label] = times.get(label, 0.0) + time.time() - t0
            log(f"quantized {len(part)} configs ({bits}-bit, act_order={ao}, static={static}, damp={damp}) in "
                f"{time.time() - t0:.1f}s (aggregation {t_agg:.1f}s)")
    return out, times


def time_single(
    base: dict[str, torch.Tensor], h: dict[str, torch.Tensor], bits: int, group_size: int, act_order: str = "off"
) -> float:
    """Seconds to GPTQ one whole model (30 layers batched) for one Hessian set: one MLGPTQ checkpoint."""
    ao, static, damp = gptq_settings("mlgptq", act_order)
    _sync()
    t0 = time.time()
    for g in GROUPS:
        gptq_batched(base[g], h[g], bits, group_size, act_order=ao, static_groups=static, percdamp=damp)
    _sync()
    return time.time() - t0


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
