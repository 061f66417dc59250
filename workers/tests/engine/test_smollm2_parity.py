"""THE correctness test: on the real SmolLM2-135M-Instruct (float32, CPU), greedy output of the engine with
three adapters (different ranks and targets) and a base request all in one running batch is token-identical
to transformers + PEFT running each adapter alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from engine_helpers import drain, tokens
from factories import make_random_adapter
from inlaid_worker.engine.factory import EngineOptions, add_adapter_dir, create_engine
from inlaid_worker.engine.sampling_params import SamplingParams
from inlaid_worker.model.smollm2 import ensure_smollm2

NEW_TOKENS = 10
ADAPTERS = {  # name -> (rank, alpha, targets, rslora)
    "qv-r4": (4, 8, ["q_proj", "v_proj"], False),
    "all-r8-rslora": (
        8,
        16,
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        True,
    ),
    "mlp-o-r16": (16, 16, ["o_proj", "gate_proj", "up_proj", "down_proj"], False),
}
QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain what a LoRA adapter is in one sentence.",
    "List three prime numbers.",
]


def hf_greedy(
    model: torch.nn.Module, prompt: list[int], steps: int = NEW_TOKENS
) -> tuple[list[int], torch.Tensor]:
    """Greedy tokens, and the logits of the first one."""
    ids = torch.tensor([prompt])
    out, past, first = [], None, torch.empty(0)
    with torch.inference_mode():
        for _ in range(steps):
            res = model(input_ids=ids, past_key_values=past, use_cache=True)
            past = res.past_key_values
            first = res.logits[0, -1] if not out else first
            nxt = int(res.logits[0, -1].argmax())
            out.append(nxt)
            ids = torch.tensor([[nxt]])
    return out, first


@pytest.mark.slow
def test_mixed_batch_matches_transformers_peft_per_adapter(tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    model_dir = ensure_smollm2()
    dirs = {
        name: make_random_adapter(
            tmp_path / name, model_dir, rank=r, alpha=a, targets=t, rslora=rs, seed=i + 1
        )
        for i, (name, (r, a, t, rs)) in enumerate(ADAPTERS.items())
    }
    engine = create_engine(model_dir, EngineOptions(kv_cache_bytes=32 << 20, max_num_batched_tokens=512))
    engine.async_scheduling = False  # the first step's own tokens are read below (async returns them a step later)
    for name, path in dirs.items():
        add_adapter_dir(engine, name, path, model_dir)
    models = [*ADAPTERS, ""]
    prompts = [engine.tokenizer.encode_chat([{"role": "user", "content": q}]) for q in QUESTIONS]
    greedy = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True)
    for i, (model, prompt) in enumerate(zip(models, prompts, strict=False)):
        engine.add_request(str(i), prompt, greedy, model)
    first = engine.step()
    assert engine.num_running == 4 and len(first) == 4  # all four prefilled and decoding in one batch
    outs = drain(engine)
    got = {models[i]: [first[i].token_ids[0]] + tokens(outs[str(i)]) for i in range(4)}
    assert engine.num_preemptions == 0

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    peft = PeftModel.from_pretrained(base, str(dirs[models[0]]), adapter_name=models[0])
    for name in models[1:3]:
        peft.load_adapter(str(dirs[name]), adapter_name=name)
    expected, first_logits = {}, {}
    for i, model in enumerate(models):
        if model:
            peft.set_adapter(model)
            expected[model], first_logits[model] = hf_greedy(peft, prompts[i])
        else:
            with peft.disable_adapter():
                expected[model], _ = hf_greedy(peft, prompts[i])
    for model in models:
        assert got[model] == expected[model], f"{model or 'base'} differs from transformers + PEFT"
    with peft.disable_adapter():  # every adapter really changes the model's output
        for i, model in enumerate(models[:3]):
            base_logits = hf_greedy(peft, prompts[i], steps=1)[1]
            assert (first_logits[model] - base_logits).abs().max() > 0.1, model
