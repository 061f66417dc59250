"""Several adapters (different ranks, targets, rslora) and base rows in one batch == PEFT per adapter."""

import pytest
import torch
from factories import make_random_adapter, make_step, make_tiny_llama
from inlaid_worker.model.runner import ModelRunner
from peft import PeftModel
from transformers import AutoModelForCausalLM

BS = 4
ADAPTERS = {  # name -> (rank, alpha, targets, rslora)
    "attn": (2, 4, ["q_proj", "k_proj", "v_proj", "o_proj"], False),
    "mlp": (8, 16, ["gate_proj", "up_proj", "down_proj"], True),
    "mixed": (4, 8, ["v_proj", "up_proj", "down_proj"], False),
}


def reference_logits(model_dir, adapter_dir, tokens):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, adapter_dir)
    with torch.no_grad():
        return model.eval()(input_ids=torch.tensor([tokens])).logits[0]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi")
    model_dir = make_tiny_llama(root / "base")
    dirs = {
        name: make_random_adapter(root / name, model_dir, rank=r, alpha=a, targets=t, rslora=rs, seed=i + 1)
        for i, (name, (r, a, t, rs)) in enumerate(ADAPTERS.items())
    }
    return model_dir, dirs


def test_mixed_batch_matches_peft_per_adapter(setup):
    model_dir, dirs = setup
    runner = ModelRunner(model_dir, num_kv_blocks=32, block_size=BS)
    slots = {name: runner.add_adapter(name, d) for name, d in dirs.items()}
    assert sorted(slots.values()) == [0, 1, 2]
    names = ["mlp", None, "attn", "mixed", "attn"]  # None = base model; "attn" twice
    g = torch.Generator().manual_seed(7)
    seqs = [torch.randint(3, 320, (n,), generator=g).tolist() for n in (9, 5, 12, 7, 6)]
    tables = [[i * 5 + j for j in range(5)] for i in range(len(seqs))]
    refs = [
        reference_logits(model_dir, dirs.get(n) if n else None, s) for n, s in zip(names, seqs, strict=True)
    ]
    base_ref = reference_logits(model_dir, None, seqs[0])
    ids = [slots[n] if n else -1 for n in names]
    # prefill all but the last 2 tokens together, then feed the last 2 as decode rows
    steps = [
        [(s[:-2], 0) for s in seqs],
        [(s[-2:-1], len(s) - 2) for s in seqs],
        [(s[-1:], len(s) - 1) for s in seqs],
    ]
    for step in steps:
        chunks = [(new, start, tables[i], ids[i]) for i, (new, start) in enumerate(step)]
        logits = runner.execute(make_step(chunks, BS))
        for i, (new, start) in enumerate(step):
            torch.testing.assert_close(logits[i], refs[i][start + len(new) - 1], rtol=1e-4, atol=1e-4)
    assert (refs[0][-1] - base_ref[-1]).abs().max() > 1e-2  # the adapter really changes the output


def test_remove_adapter_frees_its_slot(setup):
    model_dir, dirs = setup
    runner = ModelRunner(model_dir, num_kv_blocks=4, block_size=BS, max_adapters=2)
    runner.add_adapter("attn", dirs["attn"])
    runner.add_adapter("mlp", dirs["mlp"])
    assert runner.add_adapter("mixed", dirs["mixed"]) == -1  # registered in host memory, no slot yet
    with pytest.raises(RuntimeError, match="exceed the 2 device adapter slots"):
        runner.prepare_adapters(["mixed"], keep=["attn", "mlp"])
    runner.remove_adapter("attn")
    assert runner.prepare_adapters(["mixed"]) == {"mixed": 0}
    assert runner.adapter_slots == {"mixed": 0, "mlp": 1}
    with pytest.raises(ValueError, match="already registered"):
        runner.add_adapter("mlp", dirs["mlp"])
