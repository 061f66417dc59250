"""A re-quantized layer swapped into a serving runner has the form the runner serves: packed (QuantMatrix,
as the triton backend runs it) equal to what a restart would load from the published checkpoint, or dense."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from factories import make_tiny_llama
from inlaid_worker.model.config import load_model_config
from inlaid_worker.model.quant_weights import QuantMatrix, load_gptq_weights
from inlaid_worker.onboard.checkpoint_weights import layer_from_packed, packing_of
from inlaid_worker.quant import QuantSpec, quantize_checkpoint, read_checkpoint

SPEC = QuantSpec(bits=4, group_size=32)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("swap")
    base = make_tiny_llama(root / "base", layers=2)
    return quantize_checkpoint(base, root / "ckpt", "rtn", SPEC).out_dir


def _layer_packed(ckpt: Path, layer: int) -> dict:
    linears, _ = read_checkpoint(ckpt)
    prefix = f"model.layers.{layer}."
    return {k.removeprefix(prefix): v for k, v in linears.items() if k.startswith(prefix)}


def test_packed_serving_gets_the_layer_a_restart_would_load(ckpt: Path) -> None:
    cfg = load_model_config(ckpt)
    served = load_gptq_weights(ckpt, cfg, "cpu", torch.float16, packed=True)
    group_size, sym = packing_of(ckpt)
    assert (group_size, sym) == (32, True)
    new = layer_from_packed(_layer_packed(ckpt, 1), served.layers[1], "cpu", torch.float16,
                            group_size=group_size, sym=sym)
    for name in ("qkv", "o", "gate_up", "down"):
        got, want = getattr(new, name), getattr(served.layers[1], name)
        assert isinstance(got, QuantMatrix) and got.shape == want.shape
        for a, b in zip(got.parts, want.parts, strict=True):
            assert torch.equal(a.qweight, b.qweight) and torch.equal(a.qzeros, b.qzeros)
            assert torch.equal(a.scales, b.scales) and a.group_size == b.group_size == 32
    assert new.input_norm is served.layers[1].input_norm


def test_dense_serving_gets_dequantized_weights(ckpt: Path) -> None:
    cfg = load_model_config(ckpt)
    dense = load_gptq_weights(ckpt, cfg, "cpu", torch.float32, packed=False)
    new = layer_from_packed(_layer_packed(ckpt, 0), dense.layers[0], "cpu", torch.float32)
    for name in ("qkv", "o", "gate_up", "down"):
        got = getattr(new, name)
        assert isinstance(got, torch.Tensor) and torch.equal(got, getattr(dense.layers[0], name))


def test_packed_serving_without_group_size_is_refused(ckpt: Path) -> None:
    served = load_gptq_weights(ckpt, load_model_config(ckpt), "cpu", torch.float16, packed=True)
    with pytest.raises(ValueError, match="group_size"):
        layer_from_packed(_layer_packed(ckpt, 0), served.layers[0], "cpu", torch.float16)


def test_staged_on_the_host_then_moved_keeps_every_tensor(ckpt: Path) -> None:
    from inlaid_worker.onboard.checkpoint_weights import matrices_to

    served = load_gptq_weights(ckpt, load_model_config(ckpt), "cpu", torch.float16, packed=True)
    staged = layer_from_packed(_layer_packed(ckpt, 0), served.layers[0], "cpu", torch.float16, group_size=32)
    moved = matrices_to(staged, "meta")  # a device other than the host's, available everywhere
    for name in ("qkv", "o", "gate_up", "down"):
        for a, b in zip(getattr(moved, name).parts, getattr(staged, name).parts, strict=True):
            assert a.qweight.device.type == "meta" and a.qweight.shape == b.qweight.shape
            assert a.scales.dtype == b.scales.dtype and a.group_size == b.group_size
    assert moved.input_norm is staged.input_norm
