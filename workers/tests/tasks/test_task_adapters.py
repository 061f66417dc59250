"""Shipped adapters on the real SmolLM2-135M-Instruct (CPU): they load with PEFT and change the model."""

import json
from pathlib import Path

import pytest
import torch
from inlaid_worker.model.smollm2 import ensure_smollm2
from inlaid_worker.tasks.chat import render_prompt
from inlaid_worker.tasks.example import load_split
from inlaid_worker.train.data import IGNORE, encode
from inlaid_worker.train.recipe import RECIPES

ADAPTERS = Path(__file__).resolve().parents[3] / "assets" / "adapters"
SHIPPED = sorted(t for t, r in RECIPES.items() if r.shipped)


@pytest.fixture(scope="module")
def base():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)  # the CI machine has 2 cores shared with other tests: avoid oversubscription
    model_dir = ensure_smollm2()
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return model, tok


@pytest.mark.parametrize("task", SHIPPED)
def test_shipped_adapter_files(task: str) -> None:
    cfg = json.loads((ADAPTERS / task / "adapter_config.json").read_text())
    recipe = RECIPES[task]
    assert cfg["r"] == recipe.rank and set(cfg["target_modules"]) == set(recipe.targets)
    assert cfg["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    size = (ADAPTERS / task / "adapter_model.safetensors").stat().st_size
    assert size < 6_000_000, f"{task} adapter is {size} bytes: too large to ship"


def test_chat_template_matches_tokenizer(base) -> None:
    _, tok = base
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": "Hi there"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == render_prompt("Hi there")


def test_training_labels_cover_only_the_answer(base) -> None:
    _, tok = base
    ex = load_split("boolq", "train")[0]
    ids, labels = encode(tok, ex, max_len=768)
    answer = [t for t in labels if t != IGNORE]
    assert tok.decode(answer) == ex.target + "<|im_end|>"
    assert labels[: len(ids) - len(answer)] == [IGNORE] * (len(ids) - len(answer))


@torch.inference_mode()
def test_boolq_adapter_changes_logits_and_answers_yes_or_no(base) -> None:
    from peft import PeftModel

    model, tok = base
    ex = load_split("boolq", "test")[0]
    enc = tok(render_prompt(ex.prompt), return_tensors="pt", add_special_tokens=False)
    base_logits = model(**enc, logits_to_keep=1).logits[0, -1].clone()  # [V]
    peft_model = PeftModel.from_pretrained(model, ADAPTERS / "boolq")
    try:
        ad_logits = peft_model(**enc, logits_to_keep=1).logits[0, -1]  # [V]
        assert (ad_logits - base_logits).abs().max() > 1.0
        assert tok.decode(int(ad_logits.argmax())).strip() in {"yes", "no"}
    finally:
        peft_model.unload()  # leave the shared base model without LoRA layers
    assert not any("lora" in name for name, _ in model.named_modules())
