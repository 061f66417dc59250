"""Acceptance: on the real model, greedy output of every adapter in ONE mixed batch is token-identical to
transformers + PEFT running that adapter alone (float32, CPU)."""

import pytest
import torch
from factories import greedy_paged, make_random_adapter
from inlaid_worker.model.runner import ModelRunner
from inlaid_worker.model.smollm2 import ensure_smollm2
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

NEW_TOKENS = 16
ADAPTERS = {  # name -> (rank, alpha, targets, rslora)
    "qv": (8, 16, ["q_proj", "v_proj"], False),
    "mlp": (4, 8, ["gate_proj", "up_proj", "down_proj"], True),
    "all": (16, 16, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], False),
}
CASES = [  # (question, adapter or None for the base model)
    ("What is the capital of France?", "qv"),
    ("Write a haiku about the sea.", "mlp"),
    ("List three primary colors.", "all"),
    ("What is the capital of France?", None),
]


def peft_greedy(model, prompt):
    ids = torch.tensor([prompt])
    with torch.no_grad():  # an explicit mask: else generate masks every <|im_end|> (== pad id) in the prompt
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            eos_token_id=None,
        )
    return out[0, len(prompt) :].tolist()


def peft_alone(model_dir, dirs, cases, prompts):
    """Each case through PEFT with only its adapter active (or adapters disabled for the base model)."""
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    names = list(dirs)
    model = PeftModel.from_pretrained(base, dirs[names[0]], adapter_name=names[0]).eval()
    for name in names[1:]:
        model.load_adapter(dirs[name], adapter_name=name)
    results = []
    for (_, adapter), prompt in zip(cases, prompts, strict=True):
        if adapter is None:
            with model.disable_adapter():
                results.append(peft_greedy(model, prompt))
        else:
            model.set_adapter(adapter)
            results.append(peft_greedy(model, prompt))
    return results


@pytest.mark.slow
def test_mixed_batch_is_token_identical_to_peft_alone(tmp_path):
    torch.set_num_threads(1)  # on a busy 2-core machine more threads spin and run ~10x slower
    model_dir = ensure_smollm2()
    tok = AutoTokenizer.from_pretrained(model_dir)
    dirs = {
        name: make_random_adapter(tmp_path / name, model_dir, rank=r, alpha=a, targets=t, rslora=rs, seed=i)
        for i, (name, (r, a, t, rs)) in enumerate(ADAPTERS.items())
    }
    prompts = [
        tok.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True, return_dict=False
        )
        for q, _ in CASES
    ]
    runner = ModelRunner(model_dir, num_kv_blocks=32, block_size=16)
    slots = {name: runner.add_adapter(name, d) for name, d in dirs.items()}
    adapter_ids = [slots[a] if a else -1 for _, a in CASES]
    batched = greedy_paged(runner, prompts, adapter_ids, NEW_TOKENS, chunk=16)

    for (_, adapter), got, expected in zip(
        CASES, batched, peft_alone(model_dir, dirs, CASES, prompts), strict=True
    ):
        assert got == expected, f"{adapter}: {tok.decode(got)!r} != {tok.decode(expected)!r}"
    assert batched[0] != batched[3]  # same prompt: the adapter changes the greedy answer
