"""Prefill CUDA graphs off vs on for one shape (default 7B int4) without the rest of bench_decode's grid: the rows
of prefill_graph_rows.py, plus the host time of each case's eager step (its launches queued behind a GPU sleep, so
the clock stops when the last launch returns). Writes prefill-graphs-<date>[-tag].{json,md} under --out after
every row.

random_model.py's weights keep every linear's input scale (zero-mean codes, scales ~1/sqrt(K)), so the random
7B / 13B model stays finite in fp16 (before 2026-11-30 it overflowed: every logit inf or NaN, which voided the
graph-vs-eager comparison); --weight-scale (default 1: none) still multiplies every linear's scales (dense: the
matrix) on top of that before the first step. Steps whose padded bucket exceeds the runner's cap
(INLAID_PREFILL_GRAPH_MAX_TOKENS, default 1024) run eagerly with graphs on too (row field "graphed"; "(eager)"
after the graph time in the table); set it to 2048 to time 2048-token chunks in graphs.
On the H200:
  PYTHONPATH=workers python3 bench/engine/prefill_graphs_run.py --out DIR --reps 3 --max-seconds 65
A CPU smoke run of the script itself (no timings worth reading: the padded step runs eagerly under Triton's
interpreter, fp32, and the eager host time is not measured):
  TRITON_INTERPRET=1 PYTHONPATH=workers python3 bench/engine/prefill_graphs_run.py --out DIR --device cpu \
      --shape tiny --quant fp16 --chunks 32,64 --decode 4 --context 64 --adapters 2 --reps 1
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inlaid_worker.model.prefill_graphs import env_max_tokens  # noqa: E402
from llama_shapes import SHAPES  # noqa: E402
from prefill_graph_rows import cases, prefill_graph_rows  # noqa: E402
from random_model import TARGETS, make_runner, write_config  # noqa: E402
from steps import load_adapters  # noqa: E402


def eager_host_ms(runner, step) -> float:  # type: ignore[no-untyped-def]
    """Host time of the runner's eager fast path without the logits' copy back: its metadata
    (ModelRunner.eager_inputs, whose small host-to-device copies synchronise, on an idle GPU), then its launches
    (eager_logits) while the GPU sleeps (~0.15 s), so that the clock stops when the last launch returns. Returns -1
    when the launches took >= 120 ms (something waited for the device: the number would be void)."""
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    inputs = runner.eager_inputs(step)
    t_meta = time.perf_counter() - t0
    torch.cuda._sleep(300_000_000)
    t1 = time.perf_counter()
    runner.eager_logits(inputs)
    t_launch = time.perf_counter() - t1
    torch.cuda.synchronize()
    return -1.0 if t_launch >= 0.12 else (t_meta + t_launch) * 1e3


def scale_linears(weights, factor: float) -> None:  # type: ignore[no-untyped-def]
    """In place, before any step: every layer linear's GPTQ scales (dense: the matrix) times factor."""
    from inlaid_worker.model.quant_weights import QuantMatrix

    for layer in weights.layers:
        for m in (layer.qkv, layer.o, layer.gate_up, layer.down):
            for t in [p.scales for p in m.parts] if isinstance(m, QuantMatrix) else [m]:
                t.mul_(factor)


def tokens_per_s(row: dict) -> float:
    return row["tokens"] / row["step_ms"] * 1e3


