"""The continuous decode load of onboard_h200.py, its per-window numbers, and the report.

`Load` keeps `batch` requests in flight through an EngineLoop session (round robin over adapters) from the
caller's thread and timestamps every token; `StepClock` timestamps every engine step. Windows are cut
afterwards, so one uninterrupted load yields the before / during / after numbers.
"""

from __future__ import annotations

import bisect
import queue
import random
import time
from collections.abc import Callable
from typing import Any

from inlaid_worker.engine.engine import RequestOutput
from inlaid_worker.engine.sampling_params import SamplingParams

STALL_S = 1.0  # a step this long is a one-off (kernel tuning, compilation, graph capture), not serving speed


class StepClock:
    """Wraps engine.step: (end time, wall seconds) of every step, and device memory in use (all processes)
    sampled every 0.25 s after a step, on the engine thread: the only thread of this process that makes CUDA
    calls, so a sample never lands inside another thread's graph capture."""

    def __init__(self, engine: Any, memory: Callable[[], int] = lambda: 0) -> None:
        self._step = engine.step
        engine.step = self
        self.memory = memory
        self.ends: list[float] = []
        self.walls: list[float] = []
        self.mem: list[tuple[float, int]] = []  # (time, device bytes in use)
        self._next_mem = 0.0

    def __call__(self) -> Any:
        t0 = time.perf_counter()
        out = self._step()
        t1 = time.perf_counter()
        self.ends.append(t1)
        self.walls.append(t1 - t0)
        if t1 >= self._next_mem:
            self.mem.append((t1, self.memory()))
            self._next_mem = t1 + 0.25
        return out

    def window(self, t0: float, t1: float) -> dict[str, float]:
        i, j = bisect.bisect_left(self.ends, t0), bisect.bisect_left(self.ends, t1)
        walls = sorted(self.walls[i:j])
        if not walls:
            return {"steps": 0}
        stalls = [w for w in walls if w > STALL_S]
        return {"steps": len(walls), "step_ms_median": 1e3 * walls[len(walls) // 2],
                "step_ms_p99": 1e3 * walls[min(len(walls) - 1, int(0.99 * len(walls)))],
                "step_ms_max": 1e3 * walls[-1], "stalls": len(stalls), "stall_s": sum(stalls)}  # fmt: skip


class Load:
    def __init__(self, loop: Any, batch: int, models: list[str], prompt: int, max_tokens: int, vocab: int) -> None:
        self.loop, self.batch, self.models = loop, batch, models
        self.sid, self.outbox = loop.open_session()
        self.max_tokens = max_tokens  # each request draws its length from [max/2, 3 max/2]: a steady mix
        self.rng = random.Random(0)
        self.prompt, self.vocab = prompt, vocab
        self.live = self.rid = self.completed = self.errors = 0
        self.times: list[float] = []  # arrival time of each token
        self.deadline = float("inf")  # perf_counter time after which run_until raises TimeoutError

    def run_for(self, seconds: float) -> None:
        end = time.perf_counter() + seconds
        self.run_until(lambda: time.perf_counter() >= end)

    def run_until(self, done: Callable[[], bool]) -> None:
        while not done():
            if time.perf_counter() > self.deadline:
                raise TimeoutError("the benchmark's time budget ran out")
            while self.live < self.batch:
                ids = [self.rng.randrange(3, self.vocab) for _ in range(self.prompt)]
                model = self.models[self.rid % len(self.models)] if self.models else ""
                n = self.rng.randint(self.max_tokens // 2, 3 * self.max_tokens // 2)
                sampling = SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True)
                self.loop.admit(self.sid, f"r{self.rid}", ids, sampling, model)
                self.rid, self.live = self.rid + 1, self.live + 1
            try:
                ev = self.outbox.get(timeout=0.5)
            except queue.Empty:
                continue
            if isinstance(ev, RequestOutput):
                t = time.perf_counter()
                self.times.extend([t] * len(ev.token_ids))
                if ev.finish_reason is not None:
                    self.live -= 1
                    self.completed += 1
            elif ev is not None and not hasattr(ev, "state"):  # AdmitError: the request is gone
                self.errors += 1
                self.live -= 1

    def tokens_per_s(self, t0: float, t1: float) -> float:
        n = bisect.bisect_left(self.times, t1) - bisect.bisect_left(self.times, t0)
        return n / max(t1 - t0, 1e-9)

    def window(self, t0: float, t1: float, clock: StepClock) -> dict[str, float]:
        mem = [b for t, b in clock.mem if t0 <= t < t1]
        steps = clock.window(t0, t1)
        tokens = self.tokens_per_s(t0, t1) * (t1 - t0)
        busy = t1 - t0 - steps.get("stall_s", 0.0)  # the stalled steps' own tokens stay in: a lower bound
        return {"seconds": t1 - t0, "tokens_per_s": tokens / max(t1 - t0, 1e-9),
                "tokens_per_s_excl_stalls": tokens / max(busy, 1e-9),
                "gpu_used_GB_max": max(mem, default=0) / 1e9, **steps}  # fmt: skip


def drop_pct(before: dict[str, float], during: dict[str, float], key: str = "tokens_per_s") -> float | None:
    b = before.get(key, 0.0)
    return 100.0 * (1 - during[key] / b) if b > 0 and key in during else None


def summarize_mode(text: str, limits: dict, prio: bool, events: list, swaps: list[tuple[int, float]], load: Load,
                   clock: StepClock, b0: float, t_sub: float, t_ret: float, t_done: float,
                   full_layers: int, startup_per_layer_s: float) -> dict[str, Any]:  # fmt: skip
    """One onboarding: windows, drop, stage times and the extrapolation to `full_layers` layers
    (`startup_per_layer_s`: start-up work that grows with the layer count, e.g. loading the fp model)."""
    layers = [e for e in events if e.stage == "layer"]
    n = len(layers)
    before = load.window(b0, t_sub, clock)
    during = load.window(t_sub, t_done, clock)
    row: dict[str, Any] = {"mode": text, "limits": limits, "engine_high_priority_stream": prio,
                           "final": events[-1].stage if events else "none", "message": events[-1].message if events else "",
                           "checkpoint_version": events[-1].checkpoint_version if events else 0, "layers": n,
                           "before": before, "during_job": during}  # fmt: skip
    row["drop_pct_job"] = drop_pct(before, during)
    if n and len(swaps) == n:
        first = swaps[0][1] - layers[0].hessian_seconds - layers[0].swap_seconds  # first layer's work starts
        quant = load.window(first, swaps[-1][1], clock)
        row["during_quantizing"] = quant
        row["drop_pct_quantizing"] = drop_pct(before, quant)
        row["drop_pct_quantizing_excl_stalls"] = drop_pct(before, quant, "tokens_per_s_excl_stalls")
        per_layer = (swaps[-1][1] - swaps[0][1]) / (n - 1) if n > 1 else swaps[0][1] - first
        stages = {"submit_validate_tokenize_s": t_ret - t_sub, "start_until_first_layer_s": first - t_ret,
                  "per_layer_s": per_layer,
                  "per_layer_hessians_merge_gptq_pack_s": sum(e.hessian_seconds for e in layers) / n,
                  "per_layer_swap_s": sum(e.swap_seconds for e in layers) / n,
                  "swap_s_max": max(e.swap_seconds for e in layers),
                  "publish_s": t_done - swaps[-1][1], "post_to_active_s": t_done - t_sub}  # fmt: skip
        more = full_layers - n
        stages["post_to_active_extrapolated_s"] = stages["post_to_active_s"] + more * (per_layer + startup_per_layer_s)
        row["stages"] = stages
    return row


def _f(x: Any, nd: int = 1) -> str:
    return f"{x:.{nd}f}" if isinstance(x, (int, float)) else "-"


def _neg(x: float | None) -> str:
    return f"{-x:+.1f}" if x is not None else "-"


def to_markdown(result: dict[str, Any]) -> str:
    m = result["meta"]
    lines = [f"# Onboarding while serving on the GPU ({m['device']}) — {m['date']}", "",
             f"Command: `{m['command']}`", "",
             f"Shape {m['shape']}; {m['onboarded_layers']} layers onboarded; spec {m['spec']}; load: "
             f"{m['batch']} requests in flight over {m['serving_adapters']} rank-{m['rank']} adapters; calibration "
             f"{m['calib_records']} x {m['calib_len']} tokens; torch {m['torch']}.", "",
             f"Setup: {result['setup']}", "",
             "| mode | before tok/s | during job tok/s (drop) | while quantizing tok/s (drop) | step ms median before/during "
             "| per layer s | POST-to-active s (extrap. 32 layers) | GPU GB max during | result |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in result["modes"]:
        b, d, q, s = r["before"], r["during_job"], r.get("during_quantizing", {}), r.get("stages", {})
        lines.append(
            f"| {r['mode']} | {_f(b['tokens_per_s'])} | {_f(d['tokens_per_s'])} ({_neg(r['drop_pct_job'])}%) "
            f"| {_f(q.get('tokens_per_s'))} ({_neg(r.get('drop_pct_quantizing'))}%) "
            f"| {_f(b.get('step_ms_median'))} / {_f(d.get('step_ms_median'))} | {_f(s.get('per_layer_s'), 2)} "
            f"| {_f(s.get('post_to_active_s'))} ({_f(s.get('post_to_active_extrapolated_s'), 0)}) "
            f"| {_f(d.get('gpu_used_GB_max'), 2)} | {r['final']} v{r['checkpoint_version']} |")  # fmt: skip
    if "after" in result:
        lines += ["", f"After all onboardings: {_f(result['after']['tokens_per_s'])} tok/s, "
                      f"step median {_f(result['after'].get('step_ms_median'))} ms; load totals {result.get('load_totals')}."]  # fmt: skip
    if result["skipped"]:
        lines += ["", f"Skipped (budget): {result['skipped']}"]
    lines += ["", "Stages per mode:", ""] + [f"- {r['mode']}: {r.get('stages')}" for r in result["modes"]]
    return "\n".join(lines) + "\n"
