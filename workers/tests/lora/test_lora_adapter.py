"""Adapter loading: PEFT directories accepted, unsupported or misfit adapters refused with clear reasons."""

import json
import math
import re

import pytest
import torch
from adapter_edits import base_with_adapter, edited
from factories import make_random_adapter
from inlaid_worker.lora.adapter import AdapterError, load_adapter
from safetensors.torch import load_file, save_file

TARGETS = ["q_proj", "v_proj", "down_proj"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return base_with_adapter(tmp_path_factory.mktemp("lora"), TARGETS)


def test_loads_peft_adapter(base):
    model_dir, adapter_dir, config = base
    a = load_adapter(adapter_dir, config, expected_base=str(model_dir))
    assert a.rank == 4 and a.scale == 2.0 and a.targets == frozenset(TARGETS)
    assert set(a.weights) == {(layer, m) for layer in range(2) for m in TARGETS}
    lora_a, lora_b = a.weights[(1, "down_proj")]
    assert lora_a.shape == (4, 128) and lora_b.shape == (64, 4)
    assert lora_b.abs().sum() > 0


def test_rslora_scale(base, tmp_path):
    _, adapter_dir, config = base
    a = load_adapter(edited(adapter_dir, tmp_path / "a", config_change={"use_rslora": True}), config)
    assert a.scale == pytest.approx(8 / math.sqrt(4))


def test_refuses_pickle_weights(base, tmp_path):
    _, adapter_dir, config = base
    d = edited(adapter_dir, tmp_path / "a")
    (d / "adapter_model.safetensors").unlink()
    torch.save({"x": torch.zeros(1)}, d / "adapter_model.bin")
    with pytest.raises(AdapterError, match=r"pickle weights \(adapter_model.bin\)"):
        load_adapter(d, config)


def test_refuses_wrong_shape(base, tmp_path):
    _, adapter_dir, config = base
    name = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"
    d = edited(adapter_dir, tmp_path / "a", lambda t: t.update({name: torch.ones(64, 4)}))  # v_proj outputs kv_size = 32
    with pytest.raises(
        AdapterError,
        match=r"layers.1.self_attn.v_proj.lora_B.weight' has shape \(64, 4\), "
        r"expected \(32, 4\)",
    ):
        load_adapter(d, config)


@pytest.mark.parametrize(
    ("value", "dtype", "counts"),
    [
        (float("nan"), torch.float32, r"\(1 NaN, 0 infinite of 256\)"),
        (float("inf"), torch.float32, r"\(0 NaN, 1 infinite of 256\)"),
        (float("-inf"), torch.bfloat16, r"\(0 NaN, 1 infinite of 256\)"),
        (float("nan"), torch.float16, r"\(1 NaN, 0 infinite of 256\)"),
    ],
)
def test_refuses_non_finite_weights(base, tmp_path, value, dtype, counts):
    """One NaN or +-inf anywhere in one tensor refuses the adapter, naming the tensor (in its stored dtype)."""
    _, adapter_dir, config = base
    name = "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"

    def poison(tensors: dict[str, torch.Tensor]) -> None:
        t = tensors[name].to(dtype)
        assert t.numel() == 256
        t[17, 2] = value
        tensors[name] = t

    d = edited(adapter_dir, tmp_path / "a", poison)
    with pytest.raises(AdapterError, match=rf"tensor '{re.escape(name)}' holds non-finite values {counts}"):
        load_adapter(d, config)


def test_refuses_huge_finite_weights(base, tmp_path):
    """Finite is not enough: float32's largest value cannot be served (lora.magnitude; test_lora_magnitude.py)."""
    _, adapter_dir, config = base
    name = "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight"
    d = edited(adapter_dir, tmp_path / "a",
               lambda t: t.update({name: torch.full_like(t[name], torch.finfo(torch.float32).max)}))  # fmt: skip
    with pytest.raises(AdapterError, match=rf"tensor '{re.escape(name)}' holds values up to 3.4e\+38 in magnitude"):
        load_adapter(d, config)


def test_refuses_wrong_rank(base, tmp_path):
    _, adapter_dir, config = base
    d = edited(adapter_dir, tmp_path / "a", config_change={"r": 8})
    with pytest.raises(AdapterError, match=r"lora_A.weight. has shape \(4, \d+\), expected \(8, \d+\) \(r=8"):
        load_adapter(d, config)


def test_refuses_other_base_model(base):
    _, adapter_dir, config = base
    with pytest.raises(AdapterError, match="trained on .* this worker serves 'org/OtherModel'"):
        load_adapter(adapter_dir, config, expected_base="org/OtherModel")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"target_modules": ["q_proj", "lm_head"]}, r"unsupported target module\(s\) \['lm_head'\]"),
        ({"target_modules": ".*proj"}, "regex"),
        ({"use_dora": True}, "DoRA is not supported"),
        ({"bias": "all"}, "bias='all' is not supported"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save is not supported"),
        ({"rank_pattern": {"q_proj": 8}}, "rank_pattern is not supported"),
        ({"peft_type": "IA3"}, "peft_type 'IA3'"),
        ({"layers_to_transform": [0, 5]}, "layers_to_transform"),
        ({"target_modules": ["q_proj"]}, "not in target_modules"),
        ({"lora_alpha": float("nan")}, "lora_alpha must be a finite number"),  # json.dumps writes NaN
        ({"lora_alpha": float("inf")}, "lora_alpha must be a finite number"),
        ({"use_rslora": "false"}, "use_rslora must be true or false"),  # a non-empty string is truthy
        ({"use_rslora": 1}, "use_rslora must be true or false"),
    ],
)
def test_refuses_unsupported_configs(base, tmp_path, change, message):
    _, adapter_dir, config = base
    with pytest.raises(AdapterError, match=message):
        load_adapter(edited(adapter_dir, tmp_path / "a", config_change=change), config)


def test_layers_to_transform_subset(base, tmp_path):
    model_dir, _, config = base
    d = make_random_adapter(tmp_path / "a", model_dir, rank=2, alpha=2, targets=["o_proj"], seed=2)
    cfg = json.loads((d / "adapter_config.json").read_text())
    cfg["layers_to_transform"] = [1]
    (d / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(AdapterError, match="layer 0 is outside"):
        load_adapter(d, config)
    tensors = {k: v for k, v in load_file(str(d / "adapter_model.safetensors")).items() if ".layers.1." in k}
    save_file(tensors, str(d / "adapter_model.safetensors"))
    assert set(load_adapter(d, config).weights) == {(1, "o_proj")}
