"""Train every task's adapter and score base vs adapter on each test split.

`python -m inlaid_worker.train.all [--tasks a,b] [--seed 0] [--adapters assets/adapters] [--results FILE]`
Writes assets/adapters/<task>/ and a results JSON: per task the base and adapter metrics, the headline
metric's margin, the recipe and the training loss.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import torch

from ..model.smollm2 import ensure_smollm2
from ..tasks.evaluate import evaluate_task
from ..tasks.spec import TASKS, get_task
from .__main__ import train_one
from .loop import load_base

REPO = Path(__file__).resolve().parents[3]


def _device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"


def run_all(
    tasks: list[str],
    seed: int,
    adapters: Path,
    model_dir: Path,
    device: str,
    limit: int | None,
    batch_size: int,
    results_path: Path | None = None,
) -> dict:
    results: dict = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "device": _device_name(device),
        "torch": torch.__version__,
        "seed": seed,
        "tasks": {},
    }
    base, tok = load_base(model_dir, device)
    for task in tasks:
        try:
            results["tasks"][task] = _run_task(
                task, base, tok, seed, adapters, model_dir, device, limit, batch_size
            )
        except Exception as exc:  # noqa: BLE001 -- one broken task must not lose the others' results
            results["tasks"][task] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"[{task}] FAILED: {exc!r}", flush=True)
        if results_path:
            results_path.parent.mkdir(parents=True, exist_ok=True)
            results_path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return results


def _run_task(
    task: str,
    base: Any,
    tok: Any,
    seed: int,
    adapters: Path,
    model_dir: Path,
    device: str,
    limit: int | None,
    batch_size: int,
) -> dict:
    t0 = time.time()
    base_eval = evaluate_task(base, tok, task, limit=limit, batch_size=batch_size)
    print(f"[{task}] base {base_eval['metrics']} ({time.time() - t0:.1f}s)", flush=True)
    trained = train_one(task, adapters / task, seed, model_dir, device)
    merged = trained["model"].merge_and_unload()
    t1 = time.time()
    ad_eval = evaluate_task(merged, trained["tokenizer"], task, limit=limit, batch_size=batch_size)
    print(f"[{task}] adapter {ad_eval['metrics']} ({time.time() - t1:.1f}s)", flush=True)
    head = get_task(task).metric
    return {
        "headline": head,
        "base": base_eval["metrics"],
        "adapter": ad_eval["metrics"],
        "margin": ad_eval["metrics"][head] - base_eval["metrics"][head],
        "n_test": ad_eval["n"],
        "train": trained["info"],
        "samples": {"base": base_eval["samples"], "adapter": ad_eval["samples"]},
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--adapters", type=Path, default=REPO / "assets" / "adapters")
    ap.add_argument("--results", type=Path, default=None)
    ap.add_argument("--model-dir", type=Path)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--limit", type=int, help="score only the first N test examples (smoke runs)")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args(argv)
    names = [t for t in args.tasks.split(",") if t]
    for n in names:
        get_task(n)
    results = run_all(
        names,
        args.seed,
        args.adapters,
        args.model_dir or ensure_smollm2(),
        args.device,
        args.limit,
        args.batch_size,
        args.results,
    )
    for task, r in results["tasks"].items():
        if "error" in r:
            print(f"{task:10s} FAILED {r['error']}")
            continue
        print(
            f"{task:10s} {r['headline']:12s} base {r['base'][r['headline']]:6.2f} "
            f"adapter {r['adapter'][r['headline']]:6.2f} margin {r['margin']:+.2f}"
        )


if __name__ == "__main__":
    main()
