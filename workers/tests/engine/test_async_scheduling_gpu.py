"""Async scheduling on the GPU fast path (triton backend, CUDA graphs for decode): the steps launched ahead take their
input tokens from the previous step's device tokens (model.token_feed, written into the graph's static buffer), and
every request's outputs equal the synchronous engine's: greedy and seeded rows, a stop token, max_tokens, stop strings,
an adapter row, a request that joins mid-decode and an abort while its token is in flight; in every decode-graph input
mode (model.decode_graphs GRAPH_INPUT: 0 the fed ids written before the replay, 1 gathered by the graph's first
kernel, 2 that kernel also reading the pinned staging buffer).
Skipped without CUDA (the CPU tests cover the torch backend's eager path)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from engine_helpers import engine_for
from factories import make_random_adapter, make_tiny_llama
from inlaid_worker.engine.engine import LLMEngine, RequestOutput
from inlaid_worker.engine.sampling_params import SamplingParams

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def make(root: Path, async_on: bool) -> LLMEngine:
    model = root / "model"
    if not model.exists():
        make_tiny_llama(model)
        make_random_adapter(root / "qv", model, rank=4, alpha=8, targets=["q_proj", "v_proj"], seed=3)
    engine = engine_for(model, {"qv": root / "qv"}, device="cuda", dtype="float32",  # type: ignore[arg-type]
                        kv_cache_bytes=1 << 20, max_num_seqs=8)  # fmt: skip
    engine.async_scheduling = async_on
    return engine


def run(engine: LLMEngine) -> dict[str, list[dict[str, object]]]:
    enc = engine.tokenizer.encode_prompt
    reqs = {
        "greedy": ("The capital of France is", "", SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)),
        "seeded": (
            "Hello, world!",
            "",
            SamplingParams(temperature=0.8, seed=7, top_p=0.9, max_tokens=30, ignore_eos=True),
        ),  # fmt: skip
        "adapter": ("def add(a, b):", "qv", SamplingParams(temperature=0, max_tokens=25, ignore_eos=True)),
        "stoptok": ("Numbers: 1 2 3", "", SamplingParams(temperature=0, max_tokens=40, stop_token_ids=(40, 41, 42))),
        "stopstr": ("Unicode: café", "", SamplingParams(temperature=0, max_tokens=40, ignore_eos=True, stop=("e",))),
    }
    outs: dict[str, list[RequestOutput]] = {}
    for rid in ("greedy", "seeded", "adapter"):
        prompt, model, params = reqs[rid]
        engine.add_request(rid, enc(prompt), params, model)
    calls = 0
    while engine.has_work or calls < 12:
        if calls == 5:
            prefill_runs_before = engine.runner.prefill_graph_stats["runs"]  # the first, synchronous prefill's
            for rid in ("stoptok", "stopstr"):
                prompt, model, params = reqs[rid]
                engine.add_request(rid, enc(prompt), params, model)
            engine.add_request("aborted", enc("Hello"), SamplingParams(temperature=0, max_tokens=60, ignore_eos=True))
        if calls == 11:
            assert engine.abort_request("aborted")
        for o in engine.step():
            outs.setdefault(o.request_id, []).append(o)
        calls += 1
    assert engine.block_manager.num_free_blocks == engine.limits.num_kv_blocks
    engine.prefill_runs_after_joins = engine.runner.prefill_graph_stats["runs"] - prefill_runs_before  # type: ignore[attr-defined]
    return {rid: [vars(o) for o in seq] for rid, seq in outs.items()}


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_async_outputs_on_the_gpu_equal_sync(tmp_path: Path, mode: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INLAID_GRAPH_INPUT", str(mode))  # read when the runner's decode graphs are made
    sync_engine = make(tmp_path, False)
    async_engine = make(tmp_path, True)
    assert async_engine.runner.backend == "triton" and async_engine.runner.graph_captures == 0
    expected = run(sync_engine)
    got = run(async_engine)
    assert async_engine.num_async_steps >= 20 and async_engine.runner.graph_captures > 0
    keys = list(async_engine.runner._graphs._graphs)  # type: ignore[union-attr]  # read-only
    from inlaid_worker.model.decode_graphs import IN_GRAPH_COPY_MAX_BUCKET

    def runs(bucket: int) -> int:  # mode 2 only up to IN_GRAPH_COPY_MAX_BUCKET (else 0); 0-1 everywhere here
        return mode if mode < 2 or bucket <= IN_GRAPH_COPY_MAX_BUCKET else 0

    assert keys and all(k[4] == runs(k[0]) for k in keys), keys
    assert any(k[4] == mode for k in keys), keys  # the mode ran (buckets 1-4 are used)
    # the requests joining at call 5 were admitted by steps launched ahead (mixed steps with a token feed, through
    # the prefill graphs: model.prefill_graphs writes the fed ids into the bucket's device buffer)
    assert async_engine.num_async_admit_steps > 0
    assert async_engine.prefill_runs_after_joins > 0  # type: ignore[attr-defined]  # the joins' prefills, in graphs
    assert got == expected
