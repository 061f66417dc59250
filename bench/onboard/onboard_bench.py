"""Onboarding benchmark (in-process worker, CPU): time per stage of adding one task to an MLGPTQ checkpoint
while serving, and the decode throughput of a concurrent load during re-quantization vs. without it.

  .venv/bin/python bench/onboard/onboard_bench.py --model tiny|smollm2 [--seconds 8] [--modes thread,process]
      [--layers N] [--out bench/results/x.json]

One onboarding per entry of --modes (thread | process[:max_share[:nice]]), each after its own baseline window,
so "before" (in-thread quantizer) and "after" (child process) are compared in the same run on the same load.

Stages: tokenize + validate (submit), per layer: fresh Hessians + max-merge + GPTQ ("hessian"), dequantize +
wait for a step boundary + swap ("swap"), then publish. Throughput: greedy decode of `--streams` concurrent
requests, tokens/s over a fixed window; "during" = the window of the re-quantization itself.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "workers" / "tests"))

from inlaid_worker.config import WorkerConfig  # noqa: E402
from inlaid_worker.engine.engine import RequestOutput  # noqa: E402
from inlaid_worker.engine.sampling_params import SamplingParams  # noqa: E402
from inlaid_worker.onboard.background import BackgroundLimits  # noqa: E402
from inlaid_worker.onboard.manager import AddRequest, OnboardManager  # noqa: E402
from inlaid_worker.onboard.setup import versions_of  # noqa: E402
from inlaid_worker.quant import QuantSpec, TaskData, quantize_checkpoint  # noqa: E402
from inlaid_worker.quant.calib import load_calibration  # noqa: E402
from inlaid_worker.server.app import build_engine  # noqa: E402
from inlaid_worker.server.engine_loop import EngineLoop  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def calib_file(path: Path, task: str, n: int) -> Path:
    lines = [{"text": f"{task} example {i}: The quick brown fox jumps over the lazy dog {i} times. " * 3} for i in range(n)]
    path.write_text("\n".join(json.dumps(x) for x in lines))
    return path


TASKS = "abcdefg"
SHIPPED = ["boolq", "csqa", "asdiv", "xsum", "nq_open", "en_es", "humaneval"]


def truncated(model_dir: Path, out: Path, layers: int) -> Path:
    """A copy of `model_dir` keeping its first `layers` decoder layers (same per-layer shapes and cost)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.model.layers = model.model.layers[:layers]
    model.config.num_hidden_layers = layers
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    return out


def truncated_adapter(src: Path, out: Path, layers: int) -> Path:
    """A copy of the PEFT adapter at `src` without the tensors of layers >= `layers`."""
    import re

    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    (out / "adapter_config.json").write_text((src / "adapter_config.json").read_text())
    tensors = load_file(str(src / "adapter_model.safetensors"))
    keep = {k: v for k, v in tensors.items() if int(re.search(r"layers\.(\d+)\.", k)[1]) < layers}  # type: ignore[index]
    save_file(keep, str(out / "adapter_model.safetensors"))
    return out


