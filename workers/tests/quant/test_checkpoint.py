"""Checkpoint: GPTQ metadata, tensor layout, an independent dequantizer, QuantLinear, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import Tiny
from factories import make_random_adapter, make_tiny_llama
from inlaid_worker.quant import (
    QuantLinear,
    QuantSpec,
    dequantized_state_dict,
    load_dequantized_model,
    load_quantized_model,
    quantize_checkpoint,
    read_checkpoint,
)
from safetensors.torch import load_file

MODULES = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


@pytest.fixture(scope="module", params=[4, 3])
def ckpt(request: pytest.FixtureRequest, tiny: Tiny, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    out = tmp_path_factory.mktemp(f"ckpt{request.param}") / "q"
    spec = QuantSpec(bits=request.param, group_size=32, act_order=True, static_groups=True)
    quantize_checkpoint(tiny.base, out, "mlgptq", spec, tiny.tasks("ab"))
    return out, request.param


def _independent_dequant(t: dict[str, torch.Tensor], prefix: str, bits: int, k: int) -> torch.Tensor:
    """Reads the raw tensors with numpy bit arithmetic (v1 zeros): W_hat [N, K]."""
    words = t[f"{prefix}.qweight"].numpy().view(np.uint32).astype(np.uint64)  # [K*bits/32, N]
    stream = np.concatenate([words, np.zeros_like(words[:1])])
    codes = np.stack([((stream[j * bits // 32] | (stream[j * bits // 32 + 1] << np.uint64(32)))
                       >> np.uint64(j * bits % 32)) & np.uint64(2**bits - 1) for j in range(k)])  # [K, N]
    zw = t[f"{prefix}.qzeros"].numpy().view(np.uint32).astype(np.uint64).T  # [N*bits/32, G]
    zs = np.concatenate([zw, np.zeros_like(zw[:1])])
    n = t[f"{prefix}.scales"].shape[1]
    zeros = np.stack([((zs[j * bits // 32] | (zs[j * bits // 32 + 1] << np.uint64(32)))
                       >> np.uint64(j * bits % 32)) & np.uint64(2**bits - 1) for j in range(n)]).T + 1  # [G, N]
    g = t[f"{prefix}.g_idx"].numpy().astype(np.int64)
    scales = t[f"{prefix}.scales"].numpy().astype(np.float32)
    w_t = scales[g] * (codes.astype(np.float32) - zeros[g].astype(np.float32))
    return torch.from_numpy(np.ascontiguousarray(w_t.T))


def test_metadata_is_transformers_compatible(ckpt: tuple[Path, int]) -> None:
    out, bits = ckpt
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    for key, value in {"bits": bits, "group_size": 32, "sym": True, "quant_method": "gptq",
                       "checkpoint_format": "gptq", "desc_act": False}.items():
        assert qc[key] == value
    assert json.loads((out / "quantize_config.json").read_text()) == qc
    assert (out / "tokenizer.json").is_file()
    index = json.loads((out / "hessians" / "index.json").read_text())
    assert index["aggregation"] == "diagmax" and set(index["tasks"]) == {"a", "b"}


def test_tensor_layout(ckpt: tuple[Path, int], tiny: Tiny) -> None:
    out, bits = ckpt
    t = load_file(str(out / "model.safetensors"))
    for i in range(2):
        for m in MODULES:
            p = f"model.layers.{i}.{m}"
            k, n = (128, 64) if m == "mlp.down_proj" else (64, 128 if "gate" in m or "up" in m else
                                                              (32 if m in ("self_attn.k_proj", "self_attn.v_proj") else 64))
            assert f"{p}.weight" not in t
            assert t[f"{p}.qweight"].dtype == torch.int32 and t[f"{p}.qweight"].shape == (k * bits // 32, n)
            assert t[f"{p}.qzeros"].dtype == torch.int32 and t[f"{p}.qzeros"].shape == (k // 32, n * bits // 32)
            assert t[f"{p}.scales"].dtype == torch.float16 and t[f"{p}.scales"].shape == (k // 32, n)
            assert t[f"{p}.g_idx"].dtype == torch.int32 and t[f"{p}.g_idx"].shape == (k,)
    assert "model.embed_tokens.weight" in t and "lm_head.weight" not in t  # tied embeddings


def test_independent_dequantizer_and_quant_linear(ckpt: tuple[Path, int]) -> None:
    out, bits = ckpt
    raw = load_file(str(out / "model.safetensors"))
    sd = dequantized_state_dict(out)
    packed, _ = read_checkpoint(out)
    x = torch.randn(5, 64)
    for m in ("self_attn.q_proj", "self_attn.k_proj", "mlp.up_proj"):
        p = f"model.layers.1.{m}"
        w = _independent_dequant(raw, p, bits, 64)
        assert torch.equal(w, sd[f"{p}.weight"])
        torch.testing.assert_close(QuantLinear(packed[p])(x), x @ w.t(), rtol=1e-5, atol=1e-5)


def test_quantized_model_matches_dequantized_model(ckpt: tuple[Path, int], tiny: Tiny) -> None:
    out, _ = ckpt
    ids = tiny.seqs["a"][0].view(1, -1)
    with torch.no_grad():
        a = load_quantized_model(out)(input_ids=ids).logits
        b = load_dequantized_model(out)(input_ids=ids).logits
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_rtn_and_pooled_need_no_adapters(tiny: Tiny, tmp_path: Path) -> None:
    quantize_checkpoint(tiny.base, tmp_path / "rtn", "rtn", QuantSpec(group_size=32))
    assert not (tmp_path / "rtn" / "hessians").exists()
    quantize_checkpoint(tiny.base, tmp_path / "gptq", "gptq", QuantSpec(group_size=32), tiny.tasks("ab", adapters=False))
    index = json.loads((tmp_path / "gptq" / "hessians" / "index.json").read_text())
    assert index["aggregation"] == "pooled" and index["adapters_active"] is False


def test_mlgptq_aggregation_is_selectable(tiny: Tiny, tmp_path: Path) -> None:
    spec = QuantSpec(group_size=32)
    quantize_checkpoint(tiny.base, tmp_path / "max", "mlgptq", spec, tiny.tasks("ab"), aggregation="max")
    index = json.loads((tmp_path / "max" / "hessians" / "index.json").read_text())
    assert index["aggregation"] == "max"
    with pytest.raises(ValueError, match="only be chosen for mlgptq"):
        quantize_checkpoint(tiny.base, tmp_path / "x", "gptq", spec, tiny.tasks("ab", adapters=False), aggregation="max")
    with pytest.raises(ValueError, match="aggregation must be one of"):
        quantize_checkpoint(tiny.base, tmp_path / "y", "mlgptq", spec, tiny.tasks("ab"), aggregation="pooled")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_bad_input_leaves_nothing(tiny: Tiny, tmp_path: Path) -> None:
    other = make_tiny_llama(tmp_path / "other", hidden=96, intermediate=160, heads=4, kv_heads=2)
    wrong = make_random_adapter(tmp_path / "wrong", other, rank=4, alpha=8, targets=["q_proj"])
    out = tmp_path / "out" / "q"
    from inlaid_worker.quant import TaskData

    bad = [
        ("mlgptq", [TaskData("a", wrong, tiny.seqs["a"])], "task 'a'"),
        ("mlgptq", [TaskData("a", None, tiny.seqs["a"])], "needs an adapter"),
        ("mlgptq", [TaskData("a", tiny.adapters["a"], [])], "no calibration"),
        ("mlgptq", [], "at least one task"),
        ("gptq-task", tiny.tasks("ab"), "exactly one"),
        ("awq", tiny.tasks("a"), "method"),
    ]
    for method, tasks, msg in bad:
        with pytest.raises(ValueError, match=msg):
            quantize_checkpoint(tiny.base, out, method, QuantSpec(group_size=32), tasks)
        assert not out.exists() and not list(tmp_path.glob("out/.*partial*"))
