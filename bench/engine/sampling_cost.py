"""Per-step sampling cost: logits ready on the device -> token ids on the host, old host path against the batched
device path (engine/device_sampler.py), in one run (not a test):

    PYTHONPATH=workers:bench/engine python3 bench/engine/sampling_cost.py --out DIR [--device cuda] \
        [--batches 1,32,128] [--vocab 32000] [--reps 20] [--engine-step 7b:int4:32]

host: the logits' copy into a pinned buffer and one sync (what the decode graphs did before), then
sampler.sample_rows' loop over rows. device: sample_batch on the device logits (nucleus "sort", the GPU default,
and "topk", the CPU's), whose only copies to the host are the token ids (and overflow flags). Rows: all greedy, or
all temperature 0.8 / top_p 0.95 with seeds; logits "peaked" (the 0.95 nucleus within the first 256 tokens) or
"zipf" (rank^-1.1 with noise: the nucleus reaches past 256 tokens, so the host path sorts the whole row). The
configurations alternate rep by rep on the same logits. --engine-step SHAPE:QUANT:BATCH also times a random-weight
runner's graphed decode step plus sampling (execute + sample_rows against execute_device + sample_batch; 512
cached tokens per sequence). Writes sampling.json and sampling.md (command, date, device) under --out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from inlaid_worker.engine.device_sampler import sample_batch
from inlaid_worker.engine.sampler import make_generator, sample_rows
from inlaid_worker.engine.sampling_params import SamplingParams

GREEDY = SamplingParams(temperature=0.0)


def sampled(seed: int) -> SamplingParams:
    return SamplingParams(temperature=0.8, top_p=0.95, seed=seed)


def make_logits(kind: str, batch: int, vocab: int, gen: torch.Generator) -> torch.Tensor:
    return _logits(kind, batch, vocab, gen).half().float()  # fp16 values, as a half-precision LM head gives


def _logits(kind: str, batch: int, vocab: int, gen: torch.Generator) -> torch.Tensor:
    if kind == "peaked":  # a few likely tokens over a normal tail: the 0.95 nucleus is a handful of tokens
        x = torch.randn(batch, vocab, generator=gen) * 2.0
        top = torch.randint(0, vocab, (batch, 4), generator=gen)
        return x.scatter_add(1, top, torch.full((batch, 4), 14.0))
    ranks = torch.argsort(torch.rand(batch, vocab, generator=gen), dim=-1).float() + 1.0  # zipf, shuffled
    return -1.1 * torch.log(ranks) + 0.1 * torch.randn(batch, vocab, generator=gen)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fns: dict[str, Callable[[], list[int]]], device: torch.device, reps: int, warmup: int) -> dict[str, float]:
    """Median ms per call of each fn, alternating fn by fn each rep (a synchronised start: logits ready)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for rep in range(warmup + reps):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            if rep >= warmup:
                times[name].append(dt * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def host_path(logits: torch.Tensor, pinned: torch.Tensor, params: list[SamplingParams],
              gens: list[torch.Generator | None]) -> list[int]:  # fmt: skip
    if logits.device.type == "cuda":
        pinned.copy_(logits, non_blocking=True)
        torch.cuda.current_stream(logits.device).synchronize()
        host = pinned
    else:
        host = logits
    return sample_rows(host, params, gens).tokens


def sampling_grid(args: argparse.Namespace, device: torch.device) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    gen = torch.Generator().manual_seed(0)
    for batch in args.batches:
        for kind in ("peaked", "zipf"):
            logits = make_logits(kind, batch, args.vocab, gen).to(device)
            pinned = torch.empty(logits.shape, pin_memory=device.type == "cuda")
            for mode in ("greedy", "sampled"):
                if mode == "greedy" and kind == "zipf":
                    continue  # greedy cost does not depend on the distribution
                params = [GREEDY if mode == "greedy" else sampled(i) for i in range(batch)]

                def gens() -> list[torch.Generator | None]:
                    return [None if p.greedy else make_generator(i) for i, p in enumerate(params)]

                g_host, g_sort, g_topk = gens(), gens(), gens()
                fns: dict[str, Callable[[], list[int]]] = {
                    "host": lambda: host_path(logits, pinned, params, g_host),  # noqa: B023
                    "device_sort": lambda: sample_batch(logits, params, g_sort, nucleus="sort").tokens,  # noqa: B023
                    "device_topk": lambda: sample_batch(logits, params, g_topk, nucleus="topk").tokens,  # noqa: B023
                }
                if mode == "greedy":
                    del fns["device_topk"]  # no nucleus: the same work
                reps = args.reps if batch * (mode == "sampled") < 64 else max(5, args.reps // 3)
                ms = timed(fns, device, reps, args.warmup)
                # the same seeds: every path picks the same tokens (CPU exactly; GPU up to float rounding)
                check = {k: fn() for k, fn in fns.items()}
                agree = {k: sum(a == b for a, b in zip(check["host"], v, strict=True)) for k, v in check.items()}
                row = dict(batch=batch, vocab=args.vocab, logits=kind, rows=mode, reps=reps, ms=ms,
                           same_tokens_as_host=agree)  # fmt: skip
                rows.append(row)
                best = min(v for k, v in ms.items() if k != "host")
                print(f"b{batch:<4} {kind:<7} {mode:<8} host {ms['host']:8.3f} ms  "
                      + "  ".join(f"{k} {v:7.3f}" for k, v in ms.items() if k != "host")
                      + f"  x{ms['host'] / best:6.1f}  agree {agree}", flush=True)  # fmt: skip
    return rows


def engine_step(spec: str, device: torch.device, reps: int, warmup: int) -> dict[str, object]:
    """A random-weight runner's graphed decode step with sampling: execute + sample_rows (host) against
    execute_device + sample_batch (device), alternating, on the same cached context."""
    import tempfile

    from random_model import SHAPES, make_runner, write_config
    from steps import make_step

    shape_name, quant, batch_s = spec.split(":")
    batch, shape = int(batch_s), SHAPES[shape_name]
    blocks = batch * 33 + 8
    cfg = write_config(shape, Path(tempfile.mkdtemp()) / shape_name)
    t0 = time.perf_counter()
    runner = make_runner(cfg, quant, device, torch.float16, blocks, 16, 4, "triton")
    step = make_step(batch, 1, 512, [-1] * batch, shape.vocab, blocks)
    out: dict[str, object] = dict(shape=shape_name, quant=quant, batch=batch, context=512)
    for mode in ("greedy", "sampled"):
        params = [GREEDY if mode == "greedy" else sampled(i) for i in range(batch)]
        g1 = [None if p.greedy else make_generator(i) for i, p in enumerate(params)]
        g2 = [None if p.greedy else make_generator(i) for i, p in enumerate(params)]
        g3 = [None if p.greedy else make_generator(i) for i, p in enumerate(params)]
        fns: dict[str, Callable[[], list[int]]] = {
            "step_only": lambda: runner.execute(step).shape and [],
            "host": lambda: sample_rows(runner.execute(step), params, g1).tokens,  # noqa: B023
            "device": lambda: sample_batch(runner.execute_device(step), params, g2).tokens,  # noqa: B023
            "device_topk": lambda: sample_batch(runner.execute_device(step), params, g3, nucleus="topk").tokens,  # noqa: B023
        }
        if mode == "greedy":
            del fns["device_topk"]
        out[mode] = timed(fns, device, reps, warmup)
        # one step's logits, sampled by both paths (generators in step): a second execution of the step may round
        # otherwise (split-K reductions), which the comparison must not count
        logits = runner.execute_device(step).clone()
        host = sample_rows(logits.cpu(), params, g1).tokens
        check = {"device": sample_batch(logits, params, g2).tokens}
        if "device_topk" in fns:
            check["device_topk"] = sample_batch(logits, params, g3, nucleus="topk").tokens
        out[f"{mode}_same_tokens"] = {k: sum(a == b for a, b in zip(host, v, strict=True)) for k, v in check.items()}
        print(f"engine step {spec} {mode}: " + "  ".join(f"{k} {v:.3f} ms" for k, v in out[mode].items()),  # type: ignore[union-attr]
              flush=True)  # fmt: skip
    out["setup_s"] = round(time.perf_counter() - t0, 1)
    out["graph_captures"] = runner.graph_captures
    return out


def to_markdown(result: dict[str, object]) -> str:
    lines = [f"# Sampling cost per step, {result['date']}", "", f"Command: `{result['command']}`", "",
             f"Device: {result['device']}; torch {result['torch']}; CPU threads {result['threads']}.", "",
             "Logits ready on the device -> token ids on the host, median ms per step. host = pinned copy of the "
             "fp32 logits + sync + sampler.sample_rows; device_* = device_sampler.sample_batch (nucleus by full "
             "sort / by the top 256 first). Rows: all greedy, or all temperature 0.8 / top_p 0.95.", "",
             "| batch | logits | rows | host ms | device_sort ms | device_topk ms | host / best device | same tokens |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in result["grid"]:  # type: ignore[attr-defined]
        ms = r["ms"]
        best = min(v for k, v in ms.items() if k != "host")
        topk = f"{ms['device_topk']:.3f}" if "device_topk" in ms else "-"
        agree = r["same_tokens_as_host"]
        same = "/".join(str(agree[k]) for k in agree if k != "host") + f" of {r['batch']}"
        lines.append(f"| {r['batch']} | {r['logits']} | {r['rows']} | {ms['host']:.3f} | {ms['device_sort']:.3f} | "
                     f"{topk} | {ms['host'] / best:.1f}x | {same} |")  # fmt: skip
    eng = result.get("engine_step")
    if isinstance(eng, dict):
        lines += ["", f"Engine decode step with sampling ({eng['shape']} {eng['quant']}, batch {eng['batch']}, "
                  f"{eng['context']} cached tokens per sequence, CUDA graph replay), median ms:", "",
                  "| rows | step alone (execute) | execute + sample_rows | execute_device + sample_batch (sort) | "
                  "(topk) |", "|---|---|---|---|---|"]  # fmt: skip
        for mode in ("greedy", "sampled"):
            m = eng[mode]
            topk = f"{m['device_topk']:.3f}" if "device_topk" in m else "-"
            lines.append(f"| {mode} | {m['step_only']:.3f} | {m['host']:.3f} | {m['device']:.3f} | {topk} |")
        lines += ["", "Tokens equal to the host path's (one step's logits sampled by both, same seeds): "
                  + ", ".join(f"{m} {eng[f'{m}_same_tokens']} of {eng['batch']}" for m in ("greedy", "sampled"))
                  + f"; setup (weights, graph capture, first steps) {eng['setup_s']} s."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 32, 128])
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--engine-step", default="", help="SHAPE:QUANT:BATCH, e.g. 7b:int4:32 (CUDA only)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    result: dict[str, object] = dict(
        command="python3 " + " ".join(sys.argv), date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        device=name, torch=torch.__version__, threads=torch.get_num_threads(),
    )  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    result["grid"] = sampling_grid(args, device)
    (args.out / "sampling.json").write_text(json.dumps(result, indent=1))
    (args.out / "sampling.md").write_text(to_markdown(result))  # kept if the engine step runs out of time
    if args.engine_step and device.type == "cuda":
        result["engine_step"] = engine_step(args.engine_step, device, args.reps, args.warmup)
    (args.out / "sampling.json").write_text(json.dumps(result, indent=1))
    (args.out / "sampling.md").write_text(to_markdown(result))
    print(to_markdown(result))


if __name__ == "__main__":
    main()
