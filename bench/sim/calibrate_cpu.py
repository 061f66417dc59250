"""Fits the simulator's step-time cost model (libs/sim/src/cost-model.ts) to the real worker engine on this CPU.

Drives the worker's LLMEngine in process (the same engine the gRPC worker runs, tiny random Llama + random
LoRA adapters, fp32, 1 thread) through steps of chosen shapes and times every `engine.step()`:
  prefill steps: B new prompts of P tokens (B*P prefill tokens, kv = B*P);
  decode steps:  B rows with context C each, their adapters spread over A distinct tasks (kv = B*C).
Then least squares with non-negative constants (drop a negative one and refit):
  step_s = base_s + prefill_tokens * prefill_token_s + decode_rows * decode_row_s + adapters * adapter_s + kv_tokens * kv_token_s
Writes the calibration JSON (with the fit's error and the raw points next to it) and the fixture it used.

  .venv/bin/python bench/sim/calibrate_cpu.py --fixture /tmp/inlaid-cpu-fixture \
      --out libs/sim/calibration/cpu-tiny-measured.json
The fixture (model + adapters t0..t3) is created if missing; the real runs (bench/sim/real_vs_sim.sh) serve it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "workers"))
sys.path.insert(0, str(REPO / "workers/tests"))

from inlaid_worker.engine.factory import EngineOptions, adapter_dirs, create_engine, read_adapter  # noqa: E402  # noqa: E402
from inlaid_worker.engine.sampling_params import SamplingParams  # noqa: E402

TASKS = ("t0", "t1", "t2", "t3")
KV_BYTES = 32 << 20
BLOCK = 16
MAX_ROWS = 64
MAX_PREFILL = 2048
FEATURES = ("base_s", "prefill_token_s", "decode_row_s", "adapter_s", "kv_token_s")


def make_fixture(root: Path) -> None:
    """Small random Llama (hidden 256, 4 layers, 1024 positions) + four random adapters of ranks 8/16 on q/k/v/o."""
    if (root / "model/config.json").is_file() and all((root / "adapters" / t).is_dir() for t in TASKS):
        return
    from factories import make_random_adapter, make_tiny_llama

    base = make_tiny_llama(root / "model", seed=0, hidden=256, layers=4, heads=8, kv_heads=4, intermediate=688, max_positions=1024)
    for i, t in enumerate(TASKS):
        make_random_adapter(root / "adapters" / t, base, rank=8 * (1 + i % 2), alpha=16, targets=["q_proj", "k_proj", "v_proj", "o_proj"], seed=i + 1)


def build(root: Path):  # type: ignore[no-untyped-def]
    opts = EngineOptions(kv_cache_bytes=KV_BYTES, block_size=BLOCK, max_num_seqs=MAX_ROWS, max_num_batched_tokens=MAX_PREFILL,
                         enable_prefix_caching=False)  # the cost fit times every prefill in full
    engine = create_engine(root / "model", opts)
    for name, path in adapter_dirs(str(root / "adapters")).items():
        a = read_adapter(path, engine.runner.config, root / "model")
        engine.add_adapter(name, a, a.rank, tuple(sorted(a.targets)))
    return engine


def run_shape(engine, rows: int, prompt: int, adapters: int, decode_steps: int, serial: list[int]) -> list[dict]:  # type: ignore[no-untyped-def]
    """Adds `rows` requests (tasks round-robin over `adapters`), times the prefill step and `decode_steps` decodes."""
    ids = []
    for i in range(rows):
        serial[0] += 1
        rid = f"c{serial[0]}"
        ids.append(rid)
        toks = [int(x) for x in torch.randint(3, 300, (prompt,))]
        engine.add_request(rid, toks, SamplingParams(max_tokens=decode_steps + 2, temperature=0.0, ignore_eos=True), TASKS[i % adapters])
    points = []
    for s in range(decode_steps + 1):
        t0 = time.perf_counter()
        engine.step()
        dt_s = time.perf_counter() - t0
        ctx = prompt + s
        if s == 0:
            points.append({"prefill_tokens": rows * prompt, "decode_rows": 0, "adapters": adapters, "kv_tokens": rows * prompt, "step_s": dt_s})
        else:
            points.append({"prefill_tokens": 0, "decode_rows": rows, "adapters": adapters, "kv_tokens": rows * ctx, "step_s": dt_s})
    for rid in ids:
        engine.abort_request(rid)
    engine.step()  # flush aborts
    return points


def per_shape_medians(points: list[dict]) -> list[dict]:
    """One point per shape: prefill steps as they are, each run's decode steps as their median (the CPU is
    shared, so single steps carry scheduling noise; kv grows by one token a row per step: mean kv)."""
    out, run = [], []
    for q in points + [{"decode_rows": 0}]:
        if q["decode_rows"] > 0 and (not run or (run[-1]["decode_rows"], run[-1]["adapters"]) == (q["decode_rows"], q["adapters"]) and q["kv_tokens"] > run[-1]["kv_tokens"]):
            run.append(q)
            continue
        if run:
            out.append({**run[0], "kv_tokens": float(np.mean([r["kv_tokens"] for r in run])), "step_s": float(np.median([r["step_s"] for r in run]))})
            run = []
        if q["decode_rows"] > 0:
            run.append(q)
        elif "step_s" in q:
            out.append(q)
    return out


def nnls_fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    active = list(range(x.shape[1]))
    coef = np.zeros(x.shape[1])
    while active:
        sol, *_ = np.linalg.lstsq(x[:, active], y, rcond=None)
        if (sol >= 0).all():
            coef[active] = sol
            return coef
        active.pop(int(np.argmin(sol)))
    return coef


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fixture", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--decode-steps", type=int, default=12)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    make_fixture(args.fixture)
    engine = build(args.fixture)
    serial = [0]
    run_shape(engine, 4, 32, 2, 4, serial)  # warm-up
    points: list[dict] = []
    t_start = time.perf_counter()
    for rows in (1, 2, 4, 8, 16, 32):
        for adapters in sorted({1, min(2, rows), min(4, rows)}):
            for prompt in (16, 64, 192):
                if rows * prompt > MAX_PREFILL:
                    continue
                points += run_shape(engine, rows, prompt, adapters, args.decode_steps, serial)
    bench_s = time.perf_counter() - t_start
    fitted = per_shape_medians(points)
    x = np.array([[1, q["prefill_tokens"], q["decode_rows"], q["adapters"], q["kv_tokens"]] for q in fitted], dtype=float)
    y = np.array([q["step_s"] for q in fitted])
    coef = nnls_fit(x, y)
    pred = x @ coef
    rel = np.abs(pred - y) / y
    fit = dict(zip(FEATURES, (float(c) for c in coef)))
    state = engine.state()
    now = dt.datetime.now(dt.UTC)
    cmd = "OMP_NUM_THREADS=1 .venv/bin/python bench/sim/calibrate_cpu.py " + " ".join(sys.argv[1:])
    out = {
        "_comment": f"MEASURED on this CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores shared, torch {torch.__version__}, 1 thread), {now:%Y-%m-%d %H:%M} UTC, by: {cmd}",
        "label": "cpu-tiny-measured",
        "placeholder": False,
        "source": f"Least-squares fit (non-negative) of {len(fitted)} shapes (prefill steps, and the median of each run of decode steps) from {len(points)} timed LLMEngine.step() calls of the worker engine serving a small random Llama (hidden 256, 4 layers, vocab 320, fp32) with 4 random LoRA adapters (ranks 8/16 on q/k/v/o); rows 1-32, 1-4 distinct adapters, prompts 16-192 tokens. Median relative error {np.median(rel):.1%}, p90 {np.quantile(rel, 0.9):.1%}. Excludes the gRPC/engine-loop overhead per step. Raw points: {args.out.name.replace('.json', '.points.json')}.",
        **fit,
        "kv_blocks": int(state.total_kv_blocks),
        "block_size": BLOCK,
        "max_batch_rows": MAX_ROWS,
        "max_prefill_tokens": MAX_PREFILL,
        "suggested_slo": {"ttft_s": 1.0, "tpot_s": 0.05},
        "fit_error": {"median_rel": float(np.median(rel)), "p90_rel": float(np.quantile(rel, 0.9)), "rmse_s": float(np.sqrt(np.mean((pred - y) ** 2))), "n_shapes": len(fitted), "n_steps": len(points)},
        "measured": {"date_utc": now.isoformat(timespec="seconds"), "command": cmd, "bench_s": round(bench_s, 1), "machine": platform.platform()},
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    args.out.with_name(args.out.name.replace(".json", ".points.json")).write_text(json.dumps(points) + "\n")
    print(json.dumps({k: out[k] for k in (*FEATURES, "kv_blocks", "fit_error")}, indent=1))


if __name__ == "__main__":
    main()
