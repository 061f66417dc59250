"""Onboarding on the GPU while serving: a Llama-2-7B-shaped model (random fp16 weights held in host memory,
streamed to the GPU layer by layer by the quantizer), 4-bit g128 MLGPTQ with stored Hessians of 2 tasks;
the engine (triton backend, packed int4, decode steps replayed as CUDA graphs with --graphs) serves a
continuous decode load over several adapters while the worker's real onboarding path (OnboardManager: child
process or thread) adds a task to all 32 layers: its Hessians with its adapter active, folded into the stored
running aggregate, GPTQ layer by layer, each layer copied into the serving tensors in place between steps, the
new checkpoint version published. Reports tokens/s before / during / after, the drop, POST-to-active and
stage times, GPU memory, whether any weight address moved, and whether the served layers equal the published
checkpoint.

Set-up shortcut: quantizing the starting checkpoint's 32 layers from scratch would take most of a device call,
so the set-up quantizes --distinct (2) layers of a model whose first layers equal the full model's, and
replicate_checkpoint repeats them (packed weights copied, stored Hessians hard-linked) to 32. The onboarding
then does its full work on all 32 layers of the full model (different random weights in layers 2-31).
  H200:  PYTHONPATH=workers timeout 570 python3 bench/onboard/onboard_h200.py --out DIR --window 5 --warmup 4 \
           --calib 16 --tmp auto --graphs --budget 555
         (set-up ~1.7 min, the 32-layer job ~400 s; layer times are printed and saved as they come, and --budget
         stops the run cleanly with what was measured: bench/results/onboard-h200-2026-11-29-v2.md)
  CPU check: TRITON_INTERPRET=1 PYTHONPATH=workers .venv/bin/python bench/onboard/onboard_h200.py --tiny --out DIR
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from h200_setup import replicate_checkpoint, word_tokenizer, write_adapter, write_calib, write_fp_model  # noqa: E402
from inlaid_worker.engine.engine import EngineLimits, LLMEngine  # noqa: E402
from inlaid_worker.engine.tokenizer import PromptTokenizer  # noqa: E402
from inlaid_worker.kernels import quant_matmul_config  # noqa: E402
from inlaid_worker.model.config import load_model_config  # noqa: E402
from inlaid_worker.model.quant_weights import QuantMatrix, load_gptq_weights  # noqa: E402
from inlaid_worker.model.runner import ModelRunner  # noqa: E402
from inlaid_worker.onboard.background import BackgroundLimits  # noqa: E402
from inlaid_worker.onboard.layer_swap import MATRICES, host_copy, weight_pointers  # noqa: E402
from inlaid_worker.onboard.manager import AddRequest, OnboardManager  # noqa: E402
from inlaid_worker.onboard.versions import CheckpointVersions  # noqa: E402
from inlaid_worker.quant import QuantSpec, TaskData, quantize_checkpoint  # noqa: E402
from inlaid_worker.quant.calib import load_calibration  # noqa: E402
from onboard_h200_load import Load, StepClock, summarize_mode, to_markdown  # noqa: E402
from random_model import LLAMA2_7B, TINY, random_adapter, write_config  # noqa: E402

ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
BLOCK = 16


def parse_mode(text: str) -> tuple[BackgroundLimits, bool, bool]:
    """"process", "process:0.5" (max_share), "thread", "thread-prio" (engine on a high-priority CUDA stream);
    a "+eager" suffix turns the runner's decode CUDA graphs off for that mode (baseline included)."""
    text, plus, _ = text.partition("+eager")
    kind, _, share = text.partition(":")
    prio = kind.endswith("-prio")
    limits = BackgroundLimits(mode=kind.removesuffix("-prio"), max_share=float(share or 1))  # type: ignore[arg-type]
    return limits, prio, bool(plus)


