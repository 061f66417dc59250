"""The real model: the GGUF converts once into a cached Hugging Face directory that answers sensibly."""

import pytest
import torch
from factories import greedy_paged
from inlaid_worker.model.runner import ModelRunner
from inlaid_worker.model.smollm2 import ensure_smollm2
from transformers import AutoTokenizer


@pytest.fixture(scope="module")
def smollm2():
    torch.set_num_threads(1)  # on a busy 2-core machine more threads spin and run ~10x slower
    return ensure_smollm2()


def test_conversion_is_cached_and_complete(smollm2):
    assert ensure_smollm2() == smollm2  # second call reuses the directory
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json"):
        assert (smollm2 / name).is_file(), name
    tok = AutoTokenizer.from_pretrained(smollm2)
    assert tok.eos_token == "<|im_end|>"
    text = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.slow
def test_paged_runner_answers_sensibly(smollm2):
    """Wrongly permuted Q/K rows (llama.cpp layout) would turn this answer into noise."""
    tok = AutoTokenizer.from_pretrained(smollm2)
    questions = {"What is the capital of France?": "Paris", "What is 2 + 3? Answer with a number.": "5"}
    prompts = [
        tok.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True, return_dict=False
        )
        for q in questions
    ]
    runner = ModelRunner(smollm2, num_kv_blocks=16, block_size=16)
    outputs = greedy_paged(runner, prompts, [-1, -1], max_new_tokens=10, chunk=16)
    for out, expected in zip(outputs, questions.values(), strict=True):
        assert expected in tok.decode(out), tok.decode(out)
