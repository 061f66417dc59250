"""LLMEngine on a tiny random Llama: mixed batches, joining/leaving, chunked prefill, preemption, stops."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_helpers import drain, engine_for, text, tokens
from factories import make_random_adapter, make_tiny_llama
from inlaid_worker.engine.adapters import UnknownModelError
from inlaid_worker.engine.engine import LLMEngine, RequestError
from inlaid_worker.engine.sampling_params import SamplingParams
from inlaid_worker.engine.sequence import FinishReason

GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
PROMPTS = [
    "Hello, world! How are",
    "The capital of France is",
    "def add(a, b):\n",
    "Numbers: 0 1 2 3 4 5 6 7",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("tiny")
    model = make_tiny_llama(root / "model")
    adapters = {
        "qv": make_random_adapter(root / "qv", model, rank=4, alpha=8, targets=["q_proj", "v_proj"], seed=1),
        "mlp": make_random_adapter(
            root / "mlp", model, rank=8, alpha=8, targets=["gate_proj", "down_proj"], seed=2
        ),
    }
    return model, adapters


_solo: dict[Path, LLMEngine] = {}


def alone(
    tiny: tuple[Path, dict[str, Path]], prompt: str, model: str, params: SamplingParams = GREEDY
) -> list[int]:
    """The request's tokens when it runs by itself (on one idle engine reused across tests)."""
    if tiny[0] not in _solo:
        _solo[tiny[0]] = engine_for(*tiny, kv_cache_bytes=1 << 20)
    engine = _solo[tiny[0]]
    engine.add_request("x", engine.tokenizer.encode_prompt(prompt), params, model)
    return tokens(drain(engine)["x"])


def test_mixed_batch_equals_each_request_alone(tiny: tuple[Path, dict[str, Path]]) -> None:
    engine = engine_for(*tiny, kv_cache_bytes=1 << 20)
    models = ["", "qv", "mlp", "qv"]
    for i, (prompt, model) in enumerate(zip(PROMPTS, models, strict=False)):
        engine.add_request(str(i), engine.tokenizer.encode_prompt(prompt), GREEDY, model)
    outs = drain(engine)
    results = [tokens(outs[str(i)]) for i in range(4)]
    assert results == [alone(tiny, p, m) for p, m in zip(PROMPTS, models, strict=False)]
    assert results[1] != alone(tiny, PROMPTS[1], "")  # the adapter changes the output
    assert all(outs[str(i)][-1].finish_reason is FinishReason.LENGTH for i in range(4))
    assert engine.block_manager.num_free_blocks == engine.limits.num_kv_blocks


def test_requests_join_and_leave_mid_run(tiny: tuple[Path, dict[str, Path]]) -> None:
    engine = engine_for(*tiny, kv_cache_bytes=1 << 20)
    enc = engine.tokenizer.encode_prompt
    short = SamplingParams(temperature=0, max_tokens=3, ignore_eos=True)
    engine.add_request("a", enc(PROMPTS[0]), GREEDY, "qv")
    engine.add_request("b", enc(PROMPTS[1]), short, "")
    outs: dict = {}
    for _ in range(4):  # b finishes after 3 tokens while a keeps running
        for o in engine.step():
            outs.setdefault(o.request_id, []).append(o)
    assert outs["b"][-1].finish_reason is FinishReason.LENGTH and engine.num_running == 1
    engine.add_request("c", enc(PROMPTS[2]), GREEDY, "mlp")  # joins a running decode
    drain(engine, outs)
    assert tokens(outs["a"]) == alone(tiny, PROMPTS[0], "qv")
    assert tokens(outs["b"]) == alone(tiny, PROMPTS[1], "", short)
    assert tokens(outs["c"]) == alone(tiny, PROMPTS[2], "mlp")


