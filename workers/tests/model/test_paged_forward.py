"""The paged forward pass equals transformers' LlamaForCausalLM logits on tiny random models."""

import pytest
import torch
from factories import make_step, make_tiny_llama
from inlaid_worker.model.runner import ModelRunner, kv_bytes_per_block, num_kv_blocks_for_budget
from transformers import AutoModelForCausalLM

BS = 4  # block size smaller than every sequence


def hf_logits(model_dir, tokens):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0]  # [len, vocab]


def prompt(seed, length, vocab=320):
    return torch.randint(3, vocab, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "m")


def test_prefill_logits_at_every_position(tiny):
    runner = ModelRunner(tiny, num_kv_blocks=8, block_size=BS)
    tokens = prompt(0, 13)
    step = make_step([(tokens, 0, [5, 2, 7, 0], -1)], BS)
    step = type(step)(**{**step.__dict__, "logits_indices": torch.arange(len(tokens))})
    torch.testing.assert_close(runner.execute(step), hf_logits(tiny, tokens), rtol=1e-5, atol=1e-5)


def test_chunked_prefill_and_decode_of_several_sequences(tiny):
    """Three sequences of different lengths; prefill chunks of one mix with decode rows of the others."""
    runner = ModelRunner(tiny, num_kv_blocks=32, block_size=BS)
    seqs = [prompt(1, 21), prompt(2, 6), prompt(3, 11)]
    tables = [[9, 3, 14, 1, 20, 6], [2, 17, 30], [4, 25, 11, 8]]
    full = [hf_logits(tiny, s) for s in seqs]
    # Per step: sequence -> (start, end) of the tokens it feeds; a chunk of 1 token is a decode row.
    schedule = [
        {0: (0, 8), 1: (0, 5)},
        {0: (8, 16), 1: (5, 6), 2: (0, 3)},
        {0: (16, 17), 2: (3, 10)},
        {0: (17, 18), 2: (10, 11)},
        {0: (18, 21)},
    ]
    for plan in schedule:
        items = [(s, span) for s, span in plan.items() if span is not None]
        chunks = [(seqs[s][a:b], a, tables[s], -1) for s, (a, b) in items]
        logits = runner.execute(make_step(chunks, BS))
        for row, (s, (_, b)) in enumerate(items):
            torch.testing.assert_close(logits[row], full[s][b - 1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tie_embeddings": False},
        {
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 4.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            }
        },
        {"heads": 4, "kv_heads": 1, "layers": 1},
    ],
    ids=["untied", "llama3-rope", "mqa"],
)
def test_model_variants(tmp_path, kwargs):
    model_dir = make_tiny_llama(tmp_path / "m", seed=3, **kwargs)
    runner = ModelRunner(model_dir, num_kv_blocks=32, block_size=BS)
    tokens = prompt(4, 70)
    full = hf_logits(model_dir, tokens)
    table = list(range(31, 13, -1))
    logits = runner.execute(make_step([(tokens[:69], 0, table, -1)], BS))
    torch.testing.assert_close(logits[0], full[68], rtol=1e-5, atol=1e-5)
    logits = runner.execute(make_step([(tokens[69:], 69, table, -1)], BS))
    torch.testing.assert_close(logits[0], full[69], rtol=1e-5, atol=1e-5)


def test_kv_sizing(tiny):
    runner = ModelRunner(tiny, num_kv_blocks=3, block_size=BS)
    # 2 layers * (K, V) * 4 slots * 2 kv heads * 16 dims * 4 bytes
    assert runner.kv_bytes_per_block == 2 * 2 * 4 * 2 * 16 * 4
    assert runner.kv_cache.shape == (2, 2, 3, BS, 2, 16)
    per = kv_bytes_per_block(runner.config, BS, torch.bfloat16)
    assert num_kv_blocks_for_budget(runner.config, BS, torch.bfloat16, 10 * per + per // 2) == 10
    with pytest.raises(ValueError, match="below one block"):
        num_kv_blocks_for_budget(runner.config, BS, torch.bfloat16, per - 1)


def test_rejects_malformed_steps(tiny):
    runner = ModelRunner(tiny, num_kv_blocks=2, block_size=BS)
    with pytest.raises(ValueError, match="past the KV cache"):
        runner.execute(make_step([(prompt(5, 3), 0, [2], -1)], BS))
    with pytest.raises(ValueError, match="unloaded adapter slot"):
        runner.execute(make_step([(prompt(5, 3), 0, [1], 0)], BS))
