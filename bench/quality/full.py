"""The whole quality table in one command on one GPU: unquantized, MLGPTQ (+ variants), GPTQ-tweaked, RTN,
per-task GPTQ; every task; 4- and 3-bit; several calibration seeds.

    PYTHONPATH=workers python bench/quality/full.py --device cuda [--bits 4,3] [--seeds 0,1,2] \
        [--group-size 128] [--calib-n 32] [--limit N] [--variants mlgptq-max,...] \
        [--state bench/results/quality-state-2026-11-29-full.json] [--time-budget-s 240] \
        [--wait-dir /tmp/inl/train]  # adapters still being trained: wait for <dir>/<task>.rc
        [--act-order static]  # every GPTQ-family row with act-order and static groups (off: each row's own)
        [--test-dir bench/quality/test_extra]  # larger test splits where <dir>/<task>/test.jsonl.xz exists
        [--heldout-n 32]  # held-out layer error of every base (heldout.py)

Hessians once per (seed, task, adapter on/off) on the fp model (batch_hessians), all configs' GPTQ in
batched column loops (fast_gptq, checked against the quantizer's gptq_quantize), then per task every base
with the task's adapter merged in one batched generation (multi_llama) and the task's metric. Cells go to
--state after each task; a second run skips finished cells. Report: <state dir>/quality-<date>-full.{md,json}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "workers"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval_multi import adapter_deltas, generate_all, score_all  # noqa: E402
from inlaid_worker.quant.adapter import load_task_adapter  # noqa: E402
from inlaid_worker.tasks.example import load_split  # noqa: E402
from inlaid_worker.tasks.spec import TASKS, get_task  # noqa: E402
from multi_llama import from_hf, shared_to  # noqa: E402
from quantize_all import ACT_ORDER, MLGPTQ_VARIANTS, collect, quantize_configs, time_single  # noqa: E402
from report import write_report  # noqa: E402
from table import cell_key  # noqa: E402

SHIPPED_FIRST = ("boolq", "csqa", "nq_open", "asdiv", "en_es", "xsum", "humaneval")


def models_for(task: str, methods: list[str], bits_list: list[int], seeds: list[int]) -> list[tuple]:
    """(method, bits, seed, quantized-for task) of every base evaluated on `task`."""
    out: list[tuple] = [("fp", None, None, None)] if "fp" in methods else []
    out += [("rtn", b, None, None) for b in bits_list if "rtn" in methods]
    for b in bits_list:
        for s in seeds:
            out += [(m, b, s, None) for m in methods if m == "gptq" or m in MLGPTQ_VARIANTS]
            out += [("gptq-task", b, s, task)] if "gptq-task" in methods else []
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--bits", default="4,3")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--calib-n", type=int, default=32)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--variants", default="mlgptq-max,mlgptq-mean,mlgptq-trace,mlgptq-ao,mlgptq-damp")
    ap.add_argument("--state", type=Path, default=REPO / "bench/results/quality-state-2026-11-29-full.json")
    ap.add_argument("--report", type=Path, help="report path without suffix (default: next to --state)")
    ap.add_argument("--time-budget-s", type=float, default=1e9)
    ap.add_argument("--wait-dir", type=Path, help="adapters being trained: wait for <dir>/<task>.rc")
    ap.add_argument("--wait-s", type=float, default=240)
    ap.add_argument("--model-dir", type=Path)
    ap.add_argument("--adapters", type=Path, default=REPO / "assets/adapters")
    ap.add_argument("--hf-check", default="boolq,nq_open", help="tasks whose fp cell is re-scored by HF generate")
    ap.add_argument("--budget-tokens", type=int, default=800_000)
    ap.add_argument("--command", default="", help="the command line, for the report")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--act-order", default="off", choices=ACT_ORDER,
                    help="static / desc: act-order for every GPTQ-family row, with / without static groups")
    ap.add_argument("--test-dir", type=Path,
                    help="enlarged test splits (extra_test.py): <dir>/<task>/test.jsonl.xz where present")
    ap.add_argument("--heldout-n", type=int, default=0, help="train-split sequences per task for heldout.py")
    args = ap.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    for t in tasks:
        get_task(t)
    bits_list = [int(b) for b in args.bits.split(",") if b]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    methods = ["fp", "rtn", "gptq", "gptq-task", "mlgptq"] + [v for v in args.variants.split(",") if v]
    for m in methods[5:]:
        if m not in MLGPTQ_VARIANTS:
            raise ValueError(f"unknown variant {m!r}; known: {', '.join(MLGPTQ_VARIANTS)}")
    if args.test_dir is not None:
        from extra_test import unpack

        args.test_dir = unpack(args.test_dir)
    state = json.loads(args.state.read_text()) if args.state.is_file() else {}
    for k in ("cells", "meta", "timings", "hf_check"):
        state.setdefault(k, {})
    if not args.report_only:
        run(args, tasks, bits_list, seeds, methods, state)
    write_report(args.report or args.state.parent / f"quality-{dt.date.today().isoformat()}-full",
                 state, tasks, bits_list, args.group_size, methods)


def test_dir_for(args, task: str) -> Path | None:
    d = args.test_dir
    return d if d is not None and (d / task / "test.jsonl").is_file() else None


def _save(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")


def run(args, tasks, bits_list, seeds, methods, state) -> None:
    from run import calibration_seqs
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t_start = time.time()
    dev = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    if args.model_dir is None:
        from inlaid_worker.model.smollm2 import ensure_smollm2

        args.model_dir = ensure_smollm2()
    tok = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32).eval().to(dev)
    shared, base = from_hf(model)
    shared, base = shared_to(shared, dev), {g: w.to(dev) for g, w in base.items()}
    state["meta"].update({
        "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "limit": args.limit,
        "calib_n": args.calib_n, "group_size": args.group_size, "seeds": seeds, "bits": bits_list,
        "tasks": tasks, "methods": methods, "torch": torch.__version__,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "command": args.command,
        "act_order": args.act_order, "heldout_n": args.heldout_n,
        "test_sizes": {t: len(load_split(t, "test", test_dir_for(args, t))[: args.limit]) for t in tasks},
    })
    todo = {t: [m for m in models_for(t, methods, bits_list, seeds) if cell_key(*m[:3], t) not in state["cells"]]
            for t in tasks}
    configs = sorted({(m, b, s, q) for ms in todo.values() for (m, b, s, q) in ms if m != "fp"},
                     key=lambda c: (c[0] != "rtn", -c[1], str(c)))
    cache: dict[str, object] = {}
    training = {t for t in tasks if not (args.adapters / t / "adapter_model.safetensors").is_file()}

    def adapter(t: str):
        if t not in cache:
            marker = args.wait_dir / f"{t}.rc" if args.wait_dir and t in training else None
            t0 = time.time()
            while marker is not None and not marker.is_file() and time.time() - t0 < args.wait_s:
                time.sleep(0.5)
            try:
                if marker is not None and marker.is_file() and marker.read_text().strip() != "0":
                    raise RuntimeError(f"training failed (rc {marker.read_text().strip()})")
                cache[t] = load_task_adapter(args.adapters / t, args.model_dir, t)
            except (RuntimeError, ValueError, OSError) as e:  # the other tasks' table still gets made
                print(f"[{t}] no adapter, task dropped: {e}", flush=True)
                state["meta"].setdefault("dropped", {})[t] = str(e)
                cache[t] = None
            state["timings"][f"waited for adapter {t} s"] = round(time.time() - t0, 2)
        return cache[t]

    need_task = {(s, t) for (m, _b, s, q) in configs if m in MLGPTQ_VARIANTS for t in tasks}
    need_task |= {(s, q) for (m, _b, s, q) in configs if m == "gptq-task"}
    need_pooled = {s for (m, _b, s, _q) in configs if m == "gptq"}
    seqs = {(s, t): calibration_seqs(tok, t, args.calib_n, s) for s in seeds for t in tasks}
    hs = collect(model, seqs, adapter, need_task, need_pooled, dev) if need_task or need_pooled else None
    if hs is not None:
        state["timings"]["hessians s"] = round(hs.seconds, 2)
    dropped = {t for t in tasks if t in cache and cache[t] is None}
    tasks = [t for t in tasks if t not in dropped]
    configs = [c for c in configs if c[3] not in dropped]
    quant, qtimes = quantize_configs(base, configs, hs, args.group_size, act_order=args.act_order)
    state["timings"].update({f"{k} s": round(v, 2) for k, v in qtimes.items()})
    if hs is not None and 0 in hs.per_task and len(hs.per_task[0]) == len(tasks):
        from quantize_all import hessian_for

        state["timings"]["one MLGPTQ checkpoint (GPTQ of 30 layers, 4-bit) s"] = round(
            time_single(base, hessian_for("mlgptq", 0, None, hs), 4, args.group_size, args.act_order), 2)
    del hs
    if args.heldout_n and quant:
        heldout_scores(args, model, tok, tasks, adapter, base, quant, state, dev)
    _save(args.state, state)
    for t in sorted(tasks, key=SHIPPED_FIRST.index):
        if not todo[t]:
            continue
        if time.time() - t_start > args.time_budget_s:
            print("time budget spent; run again to continue", flush=True)
            break
        t0 = time.time()
        bases = [base if m[0] == "fp" else quant[m] for m in todo[t]]
        torch.backends.cuda.matmul.allow_tf32 = True
        tdir = test_dir_for(args, t)
        preds = generate_all(shared, bases, adapter_deltas(adapter(t), base), tok, t, args.limit, dev,
                             args.budget_tokens, tdir)
        torch.backends.cuda.matmul.allow_tf32 = False
        tg = time.time() - t0
        scores = score_all(t, preds, args.limit, tasks_dir=tdir)
        shipped = len(load_split(t, "test")[: args.limit])
        if tdir is not None and shipped < len(preds[0]):  # also the shipped split alone, for older tables
            for m, v in zip(todo[t], score_all(t, preds, args.limit, tasks_dir=tdir, first=shipped)):
                state.setdefault("cells_shipped", {})[cell_key(*m[:3], t)] = v
        for m, v, p in zip(todo[t], scores, preds):
            state["cells"][cell_key(*m[:3], t)] = v
            if m[0] == "fp":
                state.setdefault("samples", {})[t] = p[:3]
        state["timings"][f"eval {t} ({len(bases)} models) s"] = round(time.time() - t0, 2)
        print(f"[{t}] {len(bases)} models: generate {tg:.1f}s, score {time.time() - t0 - tg:.1f}s; "
              + " ".join(f"{m[0]}{m[1] or ''}/{m[2]}={v:.1f}" for m, v in zip(todo[t], scores)), flush=True)
        if t in args.hf_check.split(",") and todo[t][0][0] == "fp":
            state["hf_check"][t] = hf_check(model, tok, args.adapters / t, t, args.limit, dev)
            state["hf_check"][t]["batched"] = state["cells"][cell_key("fp", None, None, t)]
            print(f"[{t}] HF generate check: {state['hf_check'][t]}", flush=True)
        _save(args.state, state)
    state["timings"]["total s"] = round(time.time() - t_start, 1)
    _save(args.state, state)


def heldout_scores(args, model, tok, tasks, adapter, base, quant, state, dev) -> None:
    """Held-out layer error (heldout.py) of every base just quantized, on each task it is evaluated on."""
    from heldout import heldout_hessians, rel_error

    t0 = time.time()
    hh = heldout_hessians(model, tok, tasks, adapter, args.heldout_n, 1234, dev)
    for (m, b, s, q), wq in quant.items():
        for t in tasks if q is None else [q]:
            state.setdefault("heldout", {})[cell_key(m, b, s, t)] = rel_error(base, wq, hh[t])
    for t in tasks:
        state.setdefault("heldout", {})[cell_key("fp", None, None, t)] = 0.0
    state["timings"]["held-out layer error s"] = round(time.time() - t0, 2)
    print(f"held-out layer error of {len(quant)} bases in {time.time() - t0:.1f}s", flush=True)


def hf_check(model, tok, adapter_dir: Path, task: str, limit: int | None, dev) -> dict:
    """The fp cell re-scored the slow way (PEFT merge + HF generate, as run.py and train.all do)."""
    import copy

    from inlaid_worker.tasks.evaluate import evaluate_task
    from peft import PeftModel

    t0 = time.time()
    work = PeftModel.from_pretrained(copy.deepcopy(model), adapter_dir).merge_and_unload().to(dev).eval()
    res = evaluate_task(work, tok, task, limit=limit)
    return {"hf_generate": res["metrics"][get_task(task).metric], "seconds": round(time.time() - t0, 2)}


if __name__ == "__main__":
    main()
