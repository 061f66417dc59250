"""Onboarding benchmark (in-process worker, CPU): time per stage of adding one task to an MLGPTQ checkpoint
while serving, and the decode throughput of a concurrent load during re-quantization vs. without it.

  .venv/bin/python bench/onboard/onboard_bench.py --model tiny|smollm2 [--seconds 8] [--out bench/results/x.json]

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
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "workers" / "tests"))

from inlaid_worker.config import WorkerConfig  # noqa: E402
from inlaid_worker.engine.engine import RequestOutput  # noqa: E402
from inlaid_worker.engine.sampling_params import SamplingParams  # noqa: E402
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


def setup(kind: str, root: Path, n_calib: int) -> tuple[Path, dict[str, Path], dict[str, Path]]:
    if kind == "tiny":
        from factories import make_random_adapter, make_tiny_llama

        base = make_tiny_llama(root / "base", layers=4, hidden=128, intermediate=256, max_positions=1024)
        targets = ["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]
        adapters = {n: make_random_adapter(root / n, base, rank=8, alpha=16, targets=targets, seed=i) for i, n in enumerate("abc")}
    else:
        from inlaid_worker.model.smollm2 import ensure_smollm2

        base = ensure_smollm2()
        adapters = {n: REPO / "assets" / "adapters" / d for n, d in zip("abc", ["boolq", "csqa", "asdiv"], strict=True)}
    calibs = {n: calib_file(root / f"{n}.jsonl", n, n_calib) for n in "abc"}
    return base, adapters, calibs


def run_load(loop: EngineLoop, seconds: float, streams: int, until: object | None = None) -> dict[str, float]:
    """Keeps `streams` requests running; returns tokens/s over the window (window ends at `until` when given)."""
    sid, outbox = loop.open_session()
    sp = SamplingParams(max_tokens=32, temperature=0.0, ignore_eos=True)
    live, rid, tokens, errors = 0, 0, 0, 0
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
    loop.close_session(sid, abort=True)
    time.sleep(0.2)
    return {"seconds": dt, "tokens": tokens, "tokens_per_s": tokens / dt, "errors": errors}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--calib", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="onboard-bench-"))
    base, adapters, calibs = setup(args.model, root, args.calib)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    t0 = time.perf_counter()
    tasks = [TaskData(n, adapters[n], load_calibration(calibs[n], tok, 256)) for n in "ab"]
    quantize_checkpoint(base, root / "ckpt", "mlgptq", QuantSpec(bits=4, group_size=32 if args.model == "tiny" else 64), tasks)
    initial_s = time.perf_counter() - t0
    cfg = WorkerConfig(model=str(base), port=0, kv_cache_bytes=64 << 20, checkpoint=str(root / "ckpt"))
    engine = build_engine(cfg, base)
    loop = EngineLoop(engine)
    loop.start()
    manager = OnboardManager(loop.call, engine.runner, versions_of(cfg), base, engine.tokenizer.hf)
    baseline = run_load(loop, args.seconds, args.streams)
    t_submit = time.perf_counter()
    job = manager.submit([AddRequest("c", str(adapters["c"]), str(calibs["c"]))], [])
    submit_s = time.perf_counter() - t_submit
    during = run_load(loop, 0, args.streams, until=job)
    total_s = time.perf_counter() - t_submit
    events = job.events
    layers = [e for e in events if e.stage == "layer"]
    after = run_load(loop, args.seconds, args.streams)
    loop.stop()
    result = {
        "model": args.model, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "torch_threads": args.threads, "streams": args.streams, "calib_records": args.calib,
        "final": events[-1].stage, "message": events[-1].message, "checkpoint_version": events[-1].checkpoint_version,
        "initial_quantize_s": initial_s, "submit_s": submit_s, "post_to_done_s": total_s,
        "layers": len(layers), "hessian_gptq_s_total": sum(e.hessian_seconds for e in layers),
        "swap_s_total": sum(e.swap_seconds for e in layers), "swap_s_max": max((e.swap_seconds for e in layers), default=0.0),
        "throughput_baseline": baseline, "throughput_during": during, "throughput_after": after,
        "drop_pct": 100.0 * (1 - during["tokens_per_s"] / baseline["tokens_per_s"]),
    }
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
