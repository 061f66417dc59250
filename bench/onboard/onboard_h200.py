"""Onboarding on the GPU while serving: a Llama-2-7B-shaped model (random fp16 weights held in host memory,
streamed to the GPU layer by layer by the quantizer), 4-bit g128 MLGPTQ with stored Hessians of 2 tasks;
the engine (triton backend, packed int4) serves a continuous decode load over several adapters while the
worker's real onboarding path (OnboardManager: child process or thread) adds a task: its Hessians with its
adapter active, max-merge with the stored ones, GPTQ layer by layer, each layer swapped in between steps,
the new checkpoint version published. Reports tokens/s before / during / after, the drop, stage times and
GPU memory.

Only the first --layers decoder layers are onboarded (time per layer is measured and extrapolated to the
shape's 32); the served model has all 32 layers (its first --layers are the checkpoint's and get swapped,
the rest are copies of them), so serving steps cost what a 7B step costs.
  H200:  PYTHONPATH=workers timeout 480 python3 bench/onboard/onboard_h200.py --out DIR   (about 6-7 min: set-up
         ~1 min, each mode ~1.5 min since the host-side Hessian work takes ~20 s a layer; --budget skips the rest)
  CPU check (seconds): TRITON_INTERPRET=1 PYTHONPATH=workers .venv/bin/python bench/onboard/onboard_h200.py --tiny --out DIR
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from h200_setup import word_tokenizer, write_adapter, write_calib, write_fp_model  # noqa: E402
from inlaid_worker.engine.engine import EngineLimits, LLMEngine  # noqa: E402
from inlaid_worker.engine.tokenizer import PromptTokenizer  # noqa: E402
from inlaid_worker.kernels import quant_matmul_config  # noqa: E402
from inlaid_worker.model.config import load_model_config  # noqa: E402
from inlaid_worker.model.quant_weights import QuantMatrix, load_gptq_weights  # noqa: E402
from inlaid_worker.model.runner import ModelRunner  # noqa: E402
from inlaid_worker.onboard.background import BackgroundLimits  # noqa: E402
from inlaid_worker.onboard.manager import AddRequest, OnboardManager  # noqa: E402
from inlaid_worker.onboard.versions import CheckpointVersions  # noqa: E402
from inlaid_worker.quant import QuantSpec, TaskData, quantize_checkpoint  # noqa: E402
from inlaid_worker.quant.calib import load_calibration  # noqa: E402
from inlaid_worker.quant.quantize import load_fp_model  # noqa: E402
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


def clone_layer(layer):  # type: ignore[no-untyped-def]
    """A copy with its own device tensors (so 32 served layers take 32 layers of memory)."""
    def mat(m: QuantMatrix) -> QuantMatrix:
        return QuantMatrix(tuple(replace(p, qweight=p.qweight.clone(), qzeros=p.qzeros.clone(),
                                         scales=p.scales.clone()) for p in m.parts))  # fmt: skip
    return replace(layer, qkv=mat(layer.qkv), o=mat(layer.o), gate_up=mat(layer.gate_up), down=mat(layer.down))


def build_engine(args: argparse.Namespace, serve_dir: Path, ckpt: Path, tok) -> LLMEngine:  # type: ignore[no-untyped-def]
    """Runner serving all layers packed: the checkpoint's first layers, then copies of them."""
    dev, dtype = args.device_, args.dtype_
    part = load_gptq_weights(ckpt, load_model_config(ckpt), dev, dtype, packed=True)
    n = args.shape.layers
    layers = tuple(part.layers[i] if i < len(part.layers) else clone_layer(part.layers[i % len(part.layers)])
                   for i in range(n))  # fmt: skip
    weights = replace(part, layers=layers)
    ctx = args.prompt + 3 * args.max_tokens // 2  # the longest request the load sends
    blocks = args.batch * -(-ctx // BLOCK) + 64
    extra = {"cuda_graphs": args.graphs} if "cuda_graphs" in inspect.signature(ModelRunner).parameters else {}
    runner = ModelRunner(serve_dir, dev, dtype, blocks, BLOCK, args.adapters + 4, "triton", weights, **extra)
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


def main() -> None:  # noqa: PLR0915
    args = parse_args()
    t_start = time.perf_counter()
    dev = args.device_
    root = Path(tempfile.mkdtemp(prefix="onboard-h200-", dir=args.tmp))
    meta: dict = dict(date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                      command="PYTHONPATH=workers python3 " + " ".join(sys.argv),
                      device=torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({platform.machine()})",
                      torch=torch.__version__, shape=vars(args.shape), onboarded_layers=args.layers,
                      batch=args.batch, serving_adapters=args.adapters, rank=args.rank, calib_records=args.calib,
                      calib_len=args.calib_len, spec="4-bit g128 sym, MLGPTQ diagmax", window_s=args.window,
                      cuda_graphs=args.graphs)  # fmt: skip
    result: dict = {"meta": meta, "setup": {}, "modes": [], "skipped": []}
    stamp = f"onboard-h200-{dt.date.today().isoformat()}{'-' + args.tag if args.tag else ''}"

    def save() -> None:
        args.out.mkdir(parents=True, exist_ok=True)
        meta["wall_s"] = time.perf_counter() - t_start
        (args.out / f"{stamp}.json").write_text(json.dumps(result, indent=1))
        (args.out / f"{stamp}.md").write_text(to_markdown(result))

    def stage(name: str, t0: float) -> None:
        result["setup"][name] = round(time.perf_counter() - t0, 2)
        print(f"[{time.perf_counter() - t_start:6.1f}s] {name}: {result['setup'][name]} s", flush=True)

    t0 = time.perf_counter()
    base = write_fp_model(args.shape, args.layers, root / "base", dev)
    tok = word_tokenizer(args.shape.vocab)
    names = ["a", "b"] + [f"new{i}" for i in range(len(args.modes))]
    adapters = {n: write_adapter(root / f"adapter_{n}", base, args.shape, args.layers, args.rank, ATTN, i)
                for i, n in enumerate(names)}  # fmt: skip
    calibs = {n: write_calib(root / f"{n}.jsonl", args.shape.vocab, args.calib, args.calib_len + 8, i)
              for i, n in enumerate(names)}  # fmt: skip
    serve_dir = write_config(args.shape, root / "serve")
    stage("write_inputs_s", t0)
    t0 = time.perf_counter()
    load_fp_model(base)
    stage("load_fp_model_s", t0)
    t0 = time.perf_counter()
    tasks = [TaskData(n, adapters[n], load_calibration(calibs[n], tok, args.calib_len)) for n in ("a", "b")]
    quantize_checkpoint(base, root / "ckpt", "mlgptq", QuantSpec(bits=4, group_size=128), tasks, device=dev)
    stage("initial_mlgptq_2_tasks_s", t0)
    if dev.type == "cuda":
        torch.cuda.empty_cache()  # the serving numbers below should not hold the set-up's cached blocks
    hess = root / "ckpt" / "hessians" / "tasks" / "a"
    result["setup"]["stored_hessian_bytes_per_task_layer"] = sum(f.stat().st_size for f in hess.iterdir()) // args.layers
    t0 = time.perf_counter()
    shutil.copytree(hess, root / "copy-probe")  # what each new version does per kept task (incremental.py)
    copy_s = (time.perf_counter() - t0) / args.layers
    shutil.rmtree(root / "copy-probe")
    result["setup"]["hessian_copy_s_per_task_layer"] = round(copy_s, 3)
    load_per_layer = result["setup"]["load_fp_model_s"] / (args.layers + 1.3)  # embed + lm_head ~ 1.3 layers
    t0 = time.perf_counter()
    engine = build_engine(args, serve_dir, root / "ckpt", tok)
    clock = StepClock(engine)
    from inlaid_worker.server.engine_loop import EngineLoop

    loop = EngineLoop(engine)
    loop.start()
    load = Load(loop, args.batch, [f"serve{i}" for i in range(args.adapters)], args.prompt, args.max_tokens,
                args.shape.vocab, lambda: gpu_used(dev))  # fmt: skip
    warm_up(load, clock, args.warmup, 40.0 if dev.type == "cuda" else args.warmup)
    stage("engine_build_and_warmup_s", t0)
    result["setup"]["gpu_used_serving_GB"] = gpu_used(dev) / 1e9
    if dev.type == "cuda":
        result["setup"]["engine_process_peak_allocated_GB"] = torch.cuda.max_memory_allocated(dev) / 1e9
    manager = OnboardManager(loop.call, engine.runner, CheckpointVersions(root / "ckpt", root / "versions"), base,
                             tok, device=str(dev), calib_max_len=args.calib_len)  # fmt: skip
    save()
    swaps: list[tuple[int, float]] = []

    def swapped(layer: int) -> None:  # printed as it happens: a run cut short still shows its layer times
        swaps.append((layer, time.perf_counter()))
        print(f"[{swaps[-1][1] - t_start:6.1f}s] layer {layer} swapped in", flush=True)

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
        graphs = getattr(runner, "_graphs", None)  # CUDA graphs of the runner being built next door, if any
        if eager and graphs is not None:
            runner._graphs = None
        captures0 = getattr(runner, "graph_captures", 0)
        if dev.type == "cuda":  # the engine thread's current stream (thread-local in PyTorch)
            stream = high if prio else torch.cuda.default_stream(dev)
            loop.call(lambda _e, s=stream: torch.cuda.set_stream(s)).result()
        tuned0 = len(getattr(quant_matmul_config, "_TUNED", ()))
        m0 = b0 = time.perf_counter()
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        load.run_for(args.window)
        manager.background = limits
        swaps.clear()
        name = f"new{i}"
        t_sub = time.perf_counter()
        print(f"[{t_sub - t_start:6.1f}s] mode {text}: submit", flush=True)
        job = manager.submit([AddRequest(name, str(adapters[name]), str(calibs[name]))], [])
        t_ret = time.perf_counter()
        try:
            load.run_until(lambda: job.finished)
        except Exception as exc:  # e.g. a CUDA error: keep what was measured, say what broke
            result["error"] = f"mode {text}: {type(exc).__name__}: {str(exc)[:300]}"
            save()
            raise
        t_done = time.perf_counter()
        packed = all(isinstance(engine.runner.weights.layers[j].qkv, QuantMatrix) for j in range(args.shape.layers))
        row = summarize_mode(text, asdict(limits), prio, job.events, swaps, load, clock, b0, t_sub, t_ret, t_done,
                             args.shape.layers, load_per_layer + (2 + i) * copy_s)  # fmt: skip
        row["served_layers_packed_after"] = packed
        row["kernel_shapes_tuned_during_mode"] = len(getattr(quant_matmul_config, "_TUNED", ())) - tuned0  # > 0: a tuning stall fell in a window
        row["cuda_graphs"] = getattr(runner, "_graphs", None) is not None
        row["graph_captures_during_mode"] = getattr(runner, "graph_captures", 0) - captures0
        if eager:
            runner._graphs = graphs
        if dev.type == "cuda":
            row["engine_process_peak_allocated_GB"] = torch.cuda.max_memory_allocated(dev) / 1e9
        result["modes"].append(row)
        last_mode_s = time.perf_counter() - m0
        print(json.dumps({k: v for k, v in row.items() if not isinstance(v, (list, dict))}), flush=True)
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
    ap.add_argument("--layers", type=int, default=2, help="decoder layers onboarded (measured, then extrapolated)")
    ap.add_argument("--batch", type=int, default=24, help="requests kept in flight")
    ap.add_argument("--adapters", type=int, default=8, help="serving adapters (round robin over requests)")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--calib", type=int, default=32, help="calibration records of the new task")
    ap.add_argument("--calib-len", type=int, default=256)
    ap.add_argument("--window", type=float, default=6.0, help="seconds of the before / after windows")
    ap.add_argument("--warmup", type=float, default=8.0)
    ap.add_argument("--modes", default="process,thread-prio,thread", help="one onboarding each, in order")
    ap.add_argument("--budget", type=float, default=420.0, help="skip modes that would end past this (s)")
    ap.add_argument("--tmp", default=None, help="scratch directory (default: the system's)")
    ap.add_argument("--graphs", action="store_true", help="let the runner replay decode steps as CUDA graphs")
    ap.add_argument("--tag", default="")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    if "--tiny" in sys.argv:
        ap.set_defaults(batch=4, adapters=2, rank=4, max_tokens=16, calib=4, calib_len=32, window=1.0, warmup=1.0,
                        modes="thread,process", budget=600.0)  # fmt: skip
    args = ap.parse_args()
    args.device_ = torch.device(args.device)
    args.dtype_ = torch.float16 if args.device_.type == "cuda" else torch.float32
    args.shape = TINY if args.tiny else LLAMA2_7B
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
