"""Prefix caching on the GPU fast path (triton backend, CUDA graphs for decode): a request whose prompt prefix
is cached prefills only its suffix on top of the shared blocks; its greedy tokens equal those of an engine without
caching, and every KV block comes back. Skipped without CUDA (the CPU tests cover the torch backend)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from engine_helpers import drain, engine_for, tokens
from factories import make_random_adapter, make_tiny_llama
from inlaid_worker.engine.engine import LLMEngine
from inlaid_worker.engine.sampling_params import SamplingParams

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
_rng = random.Random(5)
SYSTEM = [_rng.randrange(3, 320) for _ in range(70)]  # 4 full 16-token blocks + 6 tokens
SUFFIXES = [[_rng.randrange(3, 320) for _ in range(n)] for n in (5, 17, 1, 30)]


def make(root: Path, caching: bool) -> LLMEngine:
    model = root / "model"
    if not model.exists():
        make_tiny_llama(model)
        make_random_adapter(root / "kv", model, rank=4, alpha=8, targets=["k_proj", "v_proj"], seed=11)
    return engine_for(model, {"kv": root / "kv"}, enable_prefix_caching=caching, device="cuda",  # type: ignore[arg-type]
                      dtype="float32", kv_cache_bytes=2 << 20, max_num_batched_tokens=32)  # fmt: skip


def run(engine: LLMEngine, requests: list[tuple[str, list[int], str]]) -> dict[str, list[int]]:
    for rid, prompt, model in requests:
        engine.add_request(rid, prompt, GREEDY, model)
    outs = drain(engine)
    assert engine.block_manager.num_free_blocks == engine.limits.num_kv_blocks
    return {rid: tokens(outs[rid]) for rid, _, _ in requests}


def test_cached_prefixes_on_the_gpu_give_the_uncached_greedy_tokens(tmp_path: Path) -> None:
    on, off = make(tmp_path, True), make(tmp_path, False)
    assert on.runner.backend == "triton"
    reqs = [(f"r{i}-{m or 'base'}", SYSTEM + s, m) for m in ("", "kv") for i, s in enumerate(SUFFIXES)]
    expected: dict[str, list[int]] = {}
    got: dict[str, list[int]] = {}
    for r in reqs:  # one at a time: each later prompt of the same model finds the system blocks cached
        expected.update(run(off, [r]))
        got.update(run(on, [r]))
    again = run(on, [(f"{rid}-again", prompt, m) for rid, prompt, m in reqs])
    assert on.prefix_cache_stats().hit_tokens >= 2 * 3 * 64 + 8 * 64  # later prompts, then the whole second round
    assert got == expected
    assert {rid[: -len("-again")]: t for rid, t in again.items()} == expected
