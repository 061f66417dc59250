"""Quality table: unquantized vs RTN vs GPTQ-tweaked (pooled) vs MLGPTQ vs per-task GPTQ, per task.

    PYTHONPATH=workers python bench/quality/run.py --device cuda [--bits 4,3] [--seeds 0,1,2] \
        [--methods fp,rtn,gptq,mlgptq,gptq-task] [--tasks ...] [--calib-n 32] [--limit N] \
        [--state bench/results/quality-state.json] [--time-budget-s 540] [--train-missing] [--metric nll]

Each cell (method, bits, calibration seed, task) is the task's headline metric on its test split with the
task's adapter merged into the (fake-)quantized base. With `--metric nll` a cell is instead the mean
teacher-forced NLL per answer token of the reference answers (nll.py): cheap enough for the CPU
(`--device cpu --threads 1`), lower is better, the last column is then the mean relative NLL increase. Cells are saved to --state after each one, so a run
cut by the device's 10-minute limit continues where it stopped when started again. At the end (or with
--report-only) it writes quality-<date>.json and .md next to the state file.
Calibration: each task's calib split (prompt + answer in ChatML), `--calib-n` sequences drawn with the seed.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "workers"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from inlaid_worker.model.smollm2 import ensure_smollm2
from inlaid_worker.tasks.chat import render_answer, render_prompt
from inlaid_worker.tasks.evaluate import evaluate_task
from inlaid_worker.tasks.example import load_split
from inlaid_worker.tasks.spec import TASKS, get_task
from table import cell_key, markdown, summarize

ADAPTERS = REPO / "assets" / "adapters"


def calibration_seqs(tok, task: str, n: int, seed: int) -> list[torch.Tensor]:
    from inlaid_worker.quant.calib import select

    texts = [render_prompt(e.prompt) + render_answer(e.target) + "\n" for e in load_split(task, "calib")]
    seqs = [torch.tensor(tok(t, add_special_tokens=False)["input_ids"][:512]) for t in texts]
    return select(seqs, n, seed)


def score(model, tok, task: str, limit: int | None, device: str, metric: str = "task") -> float:
    """Headline metric (or answer NLL) of `task` with its adapter merged into a copy of `model`."""
    from peft import PeftModel

    work = (
        PeftModel.from_pretrained(copy.deepcopy(model), ADAPTERS / task).merge_and_unload().to(device).eval()
    )
    if metric == "nll":
        from nll import answer_nll, encode

        return answer_nll(work, encode(tok, load_split(task, "test")[:limit]), device=device)
    res = evaluate_task(work, tok, task, limit=limit)
    del work
    return res["metrics"][get_task(task).metric]


def quantized(
    model_dir: Path,
    method: str,
    bits: int,
    group_size: int,
    tasks: list[str],
    tok,
    calib_n: int,
    seed: int,
    device: str,
    aggregation: str | None = None,
):
    from inlaid_worker.quant import QuantSpec, TaskData, load_dequantized_model, quantize_checkpoint

    data = (
        [TaskData(t, ADAPTERS / t, calibration_seqs(tok, t, calib_n, seed)) for t in tasks]
        if method != "rtn"
        else []
    )
    with tempfile.TemporaryDirectory(prefix="inlaid-q-") as tmp:
        out = Path(tmp) / "ckpt"
        quantize_checkpoint(
            model_dir, out, method, QuantSpec(bits=bits, group_size=group_size), data, device=device,
            aggregation=aggregation if method == "mlgptq" else None,
        )
        return load_dequantized_model(out, torch.float32)


def plan(methods: list[str], bits_list: list[int], seeds: list[int], tasks: list[str]) -> list[tuple]:
    """(method, bits, seed, quantize_for_tasks, evaluate_tasks) jobs in run order: the shared rows of every
    bit width first, per-task GPTQ (one quantization per task) last, so a cut run has the rows that matter."""
    jobs: list[tuple] = []
    if "fp" in methods:
        jobs.append(("fp", None, None, [], tasks))
    for bits in bits_list:
        if "rtn" in methods:
            jobs.append(("rtn", bits, None, [], tasks))
        for seed in seeds:
            for m in ("mlgptq", "gptq"):
                if m in methods:
                    jobs.append((m, bits, seed, tasks, tasks))
    if "gptq-task" in methods:
        jobs.extend(("gptq-task", b, s, [t], [t]) for b in bits_list for s in seeds for t in tasks)
    return jobs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bits", default="4,3")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default="fp,rtn,gptq,mlgptq,gptq-task")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--calib-n", type=int, default=32)
    # SmolLM2-135M's K (576 and 1536) are not multiples of 128; 64 divides both
    ap.add_argument("--group-size", type=int, default=64)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--state", type=Path, default=REPO / "bench" / "results" / "quality-state.json")
    ap.add_argument("--time-budget-s", type=float, default=1e9)
    ap.add_argument("--train-missing", action="store_true", help="train adapters absent from assets/adapters")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--metric", choices=("task", "nll"), default="task")
    ap.add_argument("--aggregation", help="MLGPTQ Hessian aggregation (default: the quantizer's)")
    ap.add_argument("--threads", type=int, help="torch CPU threads (1 on the shared CPU)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tasks = [t for t in args.tasks.split(",") if t]
    for t in tasks:
        get_task(t)
    bits_list = [int(b) for b in args.bits.split(",") if b]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    state = json.loads(args.state.read_text()) if args.state.is_file() else {"cells": {}, "meta": {}}
    t_start = time.time()
    if not args.report_only:
        run_jobs(args, tasks, bits_list, seeds, state, t_start)
    write_report(args.state, state, tasks, bits_list, args.group_size, args.metric)


def run_jobs(args, tasks, bits_list, seeds, state, t_start) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = ensure_smollm2()
    tok = AutoTokenizer.from_pretrained(model_dir)
    if args.train_missing:
        from inlaid_worker.train.__main__ import train_one

        for t in tasks:
            if not (ADAPTERS / t / "adapter_model.safetensors").is_file():
                train_one(t, ADAPTERS / t, 0, model_dir, args.device)
    state["meta"].update(
        {
            "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
            "limit": args.limit,
            "calib_n": args.calib_n,
            "group_size": args.group_size,
            "metric": args.metric,
            "aggregation": args.aggregation,
        }
    )
    for method, bits, seed, qtasks, etasks in plan(args.methods.split(","), bits_list, seeds, tasks):
        todo = [t for t in etasks if cell_key(method, bits, seed, t) not in state["cells"]]
        if not todo:
            continue
        if time.time() - t_start > args.time_budget_s:
            print("time budget spent; run again to continue", flush=True)
            return
        t0 = time.time()
        if method == "fp":
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        else:
            model = quantized(
                model_dir, method, bits, args.group_size, qtasks, tok, args.calib_n, seed, args.device,
                args.aggregation,
            )
        tq = time.time() - t0
        for t in todo:
            state["cells"][cell_key(method, bits, seed, t)] = score(model, tok, t, args.limit, args.device, args.metric)
        print(
            f"{method} {bits} seed {seed}: quant {tq:.1f}s, eval {time.time() - t0 - tq:.1f}s "
            + " ".join(f"{t}={state['cells'][cell_key(method, bits, seed, t)]:.2f}" for t in todo),
            flush=True,
        )
        args.state.parent.mkdir(parents=True, exist_ok=True)
        args.state.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        del model


def write_report(
    state_path: Path, state: dict, tasks: list[str], bits_list: list[int], group_size: int, metric: str = "task"
) -> None:
    nll = metric == "nll"
    heads = {t: "answer NLL" if nll else get_task(t).metric for t in tasks}
    date = dt.date.today().isoformat()
    summaries = {b: summarize(state["cells"], tasks, b, lower_is_better=nll) for b in bits_list}
    md = [f"# Quality table{' (answer NLL, lower is better)' if nll else ''} ({date})", "", f"Setup: {json.dumps(state.get('meta', {}), sort_keys=True)}", ""]
    last = "mean rel. NLL increase" if nll else "mean rel. drop"
    md += [markdown(summaries[b], tasks, heads, b, group_size, last) for b in bits_list]
    out = state_path.parent / f"quality-{'nll-' if nll else ''}{date}"
    out.with_suffix(".md").write_text("\n".join(md))
    out.with_suffix(".json").write_text(
        json.dumps({"meta": state.get("meta", {}), "summary": summaries}, indent=2, sort_keys=True) + "\n"
    )
    print("\n".join(md))


if __name__ == "__main__":
    main()