def setup(kind: str, root: Path, n_calib: int, n_tasks: int, layers: int) -> tuple[Path, dict[str, Path], dict[str, Path]]:
    names = TASKS[:n_tasks]
    if kind == "tiny":
        from factories import make_random_adapter, make_tiny_llama

        base = make_tiny_llama(root / "base", layers=4, hidden=128, intermediate=256, max_positions=1024)
        targets = ["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]
        adapters = {n: make_random_adapter(root / n, base, rank=8, alpha=16, targets=targets, seed=i) for i, n in enumerate(names)}
    else:
        from inlaid_worker.model.smollm2 import ensure_smollm2

        base = ensure_smollm2()
        if layers:
            base = truncated(base, root / base.name, layers)  # same directory name: adapters' base check holds
        adapters = {n: REPO / "assets" / "adapters" / d for n, d in zip(names, SHIPPED, strict=False)}
        if layers:
            adapters = {n: truncated_adapter(p, root / "adapters" / p.name, layers) for n, p in adapters.items()}
    calibs = {n: calib_file(root / f"{n}.jsonl", n, n_calib) for n in names}
    return base, adapters, calibs


class StepProbe:
    """Wraps engine.step to sum wall and engine-thread CPU seconds per window: wall >> CPU means the loop waited
    (for the GIL or for a core)."""

    def __init__(self, engine: object) -> None:
        self._step = engine.step  # type: ignore[attr-defined]
        engine.step = self  # type: ignore[attr-defined]
        self.reset()

    def reset(self) -> None:
        self.steps, self.wall, self.cpu = 0, 0.0, 0.0

    def __call__(self) -> object:
        w0, c0 = time.perf_counter(), time.thread_time()
        out = self._step()
        self.wall += time.perf_counter() - w0
        self.cpu += time.thread_time() - c0
        self.steps += 1
        return out

    def summary(self) -> dict[str, float]:
        n = max(self.steps, 1)
        return {"steps": self.steps, "step_wall_ms": 1e3 * self.wall / n, "step_cpu_ms": 1e3 * self.cpu / n}


def run_load(loop: EngineLoop, seconds: float, streams: int, until: object | None = None,
             probe: StepProbe | None = None) -> dict[str, float]:
    """Keeps `streams` requests running; returns tokens/s over the window (window ends at `until` when given)."""
    sid, outbox = loop.open_session()
    sp = SamplingParams(max_tokens=32, temperature=0.0, ignore_eos=True)
    live, rid, tokens, errors = 0, 0, 0, 0
    if probe is not None:
        probe.reset()
    t0 = time.perf_counter()
    while True:
        while live < streams:
            loop.admit(sid, f"q{rid}", [5, 6, 7, 8, 9, 10], sp, "")
            rid, live = rid + 1, live + 1
        ev = outbox.get()
        if isinstance(ev, RequestOutput):
            tokens += len(ev.token_ids)
            live -= ev.finish_reason is not None
        elif ev is not None and not hasattr(ev, "state"):
            errors += 1
        done = until.finished if until is not None else time.perf_counter() - t0 >= seconds  # type: ignore[attr-defined]
        if done:
            break
    dt = time.perf_counter() - t0
    out = {"seconds": dt, "tokens": tokens, "tokens_per_s": tokens / dt, "errors": errors}
    if probe is not None:
        out.update(probe.summary())
    loop.close_session(sid, abort=True)
    time.sleep(0.2)
    return out


def parse_mode(text: str) -> BackgroundLimits:
    """"thread", "process", "process:0.5" (max_share), "process:1:0" (max_share, nice)."""
    parts = text.split(":")
    share = float(parts[1]) if len(parts) > 1 else 1.0
    nice = int(parts[2]) if len(parts) > 2 else 0
    return BackgroundLimits(mode=parts[0], max_share=share, nice=nice)  # type: ignore[arg-type]


def onboard_once(manager: OnboardManager, loop: EngineLoop, probe: StepProbe, name: str, adapter: Path,
                 calib: Path, args: argparse.Namespace) -> dict[str, object]:
    """A baseline window, then add `name` under the load; the stage times and both throughputs."""
    baseline = run_load(loop, args.seconds, args.streams, probe=probe)
    t_submit = time.perf_counter()
    job = manager.submit([AddRequest(name, str(adapter), str(calib))], [])
    submit_s = time.perf_counter() - t_submit
    during = run_load(loop, 0, args.streams, until=job, probe=probe)
    events = job.events
    layers = [e for e in events if e.stage == "layer"]
    first_layer_s = min((e.hessian_seconds for e in layers), default=0.0)
    return {
        "mode": asdict(manager.background),
        "task": name, "final": events[-1].stage, "message": events[-1].message,
        "checkpoint_version": events[-1].checkpoint_version, "submit_s": submit_s,
        "post_to_done_s": time.perf_counter() - t_submit, "layers": len(layers),
        "hessian_gptq_s_total": sum(e.hessian_seconds for e in layers), "hessian_gptq_s_min_layer": first_layer_s,
        "swap_s_total": sum(e.swap_seconds for e in layers),
        "swap_s_max": max((e.swap_seconds for e in layers), default=0.0),
        "throughput_baseline": baseline, "throughput_during": during,
        "drop_pct": 100.0 * (1 - during["tokens_per_s"] / baseline["tokens_per_s"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--calib", type=int, default=8)
    ap.add_argument("--calib-len", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--layers", type=int, default=0, help="smollm2: keep only the first N layers (0 = all 30)")
    ap.add_argument("--modes", default="thread,process", help="one onboarding per mode, in this order")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    modes = [parse_mode(m) for m in args.modes.split(",")]
    root = Path(tempfile.mkdtemp(prefix="onboard-bench-"))
    base, adapters, calibs = setup(args.model, root, args.calib, 2 + len(modes), args.layers)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    t0 = time.perf_counter()
    tasks = [TaskData(n, adapters[n], load_calibration(calibs[n], tok, args.calib_len)) for n in TASKS[:2]]
    quantize_checkpoint(base, root / "ckpt", "mlgptq", QuantSpec(bits=4, group_size=32 if args.model == "tiny" else 64), tasks)
    initial_s = time.perf_counter() - t0
    cfg = WorkerConfig(model=str(base), port=0, kv_cache_bytes=64 << 20, checkpoint=str(root / "ckpt"))
    engine = build_engine(cfg, base)
    probe = StepProbe(engine)
    loop = EngineLoop(engine)
    loop.start()
    manager = OnboardManager(loop.call, engine.runner, versions_of(cfg), base, engine.tokenizer.hf,
                             calib_max_len=args.calib_len)
    runs = []
    for i, limits in enumerate(modes):
        manager.background = limits
        name = TASKS[2 + i]
        runs.append(onboard_once(manager, loop, probe, name, adapters[name], calibs[name], args))
        print(json.dumps(runs[-1]), flush=True)
    after = run_load(loop, args.seconds, args.streams, probe=probe)
    loop.stop()
    result = {
        "model": args.model, "layers": engine.runner.config.num_layers if hasattr(engine.runner.config, "num_layers") else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "torch_threads": args.threads, "streams": args.streams, "calib_records": args.calib, "calib_len": args.calib_len,
        "initial_quantize_s": initial_s, "runs": runs, "throughput_after": after,
    }
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
