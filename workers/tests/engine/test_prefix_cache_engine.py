"""Prefix caching on a tiny random Llama: greedy outputs with caching on equal caching off (shared prefixes,
n > 1 copies, adapters, a base swap through the onboarding swap path, preemption), and the KV blocks all come
back."""

from __future__ import annotations

import random
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_helpers import drain, engine_for, tokens
from factories import make_random_adapter, make_tiny_llama
from inlaid_worker.engine.engine import LLMEngine
from inlaid_worker.engine.sampling_params import SamplingParams
from inlaid_worker.model.weights import LayerWeights
from inlaid_worker.onboard.manager import OnboardManager

GREEDY = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)
_rng = random.Random(3)
SYSTEM = [_rng.randrange(3, 320) for _ in range(45)]  # a shared "system prompt": 2 full blocks + 13 tokens
SUFFIXES = [[_rng.randrange(3, 320) for _ in range(n)] for n in (3, 9, 20, 1)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("tiny-prefix")
    model = make_tiny_llama(root / "model")
    adapters = {
        "kv": make_random_adapter(root / "kv", model, rank=4, alpha=8, targets=["k_proj", "v_proj"], seed=11),
        "kv2": make_random_adapter(root / "kv2", model, rank=4, alpha=8, targets=["k_proj", "v_proj"], seed=12),
        "mlp": make_random_adapter(root / "mlp", model, rank=8, alpha=8, targets=["gate_proj", "down_proj"], seed=2),
    }
    return model, adapters


def make(tiny: tuple[Path, dict[str, Path]], caching: bool, **options: Any) -> LLMEngine:
    model, adapters = tiny
    options.setdefault("kv_cache_bytes", 1 << 20)
    return engine_for(model, {k: adapters[k] for k in ("kv", "mlp")}, enable_prefix_caching=caching, **options)


def run(engine: LLMEngine, requests: list[tuple[str, list[int], str]], params: SamplingParams = GREEDY) -> dict:
    for rid, prompt, model in requests:
        engine.add_request(rid, prompt, params, model)
    outs = drain(engine)
    assert engine.block_manager.num_free_blocks == engine.limits.num_kv_blocks  # every path gives blocks back
    return {rid: tokens(outs[rid]) for rid, _, _ in requests}


def hits(engine: LLMEngine) -> int:
    return engine.prefix_cache_stats().hit_tokens


def test_shared_prefixes_give_the_same_greedy_outputs(tiny: tuple[Path, dict[str, Path]]) -> None:
    on, off = make(tiny, True, max_num_batched_tokens=16), make(tiny, False, max_num_batched_tokens=16)
    one_by_one = [(f"s{i}", SYSTEM + s, "") for i, s in enumerate(SUFFIXES)]
    at_once = [(f"c{i}", SYSTEM + s, "") for i, s in enumerate(SUFFIXES)]
    n_copies = [(f"n{i}", SYSTEM + SUFFIXES[1], "") for i in range(3)]  # `n` = 3 choices: one prompt 3 times
    expected = {}
    for batch in [[r] for r in one_by_one] + [at_once, n_copies]:
        expected.update(run(off, batch))
    got = {}
    for batch in [[r] for r in one_by_one]:
        got.update(run(on, batch))
    assert hits(on) == 3 * 32  # each later prompt took the 2 full system blocks (16 tokens each)
    got.update(run(on, at_once))
    got.update(run(on, n_copies))
    assert got == expected
    stats = on.prefix_cache_stats()
    assert stats.hit_tokens > 3 * 32 + 4 * 32 and 0 < stats.hit_rate < 1
    assert off.prefix_cache_stats().hit_tokens == 0 and not off.prefix_cache_stats().enabled


def test_n_copies_admitted_together_compute_the_prompt_once(tiny: tuple[Path, dict[str, Path]]) -> None:
    on = make(tiny, True, max_num_batched_tokens=32)
    prompt = SYSTEM + SUFFIXES[2]  # 65 tokens: 4 full blocks, computed over 3 steps
    computed = 0
    observed_schedule = on.scheduler.schedule

    def schedule() -> Any:
        nonlocal computed
        out = observed_schedule()
        computed += sum(c.num_tokens for c in out.chunks if c.start < len(prompt))
        return out

    on.scheduler.schedule = schedule  # type: ignore[method-assign]
    got = run(on, [(f"n{i}", prompt, "") for i in range(4)])
    assert len(set(map(tuple, got.values()))) == 1
    assert computed == len(prompt) + 3 * (len(prompt) - 64)  # the others computed only their last token
    assert got["n0"] == run(make(tiny, False), [("x", prompt, "")])["x"]


def test_outputs_report_the_prompt_tokens_taken_from_the_cache(tiny: tuple[Path, dict[str, Path]]) -> None:
    on, off = make(tiny, True, max_num_batched_tokens=32), make(tiny, False, max_num_batched_tokens=32)
    prompt = SYSTEM + SUFFIXES[2]  # 65 tokens: 4 full blocks
    for engine in (on, off):
        for i in range(3):
            engine.add_request(f"n{i}", prompt, GREEDY, "")
    cached = {rid: {o.cached_tokens for o in outs} for rid, outs in drain(on).items()}
    assert cached == {"n0": {0}, "n1": {64}, "n2": {64}}  # the first computes the prompt, the others reuse it
    assert all(o.cached_tokens == 0 for outs in drain(off).values() for o in outs)
    # a resumed run's generated tail (the last 20 "prompt" tokens) is not prompt: only the first 45 count
    on.add_request("resumed", prompt, GREEDY, "", resumed_output_tokens=20)
    assert {o.cached_tokens for o in drain(on)["resumed"]} == {45}


def test_adapters_never_share_kv_with_the_base_or_each_other(tiny: tuple[Path, dict[str, Path]]) -> None:
    on, off = make(tiny, True), make(tiny, False)
    prompt = SYSTEM + SUFFIXES[0]
    reqs = [("base", prompt, ""), ("kv", prompt, "kv"), ("mlp", prompt, "mlp")]
    expected = {}
    got = {}
    for r in reqs:
        expected.update(run(off, [r]))
        before = hits(on)
        got.update(run(on, [r]))
        assert hits(on) == before  # nothing cached under another model is taken
    assert got == expected and len({tuple(v) for v in got.values()}) == 3
    before = hits(on)
    assert run(on, [("kv-again", prompt, "kv")])["kv-again"] == expected["kv"]
    assert hits(on) == before + 32  # the same adapter reuses its own blocks (2 full blocks: never the last token)
    # unloaded and loaded again under the same name with other weights: never matches the old blocks
    from inlaid_worker.engine.factory import add_adapter_dir

    for engine in (on, off):
        engine.remove_adapter("kv")
        add_adapter_dir(engine, "kv", tiny[1]["kv2"], tiny[0])
    before = hits(on)
    reloaded = run(on, [("kv-new", prompt, "kv")])["kv-new"]
    assert hits(on) == before
    assert reloaded == run(off, [("kv-new", prompt, "kv")])["kv-new"] != expected["kv"]


def _perturbed(layer: LayerWeights) -> LayerWeights:
    g = torch.Generator().manual_seed(5)
    qkv = layer.qkv + 0.5 * torch.randn(layer.qkv.shape, generator=g, dtype=layer.qkv.dtype)
    return LayerWeights(layer.input_norm, qkv, layer.o.clone(), layer.post_norm, layer.gate_up.clone(),
                        layer.down.clone())


def _swap_layer0(engine: LLMEngine, model_dir: Path, hook: bool = True) -> None:
    """Swaps a changed layer 0 in through the onboarding manager's own swap path (between steps)."""
    def call(fn: Any) -> Future:
        fut: Future = Future()
        target = engine if hook else type("NoHook", (), {"base_weights_changed": lambda self: None})()
        fut.set_result(fn(target))
        return fut

    runner: Any = engine.runner
    manager = OnboardManager(call, runner, versions=None, model_dir=model_dir, tokenizer=None)  # type: ignore[arg-type]
    manager._put_layer(0, _perturbed(runner.weights.layers[0]))
    assert manager.inplace_swaps == 1


def test_a_base_swap_invalidates_the_cache(tiny: tuple[Path, dict[str, Path]]) -> None:
    on, off, stale = make(tiny, True), make(tiny, False), make(tiny, True)
    prompt = SYSTEM + SUFFIXES[1]
    before_swap = run(on, [("a", prompt, "")])["a"]
    run(stale, [("a", prompt, "")])
    _swap_layer0(on, tiny[0])
    _swap_layer0(off, tiny[0])
    _swap_layer0(stale, tiny[0], hook=False)  # what would happen without the flush: stale KV is reused
    h = hits(on)
    after = run(on, [("b", prompt, "")])["b"]
    assert hits(on) == h and on.prefix_cache_stats().generation == 1
    reference = run(off, [("b", prompt, "")])["b"]
    assert after == reference != before_swap
    assert run(stale, [("b", prompt, "")])["b"] != reference  # the test can see stale KV
    assert run(on, [("c", prompt, "")])["c"] == reference and hits(on) == h + 48  # cached again, new base


def test_preemption_with_shared_prefixes_keeps_outputs_and_blocks(tiny: tuple[Path, dict[str, Path]]) -> None:
    long = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    per_block = make(tiny, False).runner.kv_bytes_per_block  # type: ignore[attr-defined]
    reqs = [(f"p{i}", SYSTEM + s, m) for i, (s, m) in enumerate(zip(SUFFIXES, ["", "", "kv", ""], strict=True))]
    expected = run(make(tiny, False), reqs, long)  # alone-ish reference with a roomy cache
    on = make(tiny, True, kv_cache_bytes=12 * per_block, max_num_batched_tokens=8)
    got = run(on, reqs, long)
    assert on.num_preemptions > 0 and got == expected
    assert on.prefix_cache_stats().hit_tokens > 0
    # aborts at every stage give every block back too
    for k in range(6):
        for rid, prompt, model in reqs:
            on.add_request(f"{rid}-{k}", prompt, long, model)
        for _ in range(k * 3):
            on.step()
        for rid, _, _ in reqs:
            on.abort_request(f"{rid}-{k}")
        drain(on)
        assert on.block_manager.num_free_blocks == on.limits.num_kv_blocks


def test_stats_reach_the_worker_metrics_and_the_switch_parses(tiny: tuple[Path, dict[str, Path]]) -> None:
    from inlaid_worker.config import ConfigError, load_config
    from inlaid_worker.server.metrics import EngineObserver, WorkerMetrics

    on = make(tiny, True)
    run(on, [("a", SYSTEM + SUFFIXES[0], ""), ("b", SYSTEM + SUFFIXES[1], "")])
    run(on, [("c", SYSTEM + SUFFIXES[1], "")])
    text = WorkerMetrics().render(on.state(), 0)
    stats = on.prefix_cache_stats()
    # b waited one step for a's system blocks (32 tokens), c took b's 3 full blocks (48)
    assert stats.hit_tokens == 32 + 48 and stats.queried_tokens == 48 + 54 + 54
    assert "inlaid_worker_prefix_cache_hit_tokens_total 80\n" in text
    assert f"inlaid_worker_prefix_cache_queried_tokens_total {48 + 54 + 54}\n" in text
    assert "prefix_cache" not in WorkerMetrics().render(make(tiny, False).state(), 0)  # off: no series
    metrics = WorkerMetrics()
    EngineObserver(on, metrics).attach()
    on.add_request("d", SYSTEM + SUFFIXES[0], GREEDY, "", 2)  # as the engine loop calls it (resumed tokens too)
    drain(on)
    assert metrics.admitted == 1 and on.prefix_cache_stats().hit_tokens == 80 + 32
    assert load_config([], {}).prefix_caching
    assert not load_config(["--prefix-caching", "off"], {}).prefix_caching
    assert not load_config([], {"INLAID_WORKER_PREFIX_CACHING": "0"}).prefix_caching
    with pytest.raises(ConfigError, match="prefix-caching"):
        load_config(["--prefix-caching", "maybe"], {})