def build_engine(args: argparse.Namespace, serve_dir: Path, ckpt: Path, tok) -> LLMEngine:  # type: ignore[no-untyped-def]
    """Runner serving the checkpoint's layers packed (int4 quant_matmul on the triton backend)."""
    dev, dtype = args.device_, args.dtype_
    weights = load_gptq_weights(ckpt, load_model_config(ckpt), dev, dtype, packed=True)
    ctx = args.prompt + 3 * args.max_tokens // 2  # the longest request the load sends
    blocks = args.batch * -(-ctx // BLOCK) + 64
    runner = ModelRunner(serve_dir, dev, dtype, blocks, BLOCK, args.adapters + 4, "triton", weights,
                         cuda_graphs=args.graphs)  # fmt: skip
    limits = EngineLimits(BLOCK, blocks, args.batch, 4096, ctx + BLOCK, args.adapters + 4)
    engine = LLMEngine(runner, PromptTokenizer(tok), limits, base_model_id="base", eos_token_ids=set())
    for i in range(args.adapters):
        a = random_adapter(runner.config, args.rank, ATTN, seed=100 + i)
        engine.add_adapter(f"serve{i}", a, args.rank, ATTN)
    return engine


def warm_up(load: Load, clock: StepClock, seconds: float, limit: float = 40.0) -> None:
    """At least `seconds` of load, then 2 s chunks until no step is a kernel tuning or compile stall."""
    t0 = time.perf_counter()
    load.run_for(seconds)
    while time.perf_counter() - t0 < limit:
        c0 = time.perf_counter()
        load.run_for(2.0)
        w = clock.window(c0, time.perf_counter())
        if w.get("steps", 0) and w["step_ms_max"] < 3 * w["step_ms_median"]:
            return


def gpu_used(dev: torch.device) -> int:
    if dev.type != "cuda":
        return 0
    free, total = torch.cuda.mem_get_info(dev)
    return int(total - free)


def check_served(loop, runner, ckpt: Path, layers: list[int]) -> dict:  # type: ignore[no-untyped-def]
    """Do the serving tensors of `layers` equal the published checkpoint's (as a restart would load them)?"""
    from inlaid_worker.onboard.checkpoint_weights import layer_from_packed, packing_of
    from inlaid_worker.quant import read_checkpoint

    linears, _ = read_checkpoint(ckpt)
    group_size, sym = packing_of(ckpt)
    out = {}
    for i in layers:
        prefix = f"model.layers.{i}."
        packed = {k.removeprefix(prefix): v for k, v in linears.items() if k.startswith(prefix)}
        want = layer_from_packed(packed, runner.weights.layers[i], "cpu", runner.dtype, group_size=group_size, sym=sym)
        served = loop.call(lambda _e, i=i: host_copy(runner.weights.layers[i])).result()
        ok = all(torch.equal(a, b) for name in MATRICES
                 for pa, pb in zip(getattr(served, name).parts, getattr(want, name).parts, strict=True)
                 for a, b in ((pa.qweight, pb.qweight), (pa.qzeros, pb.qzeros), (pa.scales, pb.scales)))  # fmt: skip
        out[str(i)] = ok
    return out


def scratch_dir(choice: str | None, need_gb: float) -> str | None:
    """`auto`: /tmp when it has `need_gb` free, else /dev/shm when that has (the versions must share one file
    system with the checkpoint: kept tasks' Hessians are hard-linked), else the roomier of the two."""
    if choice != "auto":
        return choice
    free = {d: shutil.disk_usage(d).free / 1e9 for d in ("/tmp", "/dev/shm") if os.path.isdir(d)}
    print(f"free GB: {free}", flush=True)
    for d in ("/tmp", "/dev/shm"):
        if free.get(d, 0) >= need_gb:
            return d
    return max(free, key=free.__getitem__) if free else None


def main() -> None:  # noqa: PLR0915
    args = parse_args()
    t_start = time.perf_counter()
    dev = args.device_
    root = Path(tempfile.mkdtemp(prefix="onboard-h200-", dir=scratch_dir(args.tmp, args.need_gb)))
    shape = args.shape
    meta: dict = dict(date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                      command="PYTHONPATH=workers python3 " + " ".join(sys.argv),
                      device=torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({platform.machine()})",
                      torch=torch.__version__, shape=vars(shape), onboarded_layers=shape.layers,
                      distinct_setup_layers=args.distinct, batch=args.batch, serving_adapters=args.adapters,
                      rank=args.rank, calib_records=args.calib, calib_len=args.calib_len,
                      spec="4-bit g128 sym, MLGPTQ diagmax", window_s=args.window, cuda_graphs=args.graphs,
                      quantizer_threads=BackgroundLimits().threads, cpu_count=os.cpu_count(),
                      disk_free_GB_at_start=shutil.disk_usage(root).free / 1e9)  # fmt: skip
    result: dict = {"meta": meta, "setup": {}, "modes": [], "skipped": [], "progress": []}
    stamp = f"onboard-h200-{dt.date.today().isoformat()}{'-' + args.tag if args.tag else ''}"
    lock = threading.Lock()

    def save() -> None:
        with lock:
            args.out.mkdir(parents=True, exist_ok=True)
            meta["wall_s"] = time.perf_counter() - t_start
            (args.out / f"{stamp}.json").write_text(json.dumps(result, indent=1))
            (args.out / f"{stamp}.md").write_text(to_markdown(result))

    def stage(name: str, t0: float) -> None:
        result["setup"][name] = round(time.perf_counter() - t0, 2)
        print(f"[{time.perf_counter() - t_start:6.1f}s] {name}: {result['setup'][name]} s", flush=True)
        save()

    print(f"scratch {root}: {meta['disk_free_GB_at_start']:.0f} GB free; {meta['cpu_count']} CPUs", flush=True)
    t0 = time.perf_counter()
    d = args.distinct
    base_d = write_fp_model(shape, d, root / "base_d", dev)  # its layers 0..d-1 equal base's (same generator)
    tok = word_tokenizer(shape.vocab)
    names = ["a", "b"] + [f"new{i}" for i in range(len(args.modes))]
    adapters = {n: write_adapter(root / f"adapter_{n}", base_d, shape, d, args.rank, ATTN, i)
                for i, n in enumerate(names[:2])}  # fmt: skip
    calibs = {n: write_calib(root / f"{n}.jsonl", shape.vocab, args.calib, args.calib_len + 8, i)
              for i, n in enumerate(names)}  # fmt: skip
    serve_dir = write_config(shape, root / "serve")
    stage("write_setup_inputs_s", t0)
    t0 = time.perf_counter()
    base = write_fp_model(shape, shape.layers, root / "base", dev)
    adapters.update({n: write_adapter(root / f"adapter_{n}", base, shape, shape.layers, args.rank, ATTN, 2 + i)
                     for i, n in enumerate(names[2:])})  # fmt: skip
    stage("write_fp_model_all_layers_s", t0)
    t0 = time.perf_counter()
    tasks = [TaskData(n, adapters[n], load_calibration(calibs[n], tok, args.calib_len)) for n in ("a", "b")]
    quantize_checkpoint(base_d, root / "ckpt_d", "mlgptq", QuantSpec(bits=4, group_size=128), tasks, device=dev)
    stage(f"initial_mlgptq_2_tasks_{d}_layers_s", t0)
    t0 = time.perf_counter()
    replicate_checkpoint(root / "ckpt_d", root / "ckpt", shape.layers)
    stage("replicate_checkpoint_s", t0)
    if dev.type == "cuda":
        torch.cuda.empty_cache()  # the serving numbers below should not hold the set-up's cached blocks
    hess = root / "ckpt_d" / "hessians" / "tasks" / "a"
    result["setup"]["stored_hessian_bytes_per_task_layer"] = sum(f.stat().st_size for f in hess.iterdir()) // d
    t0 = time.perf_counter()
    engine = build_engine(args, serve_dir, root / "ckpt", tok)
    clock = StepClock(engine, lambda: gpu_used(dev))
    from inlaid_worker.server.engine_loop import EngineLoop

    loop = EngineLoop(engine)
    loop.start()
    load = Load(loop, args.batch, [f"serve{i}" for i in range(args.adapters)], args.prompt, args.max_tokens,
                shape.vocab)  # fmt: skip
    load.deadline = t_start + args.budget
    warm_up(load, clock, args.warmup, 40.0 if dev.type == "cuda" else args.warmup)
    stage("engine_build_and_warmup_s", t0)
    if dev.type == "cuda":
        result["setup"]["gpu_used_serving_GB"] = clock.mem[-1][1] / 1e9 if clock.mem else None
        result["setup"]["engine_process_peak_allocated_GB"] = torch.cuda.max_memory_allocated(dev) / 1e9
    manager = OnboardManager(loop.call, engine.runner, CheckpointVersions(root / "ckpt", root / "versions"), base,
                             tok, device=str(dev), calib_max_len=args.calib_len)  # fmt: skip
    save()
    swaps: list[tuple[int, float]] = []
    t_sub = 0.0

    def swapped(layer: int) -> None:  # printed and saved as it happens: a run cut short keeps its layer times
        now = time.perf_counter()
        swaps.append((layer, now))
        tps = load.tokens_per_s(t_sub, now)
        result["progress"].append({"mode": result.get("current_mode"), "layer": layer, "s_since_submit": now - t_sub,
                                   "tokens_per_s_since_submit": tps})  # fmt: skip
        print(f"[{now - t_start:6.1f}s] layer {layer} swapped in ({now - t_sub:.1f} s after submit; "
              f"{tps:.0f} tok/s since submit)", flush=True)
        save()

    manager.on_layer_swapped = swapped
    high = torch.cuda.Stream(dev, priority=-1) if dev.type == "cuda" else None
    last_mode_s = 0.0
    for i, text in enumerate(args.modes):
        elapsed = time.perf_counter() - t_start
        if elapsed + last_mode_s + args.window > args.budget:
            result["skipped"].append(text)
            print(f"skipping mode {text}: {elapsed:.0f} s elapsed, budget {args.budget} s", flush=True)
            continue
        limits, prio, eager = parse_mode(text)
        runner = engine.runner
        graphs = runner._graphs
        if eager and graphs is not None:
            runner._graphs = None
        captures0 = runner.graph_captures
        if dev.type == "cuda":  # the engine thread's current stream (thread-local in PyTorch)
            stream = high if prio else torch.cuda.default_stream(dev)
            loop.call(lambda _e, s=stream: torch.cuda.set_stream(s)).result()
        tuned0 = len(getattr(quant_matmul_config, "_TUNED", ()))
        m0 = time.perf_counter()
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        for retry in range(3):  # a baseline with a one-off stall (a kernel tuned for a new shape) is measured again
            b0 = time.perf_counter()
            load.run_for(args.window)
            ptrs0 = loop.call(lambda _e: weight_pointers(engine.runner.weights.layers)).result()  # a step boundary
            if not clock.window(b0, time.perf_counter()).get("stalls"):
                break
            print(f"baseline window {retry} had a stalled step: measuring again", flush=True)
        manager.background = limits
        swaps.clear()
        name = f"new{i}"
        result["current_mode"] = text
        t_sub = time.perf_counter()
        print(f"[{t_sub - t_start:6.1f}s] mode {text}: submit", flush=True)
        job = manager.submit([AddRequest(name, str(adapters[name]), str(calibs[name]))], [])
        t_ret = time.perf_counter()

        def diagnostics(runner=runner, ptrs0=ptrs0, captures0=captures0, tuned0=tuned0) -> dict:  # type: ignore[no-untyped-def]
            """Did the swaps keep every address (in place) and trigger no graph capture or kernel tuning?"""
            ptrs1 = loop.call(lambda _e: weight_pointers(engine.runner.weights.layers)).result(timeout=60)
            return {"served_layers_packed": all(isinstance(x.qkv, QuantMatrix) for x in engine.runner.weights.layers),
                    "swaps_in_place": manager.inplace_swaps, "swaps_replaced": manager.replaced_swaps,
                    "weight_addresses_unchanged": ptrs0 == ptrs1, "cuda_graphs": runner._graphs is not None,
                    "graph_captures_during_mode": runner.graph_captures - captures0,
                    "kernel_shapes_tuned_during_mode": len(getattr(quant_matmul_config, "_TUNED", ())) - tuned0,
                    "load_errors_so_far": load.errors}  # fmt: skip
        try:
            load.run_until(lambda: job.finished)
        except Exception as exc:  # a CUDA error, or the time budget: keep what was measured, say what broke
            result["error"] = f"mode {text}: {type(exc).__name__}: {str(exc)[:300]}"
            result["load_totals"] = {"completed": load.completed, "errors": load.errors}
            result["partial"] = summarize_mode(text, asdict(limits), prio, list(job.events), list(swaps), load, clock,
                                               b0, t_sub, t_ret, time.perf_counter(), shape.layers, 0.0)  # fmt: skip
            result["partial"].update(diagnostics())
            save()
            print(json.dumps({k: v for k, v in result["partial"].items() if not isinstance(v, list)}), flush=True)
            for child in multiprocessing.active_children():  # the quantizer process: it would outlive os._exit
                child.terminate()
            os._exit(3)
        t_done = time.perf_counter()
        row = summarize_mode(text, asdict(limits), prio, job.events, swaps, load, clock, b0, t_sub, t_ret, t_done,
                             shape.layers, 0.0)  # fmt: skip
        row.update(diagnostics())
        if eager:
            runner._graphs = graphs
        if dev.type == "cuda":
            row["engine_process_peak_allocated_GB"] = torch.cuda.max_memory_allocated(dev) / 1e9
        result["modes"].append(row)
        last_mode_s = time.perf_counter() - m0
        print(json.dumps({k: v for k, v in row.items() if not isinstance(v, (list, dict))}), flush=True)
        print(json.dumps(row.get("stages")), flush=True)
        save()
        if row["final"] == "done":
            t0 = time.perf_counter()
            row["served_equals_published"] = check_served(loop, engine.runner, manager.versions.current().path,
                                                          [0, shape.layers - 1])  # fmt: skip
            print(f"served == published (layers 0, last): {row['served_equals_published']} "
                  f"({time.perf_counter() - t0:.1f} s)", flush=True)
            save()
    a0 = time.perf_counter()
    load.run_for(args.window)
    result["after"] = load.window(a0, time.perf_counter(), clock)
    result["load_totals"] = {"completed": load.completed, "errors": load.errors}
    loop.stop()
    save()
    print(to_markdown(result), flush=True)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tiny", action="store_true", help="tiny shape on the CPU (TRITON_INTERPRET=1): a check")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--layers", type=int, default=None, help="decoder layers of the model, all onboarded "
                    "(default: the shape's, 32 for 7B)")
    ap.add_argument("--distinct", type=int, default=2, help="layers quantized from scratch in the set-up; the "
                    "starting checkpoint repeats them (replicate_checkpoint)")
    ap.add_argument("--batch", type=int, default=24, help="requests kept in flight")
    ap.add_argument("--adapters", type=int, default=8, help="serving adapters (round robin over requests)")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--calib", type=int, default=32, help="calibration records of the new task")
    ap.add_argument("--calib-len", type=int, default=256)
    ap.add_argument("--window", type=float, default=6.0, help="seconds of the before / after windows")
    ap.add_argument("--warmup", type=float, default=8.0)
    ap.add_argument("--modes", default="process", help="one onboarding each, in order (process, thread, "
                    "thread-prio, process:0.5, ...+eager)")
    ap.add_argument("--budget", type=float, default=465.0, help="skip modes that would end past this, and stop "
                    "(saving what was measured) when a job runs past it (s)")
    ap.add_argument("--tmp", default=None, help="scratch directory (default: the system's; auto: see scratch_dir)")
    ap.add_argument("--need-gb", type=float, default=55.0, help="disk the 7B run writes (--tmp auto)")
    ap.add_argument("--graphs", action="store_true", help="let the runner replay decode steps as CUDA graphs")
    ap.add_argument("--tag", default="")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    if "--tiny" in sys.argv:
        ap.set_defaults(batch=4, adapters=2, rank=4, max_tokens=16, calib=4, calib_len=32, window=1.0, warmup=1.0,
                        layers=4, budget=900.0)  # fmt: skip
    args = ap.parse_args()
    args.device_ = torch.device(args.device)
    args.dtype_ = torch.float16 if args.device_.type == "cuda" else torch.float32
    shape = TINY if args.tiny else LLAMA2_7B
    args.shape = replace(shape, layers=args.layers or shape.layers)
    if not 0 < args.distinct <= args.shape.layers:
        ap.error("--distinct must be in 1..layers")
    args.modes = args.modes.split(",")
    if args.device_.type == "cpu":
        if os.environ.get("TRITON_INTERPRET") != "1":
            ap.error("on the CPU the packed int4 weights need TRITON_INTERPRET=1")
        torch.set_num_threads(1)
        sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "workers" / "tests" / "kernels"))
        from cases import _patch_interpreter_for_numpy  # Triton 3.6 interpreter vs numpy >= 2.4

        _patch_interpreter_for_numpy()
    return args


if __name__ == "__main__":
    main()
