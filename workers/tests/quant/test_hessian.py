"""Hessian collection: adapters change later inputs; layer inputs equal a direct PEFT computation."""

from __future__ import annotations

import torch
from conftest import Tiny
from inlaid_worker.quant.adapter import load_task_adapter
from inlaid_worker.quant.hessian import decoder_layers, open_stream, step_layer
from inlaid_worker.quant.quantize import load_fp_model
from peft import PeftModel
from transformers import AutoModelForCausalLM


def _collect(tiny: Tiny, adapter: bool) -> list[dict[str, torch.Tensor]]:
    model = load_fp_model(tiny.base)
    ad = load_task_adapter(tiny.adapters["a"], tiny.base, "a") if adapter else None
    stream = open_stream(model, "a", ad, tiny.seqs["a"], torch.device("cpu"))
    return [step_layer(layer, i, stream) for i, layer in enumerate(decoder_layers(model))]


def _direct(tiny: Tiny, module: str) -> torch.Tensor:
    """2/n sum x x^T of `module`'s input, measured by a hook inside real PEFT with the adapter loaded."""
    base = AutoModelForCausalLM.from_pretrained(tiny.base, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(tiny.adapters["a"])).eval()
    xs: list[torch.Tensor] = []
    target = model.get_submodule(f"base_model.model.{module}")
    handle = target.register_forward_pre_hook(lambda _m, a: xs.append(a[0].reshape(-1, a[0].shape[-1])))
    with torch.no_grad():
        for ids in tiny.seqs["a"]:
            model(input_ids=ids.view(1, -1))
    handle.remove()
    x = torch.cat(xs)
    return 2 * x.t() @ x / x.shape[0]


def test_adapter_changes_later_inputs_only(tiny: Tiny) -> None:
    with_ad, without = _collect(tiny, True), _collect(tiny, False)
    assert torch.equal(with_ad[0]["qkv"], without[0]["qkv"])  # nothing before layer 0's q/k/v is adapted
    assert not torch.allclose(with_ad[0]["o"], without[0]["o"])  # v_proj's delta feeds o_proj
    assert not torch.allclose(with_ad[1]["qkv"], without[1]["qkv"])  # carried forward into layer 1


def test_matches_direct_peft_computation(tiny: Tiny) -> None:
    hs = _collect(tiny, True)
    for layer, group, module in [(0, "o", "model.layers.0.self_attn.o_proj"),
                                 (0, "down", "model.layers.0.mlp.down_proj"),
                                 (1, "qkv", "model.layers.1.self_attn.q_proj")]:
        torch.testing.assert_close(hs[layer][group], _direct(tiny, module), rtol=1e-4, atol=1e-5)


def test_hessians_are_symmetric_and_token_normalised(tiny: Tiny) -> None:
    hs = _collect(tiny, False)
    h = hs[0]["qkv"]
    assert torch.equal(h, h.t())
    model = load_fp_model(tiny.base)
    layer0 = decoder_layers(model)[0]
    x = torch.cat([layer0.input_layernorm(model.model.embed_tokens(s)) for s in tiny.seqs["a"]]).detach()
    torch.testing.assert_close(h, 2 * x.t() @ x / x.shape[0], rtol=1e-4, atol=1e-5)
