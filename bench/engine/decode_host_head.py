"""The graph-replayed decode step's host code as it was before session 10 (commit d44f128), kept verbatim so that
decode_host.py can time it against today's on the same runner, graphs and GPU work, alternating step by step.

`head_execute(runner, step, host)` is ModelRunner._execute's path for a step the decode graphs take (_check,
can_run, check_slots, DecodeGraphs.run with its LoRA test, stage_step and Staging.send); `head_stages` runs the same
code with a clock read between the stages (the names of bench/kernels/s9b_parts.py's host breakdown). Both replay
the runner's own graphs (captured by today's code: the key and the buffer layout did not change).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from inlaid_worker.model import decode_graphs as dgm
from inlaid_worker.model.step_input import StepInput

_FIELDS = 6


def head_stage_step(host: torch.Tensor, b: int, width: int, step: StepInput) -> None:
    s, w = step.num_seqs, step.block_tables.shape[1]
    buf = host.numpy()
    f = buf[: _FIELDS * b].reshape(_FIELDS, b)
    ids = step.adapter_ids.numpy()
    f[0, :s] = step.token_ids.numpy()
    f[1, :s] = step.positions.numpy()
    f[2, :s] = step.slot_mapping.numpy()
    f[3, :s] = step.context_lens.numpy()
    np.maximum(ids, 0, out=f[4, :s], casting="unsafe")
    np.greater_equal(ids, 0, out=f[5, :s], casting="unsafe")
    if s < b:
        f[:, s:] = 0
        f[2, s:] = -1
    buf[_FIELDS * b :].reshape(b, width)[:s, :w] = step.block_tables.numpy()


def head_send(staging: Any, fill: Callable[[torch.Tensor], None]) -> None:
    if staging.sent is not None:
        staging.sent.synchronize()
    fill(staging.host)
    if staging.dev is staging.host:
        return
    staging.dev.copy_(staging.host, non_blocking=True)
    if staging.sent is None:
        staging.sent = dgm.new_event()
    staging.sent.record(torch.cuda.current_stream(staging.dev.device) if staging.dev.is_cuda else None)


def head_check(runner: Any, step: StepInput) -> None:
    t = step.num_tokens
    for name in ("positions", "adapter_ids", "slot_mapping"):
        if getattr(step, name).shape != (t,):
            raise ValueError(f"StepInput.{name} must have shape [{t}], got {tuple(getattr(step, name).shape)}")
    s = step.num_seqs
    if step.query_start_loc.shape != (s + 1,) or step.block_tables.shape[0] != s:
        raise ValueError(f"StepInput: query_start_loc must be [{s + 1}] and block_tables [{s}, *]")
    if s and int(step.query_start_loc[-1]) != t:
        raise ValueError(f"StepInput.query_start_loc ends at {int(step.query_start_loc[-1])}, not {t}")
    if t and int(step.slot_mapping.max()) >= runner.num_kv_blocks * runner.block_size:
        raise ValueError("StepInput.slot_mapping points past the KV cache")


def head_can_run(dg: Any, step: StepInput) -> bool:
    return (dgm.is_pure_decode(step) and dgm.bucket_for(step.num_seqs, dg._buckets) is not None
            and step.block_tables.shape[1] <= dg._w)  # fmt: skip


def head_check_slots(tier: Any, adapter_ids: torch.Tensor) -> None:
    slots = adapter_ids.tolist()
    live = set(tier.cache.slots.values())
    unknown = sorted({s for s in slots if s >= 0 and s not in live})
    if unknown:
        raise ValueError(f"StepInput.adapter_ids refers to unloaded adapter slot(s) {unknown}")


def head_key(dg: Any, step: StepInput) -> tuple[int, tuple[int, bool, int, str]]:
    """DecodeGraphs.run up to its key (the weights / pools check, the bucket, the LoRA test)."""
    weights = dg._weights
    version = dg._pools.version if dg._pools is not None else 0
    if weights is not dg._weights or version != dg._pools_version:
        raise RuntimeError("head replica: the graphs are stale (run today's code once first)")
    s = step.num_seqs
    b = dgm.bucket_for(s, dg._buckets)
    if b is None or not dgm.is_pure_decode(step):
        raise ValueError("not a decode step")
    ids = step.adapter_ids
    with_lora = dg._pools is not None and bool((ids >= 0).any())
    return b, (b, with_lora, dg.pdl_for(b, with_lora), dg.fusion_for(b))


def head_run(dg: Any, step: StepInput, host: bool) -> torch.Tensor:
    s = step.num_seqs
    b, key = head_key(dg, step)
    g = dg._graphs[key]  # captured by today's code (same key, same layout)
    head_send(g.staging, lambda buf: head_stage_step(buf, b, dg._w, step))
    g.graph.replay()
    if not host:
        return g.logits[:s]
    if g.host_logits is None:  # the pre-session-14 layout: one pinned [bucket, vocab] buffer per graph (today's run
        # takes rows of the runner's one shared host buffer, model.graph_logits; either reuses what the other made)
        g.host_logits = dgm.pinned_like(g.logits)
    out = g.host_logits[:s]
    out.copy_(g.logits[:s], non_blocking=True)
    dgm.sync_stream(dg._device)
    return out


@torch.inference_mode()
def head_execute(runner: Any, step: StepInput, host: bool = False) -> torch.Tensor:
    """ModelRunner._execute (before session 10) for a step the decode graphs take."""
    head_check(runner, step)
    runner._prompt_logprobs = None
    if step.prompt_rows is not None or not head_can_run(runner._graphs, step):
        raise ValueError("head replica: only graph-replayed decode steps")
    head_check_slots(runner._adapters, step.adapter_ids)
    return head_run(runner._graphs, step, host)


HEAD_STAGES = ("check", "can_run", "check_slots", "lora_any", "send", "replay", "d2h_enqueue", "sync")


@torch.inference_mode()
def head_stages(runner: Any, step: StepInput, clock: Callable[[], float], host: bool) -> list[float]:
    """head_execute with a clock read after each of HEAD_STAGES (d2h_enqueue and sync: host logits only)."""
    dg = runner._graphs
    t = [clock()]
    head_check(runner, step)
    t.append(clock())
    head_can_run(dg, step)
    t.append(clock())
    head_check_slots(runner._adapters, step.adapter_ids)
    t.append(clock())
    b, key = head_key(dg, step)
    t.append(clock())
    g = dg._graphs[key]
    head_send(g.staging, lambda buf: head_stage_step(buf, b, dg._w, step))
    t.append(clock())
    g.graph.replay()
    t.append(clock())
    if host:
        out = g.host_logits[: step.num_seqs]
        out.copy_(g.logits[: step.num_seqs], non_blocking=True)
        t.append(clock())
        dgm.sync_stream(dg._device)
        t.append(clock())
    return t


def now() -> float:
    return time.perf_counter()