def to_markdown(meta: dict, rows: list[dict]) -> str:
    out = [f"# Prefill CUDA graphs off vs on ({meta['date']})", "", f"- command: `{meta['command']}`",
           f"- device: {meta['device']}; torch {meta['torch']}; shape {meta['shape']} {meta['quant']}; "
           f"decode context {meta['context']}; linears' weight scale x{meta.get('weight_scale', 1)}; "
           f"graphed buckets up to {meta.get('graph_max_tokens', '-')} tokens; wall {meta.get('wall_s', 0):.0f} s", "",
           "step ms: median wall time of ModelRunner.execute (logits' copy back included); tok/s: the step's new "
           "tokens (prefill and decode rows) per second; eager host ms: the eager step's metadata and launches; "
           "graph host us: a replayed step's staging, copy and replay call; capture ms: a bucket's first call "
           "(warm-up run, capture, replay); non-finite: logits rows with inf/NaN, eager / graph; '(eager)' after a graph "
           "time: the runner's policy ran that step eagerly (its bucket is over the token cap)", "",
           "| case | tokens | seqs | eager ms | graph ms | graph speedup | eager tok/s | graph tok/s | eager host ms "
           "| graph host us | capture ms | graph vs eager max rel err | non-finite |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for case in dict.fromkeys(r["case"] for r in rows):
        e = next((r for r in rows if r["case"] == case and r["prefill_graphs"] == 0), {})
        g = next((r for r in rows if r["case"] == case and r["prefill_graphs"] == 1), {})
        fmt = lambda r, k, f: format(r[k], f) if k in r else "-"  # noqa: E731
        first = e or g
        speedup = f"{e['step_ms'] / g['step_ms']:.2f}x" if e and g else "-"
        tps = lambda r: f"{tokens_per_s(r):.0f}" if r else "-"  # noqa: E731
        eager_mark = " (eager)" if g.get("graphed") is False else ""
        out.append(f"| {case} | {first['tokens']} | {first['seqs']} | {fmt(e, 'step_ms', '.2f')} "
                   f"| {fmt(g, 'step_ms', '.2f')}{eager_mark} | {speedup} | {tps(e)} | {tps(g)} | {fmt(e, 'host_ms', '.1f')} "
                   f"| {fmt(g, 'host_us', '.0f')} | {fmt(g, 'capture_ms', '.0f')} | {fmt(g, 'max_rel_err', '.1e')} "
                   f"| {fmt(e, 'nonfinite', 'd')} / {fmt(g, 'nonfinite', 'd')} |")  # fmt: skip
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--shape", default="7b")
    ap.add_argument("--quant", default="int4")
    ap.add_argument("--chunks", default="128,512")
    ap.add_argument("--decode", type=int, default=32)
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--adapters", type=int, default=8, help="rank-16 q/k/v/o adapters of the LoRA cases (0: none)")
    ap.add_argument("--kv-blocks", type=int, default=1200)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--max-seconds", type=float, default=0.0)
    ap.add_argument("--weight-scale", type=float, default=1.0,
                    help="multiply the random linears' scales on top of random_model's own scaling (1: none)")  # fmt: skip
    ap.add_argument("--tag", default="")
    ap.add_argument("--device", default="cuda", help="cpu: a smoke run of the script (TRITON_INTERPRET=1, fp32)")
    args = ap.parse_args()
    t_start = time.perf_counter()
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    if not cuda:
        _interpreter_smoke_setup()
    date = dt.date.today().isoformat()
    meta = dict(date=date, command="PYTHONPATH=workers python3 " + " ".join(sys.argv),
                device=torch.cuda.get_device_name(dev) if cuda else "cpu (smoke run, Triton interpreter)",
                torch=torch.__version__, shape=args.shape, quant=args.quant, context=args.context,
                weight_scale=args.weight_scale, graph_max_tokens=env_max_tokens())  # fmt: skip
    rows: list[dict] = []
    stem = args.out / f"prefill-graphs-{date}{'-' + args.tag if args.tag else ''}"
    args.out.mkdir(parents=True, exist_ok=True)

    def log(row: dict) -> None:
        rows.append(dict(row, t_s=time.perf_counter() - t_start))
        meta["wall_s"] = time.perf_counter() - t_start
        stem.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
        stem.with_suffix(".md").write_text(to_markdown(meta, rows))
        print(json.dumps(rows[-1]), flush=True)

    allows = lambda: not args.max_seconds or time.perf_counter() - t_start < args.max_seconds  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        config_dir = write_config(SHAPES[args.shape], Path(tmp) / args.shape)
        runner = make_runner(
            config_dir, args.quant, dev, torch.float16 if cuda else torch.float32, args.kv_blocks, 16,
            max(8, args.adapters), "triton",
        )  # fmt: skip
        if args.weight_scale != 1:
            scale_linears(runner.weights, args.weight_scale)
        slots = load_adapters(runner, 16, TARGETS["qkvo"], args.adapters, "pg") if args.adapters else []
        steps = cases([int(v) for v in args.chunks.split(",")], args.decode, args.context, slots,
                      runner.config.vocab_size, args.kv_blocks)  # fmt: skip

        def log_row(row: dict) -> None:
            if row["prefill_graphs"] == 0 and cuda:
                step = dict(steps)[row["case"]]
                row["host_ms"] = eager_host_ms(runner, step)
            log(row)

        prefill_graph_rows(runner, steps, [0, 1], dev, args.warmup, args.reps, log_row, allows, {})
    meta["wall_s"] = time.perf_counter() - t_start
    stem.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    print(to_markdown(meta, rows))


def _interpreter_smoke_setup() -> None:
    """CPU smoke run: Triton must run interpreted (TRITON_INTERPRET=1 before triton's import) and, with numpy
    2.4+, its interpreter needs tests/kernels/cases.py's patch."""
    import os

    if os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("--device cpu needs TRITON_INTERPRET=1 in the environment")
    torch.set_num_threads(1)
    tests_kernels = Path(__file__).resolve().parents[2] / "workers" / "tests" / "kernels"
    sys.path.insert(0, str(tests_kernels))
    from cases import _patch_interpreter_for_numpy  # type: ignore[import-not-found]

    _patch_interpreter_for_numpy()


if __name__ == "__main__":
    main()
