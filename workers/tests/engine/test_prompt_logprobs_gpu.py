"""Prompt logprobs on the GPU fast path (triton backend, decode and prefill CUDA graphs on): steps that score prompt
rows run eagerly and equal a plain transformers forward, whole and chunked; the generated tokens are those of a request
without them. Skipped without CUDA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from prompt_logprobs_case import PROMPT, TOP, check_against, engine, model_dir, params, prompt_entries, reference, run

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("chunk", [2048, 7])
def test_prompt_logprobs_on_the_gpu_equal_a_full_forward(tmp_path: Path, chunk: int) -> None:
    model = model_dir(tmp_path)
    eng = engine(model, device="cuda", dtype="float32", kv_cache_bytes=2 << 20, max_num_batched_tokens=chunk)
    assert eng.runner.backend == "triton" and eng.runner.prefill_graphs  # type: ignore[attr-defined]
    outs = run(eng, PROMPT, params())
    check_against(prompt_entries(outs), reference(model, PROMPT), PROMPT, TOP, atol=2e-3)
    stats = eng.runner.prefill_graph_stats  # type: ignore[attr-defined]
    assert stats["runs"] == 0  # every prefill step scored prompt rows: eager
    plain = run(eng, PROMPT, params(None), "plain")
    assert [o.token_ids for o in plain] == [o.token_ids for o in outs]
    assert eng.runner.prefill_graph_stats["runs"] > 0  # type: ignore[attr-defined]  # the plain prefill: in a graph
