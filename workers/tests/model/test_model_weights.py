"""Weights load from safetensors only and must match config.json."""

import shutil

import pytest
import torch
from factories import make_tiny_llama
from inlaid_worker.model.config import load_model_config
from inlaid_worker.model.weights import WeightsError, load_weights
from safetensors.torch import load_file, save_file


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "m")


def test_loads_fused_layout(tiny):
    config = load_model_config(tiny)
    w = load_weights(tiny, config, "cpu", torch.float32)
    raw = load_file(str(tiny / "model.safetensors"))
    assert len(w.layers) == 2
    assert torch.equal(w.layers[1].qkv[: config.q_size], raw["model.layers.1.self_attn.q_proj.weight"])
    assert torch.equal(
        w.layers[0].gate_up[config.intermediate_size :], raw["model.layers.0.mlp.up_proj.weight"]
    )
    assert w.lm_head is w.embed  # tied


def test_refuses_pickle_only_checkpoint(tiny, tmp_path):
    shutil.copy(tiny / "config.json", tmp_path / "config.json")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(WeightsError, match="pickle weights .*pytorch_model.bin.*safetensors only"):
        load_weights(tmp_path, load_model_config(tmp_path), "cpu", torch.float32)


def test_reports_wrong_shape_and_missing_tensor(tiny, tmp_path):
    shutil.copy(tiny / "config.json", tmp_path / "config.json")
    tensors = load_file(str(tiny / "model.safetensors"))
    tensors["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(16, 64)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    config = load_model_config(tmp_path)
    with pytest.raises(WeightsError, match=r"k_proj.weight' has shape \(16, 64\), expected \(32, 64\)"):
        load_weights(tmp_path, config, "cpu", torch.float32)
    del tensors["model.layers.0.self_attn.k_proj.weight"]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(WeightsError, match="missing tensor 'model.layers.0.self_attn.k_proj.weight'"):
        load_weights(tmp_path, config, "cpu", torch.float32)
