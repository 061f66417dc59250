"""Drives an engine through a script of requests added before given step() calls, collecting every request's
outputs (the engine tests that compare whole streams between engine variants)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from inlaid_worker.engine.engine import LLMEngine, RequestOutput
from inlaid_worker.engine.factory import EngineOptions, create_engine
from inlaid_worker.engine.sampling_params import SamplingParams

Script = dict[int, list[tuple[str, list[int], SamplingParams]]]  # call -> the requests added before it


def scripted(params: Sequence[SamplingParams], lengths: Sequence[int], calls: Sequence[int],
             prompt: Callable[[int, int], list[int]]) -> Script:  # fmt: skip
    """Request i ("r<i>", prompt(i, lengths[i]), params[i]) added before step() call calls[i]."""
    script: Script = {}
    for i, (n, p, at) in enumerate(zip(lengths, params, calls, strict=True)):
        script.setdefault(at, []).append((f"r{i}", prompt(i, n), p))
    return script


def make_engine(model: Path, mode: str) -> LLMEngine:
    """A small engine (4 sequences, 16 batched tokens) in mode sync, async or admit (async with admissions ahead)."""
    engine = create_engine(model, EngineOptions(kv_cache_bytes=1 << 20, max_num_seqs=4, max_num_batched_tokens=16))
    engine.async_scheduling = mode != "sync"
    engine.async_admit = mode == "admit"
    return engine


def run(engine: LLMEngine, script: Script) -> dict[str, list[RequestOutput]]:
    """Steps the engine until it has no work and every scripted call is past; the outputs by request id."""
    outs: dict[str, list[RequestOutput]] = {}
    calls = 0
    while engine.has_work or calls <= max(script):
        for rid, ids, params in script.get(calls, []):
            engine.add_request(rid, ids, params, "")
        for o in engine.step():
            outs.setdefault(o.request_id, []).append(o)
        calls += 1
        assert calls < 500
    return outs
