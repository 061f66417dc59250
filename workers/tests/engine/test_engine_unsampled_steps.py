"""A step that samples nothing (only non-final prompt chunks) leaves its logits alone: the engine no longer waits for
the whole device stream there (the removed engine.settle); the runner's graphs guard their own pinned inputs with an
event per buffer (model.decode_graphs.Staging; tests/model/test_graph_staging*.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from engine_helpers import drain, engine_for
from factories import make_tiny_llama
from inlaid_worker.engine import engine as engine_module
from inlaid_worker.engine.sampling_params import SamplingParams


class Untouchable:
    """Logits that fail on any use (the old settle read .device and synchronized the stream)."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a step that samples nothing used its logits (.{name})")


def test_steps_that_sample_nothing_do_not_touch_or_wait_for_their_logits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = engine_for(make_tiny_llama(tmp_path / "model"), {}, kv_cache_bytes=1 << 20, max_num_batched_tokens=8)
    prompt = engine.tokenizer.encode_prompt("Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15")
    chunks = (len(prompt) - 1) // 8  # 8-token chunk steps that end before the prompt does
    assert chunks >= 2
    real = engine.runner.execute_device  # type: ignore[attr-defined]
    calls: list[str] = []

    def execute_device(step):  # type: ignore[no-untyped-def]
        logits = real(step)
        calls.append("untouchable" if len(calls) < chunks else "real")
        return Untouchable() if calls[-1] == "untouchable" else logits

    monkeypatch.setattr(engine.runner, "execute_device", execute_device)
    engine.add_request("x", prompt, SamplingParams(temperature=0, max_tokens=2, ignore_eos=True), "")
    outs = drain(engine)
    assert calls[:chunks] == ["untouchable"] * chunks and len(calls) == chunks + 2  # last chunk + 1 decode sample
    assert [t for o in outs["x"] for t in o.token_ids] and outs["x"][-1].completion_tokens == 2
    assert not hasattr(engine_module, "settle")
