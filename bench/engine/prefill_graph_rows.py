"""Steps with prefill rows timed with the runner's prefill CUDA graphs off and on (model.prefill_graphs), on one
runner, back to back: a mixed step (--prefill-graph-decode decode rows at --context plus one 128-token chunk)
and a lone chunk of each --prefill-graph-chunks size (128, 512 tokens), base only, then with rank-16 q/k/v/o
adapters (`slots` cycled over the decode rows; the chunk takes the last). Rows of kind "prefill-graphs": step_ms (median wall time of
runner.execute) and nonfinite (logits rows with an inf or NaN: a random model whose activations overflow fp16
makes every comparison void), and with graphs on: capture_ms (the bucket's first call: warm-up run, capture and
replay, untimed otherwise), host_us (host time of a replayed step up to the replay call's return),
max_rel_err (the graph step's logits vs the eager step's, same inputs, over the rows finite in both; NaN when
none is) and graphed (false: the runner's policy ran the step eagerly, e.g. a bucket over
INLAID_PREFILL_GRAPH_MAX_TOKENS). The runner's prefill-graph setting is restored at the end."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from inlaid_worker.model.step_input import StepInput
from steps import make_seqs_step, sync, timed


def cases(chunks: list[int], decode: int, context: int, slots: list[int], vocab: int, pool: int
          ) -> list[tuple[str, StepInput]]:  # fmt: skip
    """(name, step) pairs: base-only steps, then the same layouts with adapters when `slots` is not empty."""
    out = []
    for lora in ([-1], slots) if slots else ([-1],):
        tag = "base" if lora == [-1] else f"{len(lora)}lora"
        seqs = [(1, context, lora[i % len(lora)]) for i in range(decode)] + [(128, 128, lora[-1])]
        out.append((f"mixed-{decode}x1+128-{tag}", make_seqs_step(seqs, vocab, pool)))
        for n in chunks:
            out.append((f"prefill-{n}-{tag}", make_seqs_step([(n, n, lora[0])], vocab, pool)))
    return out


def nonfinite_rows(logits: torch.Tensor) -> int:
    return int((~torch.isfinite(logits).all(dim=-1)).sum())


def max_rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest per-row relative error of out vs ref over the rows finite in both (NaN when none is)."""
    ok = torch.isfinite(out).all(dim=-1) & torch.isfinite(ref).all(dim=-1)
    if not bool(ok.any()):
        return float("nan")
    a, b = out[ok].double(), ref[ok].double()
    return float(((a - b).norm(dim=-1) / b.norm(dim=-1).clamp_min(1e-30)).max())


def prefill_graph_rows(runner, steps: list[tuple[str, StepInput]], modes: list[int], device: torch.device,
                       warmup: int, reps: int, log: Callable[[dict], None], allows: Callable[[], bool],
                       extra: dict) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    before = runner.prefill_graphs
    for name, step in steps:
        eager_out = None
        for mode in modes:
            if not allows():
                runner.prefill_graphs = before
                return
            runner.prefill_graphs = bool(mode)
            first_ms = None
            if mode:  # the bucket's first call captures it
                sync(device)
                t0 = time.perf_counter()
                runner.execute(step)
                sync(device)
                first_ms = (time.perf_counter() - t0) * 1e3
            t = timed(lambda: runner.execute(step), device, max(1, warmup), reps)
            runs = runner.prefill_graph_stats["runs"]
            out = runner.execute(step).clone()
            row = dict(kind="prefill-graphs", case=name, prefill_graphs=mode, tokens=step.num_tokens,
                       seqs=step.num_seqs, step_ms=t * 1e3, nonfinite=nonfinite_rows(out), **extra)  # fmt: skip
            if mode:
                stats = runner.prefill_graph_stats  # runs: padded steps so far (0: this step fell back to eager)
                row.update(capture_ms=first_ms, host_us=stats["last_host_us"], captures=stats["captures"],
                           padded_runs=stats["runs"], graphed=stats["runs"] > runs)  # fmt: skip
            if eager_out is not None and mode:
                row["max_rel_err"] = max_rel_err(out, eager_out)
            if not mode:
                eager_out = out
            log(row)
    runner.prefill_graphs = before
