"""Steps with prefill rows timed with the runner's prefill CUDA graphs off and on (model.prefill_graphs), on one
runner, back to back: a mixed step (--prefill-graph-decode decode rows at --context plus one 128-token chunk)
and a lone chunk of each --prefill-graph-chunks size (128, 512 tokens), base only, then with rank-16 q/k/v/o
adapters (`slots` cycled over the decode rows; the chunk takes the last). Rows of kind "prefill-graphs": step_ms (median wall time of
runner.execute), and with graphs on: host_us (host time of a replayed step up to the replay call's return) and
max_rel_err (the graph step's logits vs the eager step's, same inputs). The first graphed call of a bucket
captures it (untimed warm-up)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from inlaid_worker.model.step_input import StepInput
from steps import make_seqs_step, timed


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


def prefill_graph_rows(runner, steps: list[tuple[str, StepInput]], modes: list[int], device: torch.device,
                       warmup: int, reps: int, log: Callable[[dict], None], allows: Callable[[], bool],
                       extra: dict) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    for name, step in steps:
        eager_out = None
        for mode in modes:
            if not allows():
                return
            runner.prefill_graphs = bool(mode)
            t = timed(lambda: runner.execute(step), device, max(1, warmup), reps)
            out = runner.execute(step).clone()
            row = dict(kind="prefill-graphs", case=name, prefill_graphs=mode, tokens=step.num_tokens,
                       seqs=step.num_seqs, step_ms=t * 1e3, **extra)  # fmt: skip
            if mode:
                stats = runner.prefill_graph_stats  # runs: padded steps so far (0: this step fell back to eager)
                row.update(host_us=stats["last_host_us"], captures=stats["captures"], padded_runs=stats["runs"])
            if eager_out is not None and mode:
                row["max_rel_err"] = float(((out - eager_out).norm(dim=-1) / eager_out.norm(dim=-1)).max())
            if not mode:
                eager_out = out
            log(row)
    runner.prefill_graphs = False
