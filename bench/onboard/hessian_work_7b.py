"""Host-side Hessian work of adding one task to an MLGPTQ (diagmax) checkpoint, for one Llama-2-7B decoder layer
(input groups qkv/o/gate_up with K = 4096 and down with K = 11008, i.e. the Hessians of its 7 linears), with 2
kept tasks + 1 added: what the quantizer child does per layer besides the calibration forward and GPTQ.

  new (this tree):   nice -n 10 .venv/bin/python bench/onboard/hessian_work_7b.py --impl new
  old (before):      git archive e348ce0 workers/inlaid_worker | tar -x -C /tmp/head
                     PYTHONPATH=/tmp/head/workers nice -n 10 .venv/bin/python bench/onboard/hessian_work_7b.py --impl old

old = the code at e348ce0: read and unpack every kept task's stored triangles, diagmax over all tasks, write
the new task's and the aggregate's triangles, copy the kept tasks' files into the new version.
new = the running aggregate: read the stored running state, fold the new task in, finish, write the new
task's triangles and the new state, hard-link the kept tasks' files. Also times a removal (refold of the kept
tasks from their files), the rare path. Matrices are random symmetric (values do not change the timings).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

DIMS = {"qkv": 4096, "o": 4096, "gate_up": 4096, "down": 11008}
LAYER = 0


def sym(k: int, seed: int) -> torch.Tensor:
    r = torch.randn(k, k, generator=torch.Generator().manual_seed(seed))
    h = (r + r.t()) * 0.5
    h.diagonal().abs_().add_(1.0)
    return h


def fresh_layer(seed: int, device: torch.device) -> dict[str, torch.Tensor]:
    return {g: sym(k, seed * 10 + i).to(device) for i, (g, k) in enumerate(DIMS.items())}


def timed(out: dict[str, float], name: str, fn: Callable[[], object]) -> object:
    t0 = time.perf_counter()
    r = fn()
    out[name] = round(time.perf_counter() - t0, 3)
    print(f"  {name}: {out[name]} s", flush=True)
    return r


def run_old(root: Path, device: torch.device) -> dict[str, float]:
    from inlaid_worker.quant.aggregate import aggregate
    from inlaid_worker.quant.hessian_store import HessianStore

    src, dst = HessianStore(root / "src"), HessianStore(root / "dst")
    for i, t in enumerate("ab"):
        src.write_layer(f"tasks/{t}", LAYER, fresh_layer(i, device))
    fresh = fresh_layer(2, device)
    tokens = {"a": 4096, "b": 4096, "c": 4096}
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    per_task = {}
    for t in "ab":
        per_task[t] = timed(out, f"read_unpack_{t}_s", lambda t=t: src.read_task_layer(t, LAYER, DIMS))
    per_task["c"] = {g: h.cpu() for g, h in fresh.items()}
    agg = timed(out, "aggregate_3_tasks_s", lambda: {g: aggregate("diagmax", {t: hs[g] for t, hs in per_task.items()},
                                                                  tokens) for g in DIMS})
    timed(out, "write_new_task_s", lambda: dst.write_layer("tasks/c", LAYER, fresh))
    timed(out, "write_aggregate_s", lambda: dst.write_layer("aggregate", LAYER, agg))  # type: ignore[arg-type]
    for t in "ab":
        f = src.task_dir(t) / f"layer-{LAYER:05d}.safetensors"
        (dst.task_dir(t)).mkdir(parents=True, exist_ok=True)
        timed(out, f"copy_kept_{t}_s", lambda f=f, t=t: shutil.copy2(f, dst.task_dir(t) / f.name))
    out["total_add_s"] = round(time.perf_counter() - t0, 3)
    return out


def run_new(root: Path, device: torch.device) -> dict[str, float]:
    from inlaid_worker.quant.hessian_store import HessianStore
    from inlaid_worker.quant.layer_hessians import fold_layer
    from inlaid_worker.quant.running import empty, fold

    src, dst, rem = HessianStore(root / "src"), HessianStore(root / "dst"), HessianStore(root / "rem")
    tokens = {"a": 4096, "b": 4096, "c": 4096}
    start = {g: empty("diagmax", k) for g, k in DIMS.items()}
    fold_layer(start, {t: fresh_layer(i, device) for i, t in enumerate("ab")}, tokens).stored.save(src, LAYER)
    fresh = {"c": fresh_layer(2, device)}
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    links = {t: src.task_file(t, LAYER) for t in "ab"}
    states = timed(out, "read_running_s", lambda: {g: s.to(device) for g, s in  # to(): touch every page
                                                   src.read_running(LAYER, "diagmax", DIMS, ["a", "b"]).items()})  # type: ignore[union-attr]
    hs = timed(out, "fold_new_task_and_finish_s", lambda: fold_layer(states, fresh, tokens, links))  # type: ignore[arg-type]
    for k, v in hs.stored.seconds.items():  # type: ignore[attr-defined]
        out[f"  of which {k}"] = round(v, 3)
    timed(out, "save_new_task_running_links_s", lambda: hs.stored.save(dst, LAYER))  # type: ignore[attr-defined]
    out["total_add_s"] = round(time.perf_counter() - t0, 3)
    t1 = time.perf_counter()  # the rare path: remove "b" from {a, b, c}, refold a and c from their files

    def refold() -> object:
        st = {g: empty("diagmax", k) for g, k in DIMS.items()}
        for t in "ac":
            tris = dst.read_task_triangles(t, LAYER, DIMS, device)
            st = {g: fold(s, t, tris[g], tokens[t]) for g, s in st.items()}
        return st

    st = timed(out, "remove_refold_2_tasks_s", refold)
    hs2 = timed(out, "remove_finish_s", lambda: fold_layer(st, {}, tokens))  # type: ignore[arg-type]
    timed(out, "remove_save_s", lambda: hs2.stored.save(rem, LAYER))  # type: ignore[attr-defined]
    out["total_remove_s"] = round(time.perf_counter() - t1, 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--impl", choices=("old", "new"), required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--json", type=Path, default=None, help="append the result as one JSON line")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    root = Path(tempfile.mkdtemp(prefix="hessian-work-", dir=args.tmp))
    import inlaid_worker

    print(f"impl {args.impl} from {Path(inlaid_worker.__file__).parent}, device {dev}, {args.threads} thread(s)")
    try:
        t0 = time.perf_counter()
        res = run_old(root, dev) if args.impl == "old" else run_new(root, dev)
        row = {"impl": args.impl, "device": str(dev), "threads": args.threads, "host": platform.node(),
               "cores": os.cpu_count(), "load_avg": os.getloadavg(), "wall_incl_setup_s": round(time.perf_counter() - t0, 1),
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **res}
        print(json.dumps(row))
        if args.json:
            with args.json.open("a") as f:
                f.write(json.dumps(row) + "\n")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
