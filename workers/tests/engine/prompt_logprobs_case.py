"""Shared by the CPU and GPU prompt-logprobs tests: an engine's prompt logprobs against log_softmax of a plain
transformers forward over the prompt (the reference)."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from engine_helpers import drain, engine_for
from factories import make_tiny_llama
from inlaid_worker.engine.engine import LLMEngine, RequestOutput
from inlaid_worker.engine.sampler import TokenLogprobs
from inlaid_worker.engine.sampling_params import SamplingParams

_rng = random.Random(3)
PROMPT = [_rng.randrange(3, 320) for _ in range(45)]  # 2 full 16-token blocks + 13
TOP = 5


def model_dir(root: Path) -> Path:
    path = root / "model"
    if not path.exists():
        make_tiny_llama(path)
    return path


def reference(model: Path, prompt: list[int]) -> torch.Tensor:
    """[len(prompt), vocab] float64 log_softmax of transformers' logits at every prompt position."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model, torch_dtype=torch.float32).eval()
    with torch.inference_mode():
        logits = hf(torch.tensor([prompt])).logits[0]
    return torch.log_softmax(logits.double(), dim=-1)


def engine(model: Path, **options: object) -> LLMEngine:
    return engine_for(model, **options)  # type: ignore[arg-type]


def params(top: int | None = TOP, **kw: object) -> SamplingParams:
    return SamplingParams(temperature=0, max_tokens=3, ignore_eos=True, prompt_logprobs=top, **kw)  # type: ignore[arg-type]


def run(eng: LLMEngine, prompt: list[int], p: SamplingParams, rid: str = "r") -> list[RequestOutput]:
    eng.add_request(rid, prompt, p)
    outs = drain(eng)[rid]
    assert eng.block_manager.num_free_blocks == eng.limits.num_kv_blocks
    return outs


def prompt_entries(outs: list[RequestOutput]) -> tuple[TokenLogprobs, ...]:
    with_prompt = [o for o in outs if o.prompt_logprobs is not None]
    assert len(with_prompt) == 1 and with_prompt[0] is outs[0], "prompt logprobs come once, on the first output"
    entries = with_prompt[0].prompt_logprobs
    assert entries is not None
    return entries


def check_against(
    entries: tuple[TokenLogprobs, ...], ref: torch.Tensor, prompt: list[int], top: int, atol: float
) -> None:
    assert len(entries) == len(prompt)
    first = entries[0]
    assert (first.token_id, first.rank, first.top) == (prompt[0], None, ())
    for p, e in enumerate(entries[1:]):
        row, target = ref[p], prompt[p + 1]
        assert e.token_id == target
        assert abs(e.logprob - float(row[target])) < atol, (p, e.logprob, float(row[target]))
        lo = int((row > row[target] + atol).sum()) + 1  # the rank, up to near-ties
        hi = int((row > row[target] - atol).sum()) + 1
        assert e.rank is not None and lo <= e.rank <= hi, (p, e.rank, lo, hi)
        assert len(e.top) == top
        values, ids = torch.topk(row, top)
        assert [v for _, v in e.top] == sorted((v for _, v in e.top), reverse=True)
        for (tid, v), rv in zip(e.top, values.tolist(), strict=True):
            assert abs(v - rv) < atol and abs(v - float(row[tid])) < atol
        assert {tid for tid, _ in e.top} == set(ids.tolist()) or abs(
            float(values[-1]) - float(row.topk(top + 1).values[-1])
        ) < atol