def test_chunked_prefill_and_preemption_keep_greedy_outputs(tiny: tuple[Path, dict[str, Path]]) -> None:
    long_params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    # 6 blocks of 16 tokens: three requests growing to ~50 tokens each cannot all stay resident.
    per_block = engine_for(*tiny, kv_cache_bytes=1 << 20).runner.kv_bytes_per_block  # type: ignore[attr-defined]
    engine = engine_for(*tiny, kv_cache_bytes=6 * per_block, max_num_batched_tokens=8)
    for i, model in enumerate(["", "qv", "mlp"]):
        engine.add_request(str(i), engine.tokenizer.encode_prompt(PROMPTS[i]), long_params, model)
    outs = drain(engine)
    assert engine.num_preemptions > 0
    for i, model in enumerate(["", "qv", "mlp"]):
        assert tokens(outs[str(i)]) == alone(tiny, PROMPTS[i], model, long_params)
    assert engine.block_manager.num_free_blocks == 6


def test_seeded_sampling_is_reproducible_in_any_batch(tiny: tuple[Path, dict[str, Path]]) -> None:
    params = SamplingParams(temperature=1.0, top_p=0.9, seed=7, max_tokens=12, ignore_eos=True)
    engine = engine_for(*tiny, kv_cache_bytes=1 << 20)
    engine.add_request("s", engine.tokenizer.encode_prompt(PROMPTS[0]), params, "qv")
    engine.add_request("o", engine.tokenizer.encode_prompt(PROMPTS[1]), SamplingParams(seed=1), "")
    assert tokens(drain(engine)["s"]) == alone(tiny, PROMPTS[0], "qv", params)
    other_seed = SamplingParams(temperature=1.0, top_p=0.9, seed=8, max_tokens=12, ignore_eos=True)
    assert alone(tiny, PROMPTS[0], "qv", other_seed) != alone(tiny, PROMPTS[0], "qv", params)


def test_stops_abort_and_limits(tiny: tuple[Path, dict[str, Path]]) -> None:
    engine = engine_for(*tiny, kv_cache_bytes=1 << 20, max_model_len=32)
    enc = engine.tokenizer.encode_prompt
    free = engine.tokenizer.decode(alone(tiny, PROMPTS[0], ""))
    reference = alone(tiny, PROMPTS[0], "")
    stop_tok = SamplingParams(temperature=0, max_tokens=12, stop_token_ids=(reference[2],), ignore_eos=True)
    engine.add_request("tok", enc(PROMPTS[0]), stop_tok)
    engine.add_request("ctx", enc(PROMPTS[1]), SamplingParams(temperature=0, max_tokens=100, ignore_eos=True))
    engine.add_request("gone", enc(PROMPTS[2]), GREEDY)
    outs: dict = {}
    for o in engine.step():
        outs.setdefault(o.request_id, []).append(o)
    assert engine.abort_request("gone") and not engine.abort_request("gone")
    drain(engine, outs)
    assert outs["gone"][-1].finish_reason is FinishReason.ABORT
    assert tokens(outs["tok"]) == reference[: reference.index(reference[2]) + 1]
    assert outs["tok"][-1].finish_reason is FinishReason.STOP
    assert (
        len(enc(PROMPTS[1])) + len(tokens(outs["ctx"])) == 32
        and outs["ctx"][-1].finish_reason is FinishReason.LENGTH
    )
    assert engine.block_manager.num_free_blocks == engine.limits.num_kv_blocks
    if len(free) >= 4:
        stop = free[2:4]
        engine.add_request(
            "str",
            enc(PROMPTS[0]),
            SamplingParams(temperature=0, max_tokens=12, stop=(stop,), ignore_eos=True),
        )
        outs = drain(engine)
        assert (
            text(outs["str"]) == free[: free.index(stop)]
            and outs["str"][-1].finish_reason is FinishReason.STOP
        )


def test_add_request_refusals(tiny: tuple[Path, dict[str, Path]]) -> None:
    engine = engine_for(*tiny, kv_cache_bytes=1 << 20, max_model_len=32)
    with pytest.raises(UnknownModelError, match="nope"):
        engine.add_request("a", [5, 6], GREEDY, "nope")
    with pytest.raises(RequestError, match="maximum context length is 32"):
        engine.add_request("a", [5] * 32, GREEDY)
    with pytest.raises(RequestError, match="outside the vocabulary"):
        engine.add_request("a", [5, 10_000], GREEDY)
    engine.add_request("a", [5, 6], GREEDY)
    with pytest.raises(RequestError, match="already in flight"):
        engine.add_request("a", [5, 6], GREEDY)
    assert engine.max_new_tokens(30, 0) == 2 and engine.max_new_tokens(10, 5) == 5
