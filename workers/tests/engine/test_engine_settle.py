"""A step that samples nothing still waits for the device (engine.settle), so the runner cannot restage its pinned
graph inputs under a copy the GPU has not made yet."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from engine_helpers import drain, engine_for
from factories import make_tiny_llama
from inlaid_worker.engine import engine as engine_module
from inlaid_worker.engine.sampling_params import SamplingParams


def test_steps_that_sample_nothing_settle_the_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settled: list[torch.device] = []
    monkeypatch.setattr(engine_module, "settle", lambda logits: settled.append(logits.device))
    engine = engine_for(make_tiny_llama(tmp_path / "model"), {}, kv_cache_bytes=1 << 20, max_num_batched_tokens=8)
    prompt = engine.tokenizer.encode_prompt("Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15")
    assert len(prompt) > 16  # at least two 8-token chunks that sample nothing before the last one
    engine.add_request("x", prompt, SamplingParams(temperature=0, max_tokens=2, ignore_eos=True), "")
    drain(engine)
    assert len(settled) == (len(prompt) - 1) // 8  # one per chunk step that ends before the prompt does


def test_settle_is_a_no_op_off_cuda() -> None:
    engine_module.settle(torch.zeros(2, 3))  # nothing to wait for on the CPU (and no CUDA needed)
