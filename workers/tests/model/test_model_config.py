"""config.json parsing and validation."""

import json

import pytest
from inlaid_worker.model.config import ModelConfigError, load_model_config, parse_model_config

BASE = {
    "model_type": "llama",
    "vocab_size": 320,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "eos_token_id": 2,
}


def test_parses_llama_config_with_defaults():
    c = parse_model_config({**BASE, "rope_parameters": {"rope_theta": 1e5, "rope_type": "default"}})
    assert (c.head_dim, c.q_size, c.kv_size) == (16, 64, 32)
    assert c.rope.theta == 1e5 and c.rope.rope_type == "default"
    assert c.eos_token_ids == (2,)
    assert c.linear_shape("k_proj") == (32, 64) and c.linear_shape("down_proj") == (64, 128)


def test_parses_transformers4_llama3_rope_scaling():
    raw = {
        **BASE,
        "rope_theta": 5e5,
        "eos_token_id": [2, 0],
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    }
    c = parse_model_config(raw)
    assert c.rope.rope_type == "llama3" and c.rope.factor == 8.0 and c.rope.theta == 5e5
    assert c.eos_token_ids == (2, 0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_type": "gpt2"}, "model_type 'gpt2'"),
        ({"num_key_value_heads": 3}, "multiple of num_key_value_heads"),
        ({"hidden_size": None}, "hidden_size must be a positive integer"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"attention_bias": True}, "attention_bias"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 2.0}}, "rope type 'yarn'"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "llama3 rope scaling needs"),
    ],
)
def test_rejects_unsupported_configs(change, message):
    with pytest.raises(ModelConfigError, match=message):
        parse_model_config({**BASE, **change})


def test_load_reports_missing_and_invalid_files(tmp_path):
    with pytest.raises(ModelConfigError, match="not found"):
        load_model_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelConfigError, match="not valid JSON"):
        load_model_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(BASE))
    assert load_model_config(tmp_path).num_layers == 2
