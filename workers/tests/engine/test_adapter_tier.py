"""Many registered adapters, few device slots: on-demand loading with LRU eviction serves the same tokens as
keeping every adapter resident, and never evicts the adapter of a running sequence."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_helpers import tokens
from factories import make_lora_adapter, make_tiny_llama
from inlaid_worker.engine.engine import LLMEngine
from inlaid_worker.engine.factory import EngineOptions, create_engine
from inlaid_worker.engine.sampling_params import SamplingParams
from inlaid_worker.server.metrics import WorkerMetrics

NUM_ADAPTERS = 200
SLOTS = 4
SHAPES = [(2, ("q_proj", "v_proj")), (4, ("gate_proj", "up_proj", "down_proj")), (8, ("k_proj", "o_proj", "up_proj"))]
GREEDY = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tier") / "model")


def engine_with_adapters(model_dir: Path, slots: int) -> LLMEngine:
    engine = create_engine(model_dir, EngineOptions(kv_cache_bytes=1 << 20, max_num_seqs=6, max_gpu_adapters=slots))
    config = engine.runner.config  # type: ignore[attr-defined]
    for i in range(NUM_ADAPTERS):
        rank, targets = SHAPES[i % len(SHAPES)]
        adapter = make_lora_adapter(config, rank=rank, targets=targets, seed=i)
        engine.add_adapter(f"task-{i}", adapter, rank, targets)
    return engine


def serve(engine: LLMEngine, check_residency: bool) -> dict[str, list[int]]:
    """Two waves of requests on 11 distinct adapters (some repeated) and the base model, interleaved."""
    models = ["task-7", "", "task-150", "task-7", "task-3", "task-42", "task-199", "task-3",
              "task-0", "task-88", "", "task-150", "task-121", "task-64", "task-5", "task-42"]  # fmt: skip
    prompts = [[3 + (7 * i + j) % 300 for j in range(5 + i % 4)] for i in range(len(models))]
    outs: dict[str, list[int]] = {}

    def add(ids: range) -> None:
        for i in ids:
            engine.add_request(str(i), prompts[i], GREEDY, models[i])

    add(range(8))
    steps = 0
    while engine.has_work:
        if steps == 3:
            add(range(8, 16))
        for out in engine.step():
            outs.setdefault(out.request_id, []).append(out)  # type: ignore[arg-type]
        steps += 1
        if check_residency:
            resident = engine.runner.adapter_slots  # type: ignore[attr-defined]
            assert len(resident) <= SLOTS
            for seq in engine.scheduler.running:  # every running adapter stays in its slot
                if seq.adapter is not None:
                    assert resident.get(seq.adapter) == seq.adapter_slot, (seq.request_id, seq.adapter)
    return {rid: tokens(o) for rid, o in outs.items()}  # type: ignore[arg-type]


def test_few_slots_serve_the_same_tokens_as_all_resident(model_dir: Path) -> None:
    tiered = engine_with_adapters(model_dir, SLOTS)
    everything = engine_with_adapters(model_dir, NUM_ADAPTERS)
    got = serve(tiered, check_residency=True)
    want = serve(everything, check_residency=False)
    assert got == want
    assert got["0"] != got["1"] or got["2"] != got["1"]  # adapters change the output
    stats = tiered.adapter_stats()
    assert (stats.registered, stats.capacity) == (NUM_ADAPTERS, SLOTS) and stats.resident <= SLOTS
    assert stats.misses >= 11 - SLOTS and stats.evictions > 0 and 0 < stats.hit_rate < 1
    text = WorkerMetrics().render(tiered.state(), 0)  # exposed on the worker's /metrics
    assert f"inlaid_worker_adapters_registered {NUM_ADAPTERS}" in text
    assert f"inlaid_worker_adapter_misses_total {stats.misses}" in text and "inlaid_worker_adapter_slots 4" in text
    all_stats = everything.adapter_stats()
    assert all_stats.evictions == 0 and all_stats.misses == 0  # registered while slots were free
