"""bench/quality's batched pieces equal the quantizer's per-matrix ones: GPTQ, RTN, aggregations, Hessians,
and the multi-model generator equals Hugging Face greedy generation."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from inlaid_worker.quant import QuantSpec, gptq_quantize, rtn_quantize
from inlaid_worker.quant.adapter import LoraDelta, TaskAdapter
from inlaid_worker.quant.aggregate import aggregate
from inlaid_worker.quant.hessian import open_stream, step_layer

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench" / "quality"))
from batch_hessians import collect_sums, finalize, merged  # noqa: E402
from fast_gptq import aggregate_batched, gptq_batched, rtn_batched  # noqa: E402
from multi_llama import MultiLlama, from_hf  # noqa: E402


def _h(k: int, n: int, seed: int, dead: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, k // 2, generator=g) @ torch.randn(k // 2, k, generator=g) + 0.3 * torch.randn(n, k, generator=g)
    x = x * (torch.rand(k, generator=g) * 3)
    if dead is not None:
        x[:, dead] = 0
    return 2 * x.t() @ x / n


@pytest.mark.parametrize(
    "sym,act_order,block,static",
    [(True, False, 16, False), (False, False, 16, False), (True, True, 16, False), (True, False, 32, False),
     (True, True, 16, True), (False, True, 32, True), (True, False, 16, True)],
)
def test_gptq_batched_equals_gptq_quantize(sym: bool, act_order: bool, block: int, static: bool) -> None:
    """block 32 > group 16: each group's grid comes from its own columns only (gptq.py once read the whole
    rest of the block, a coarser grid for the first group of every block). static: act-order with static
    groups, the serving layout (g_idx = k // group_size)."""
    torch.manual_seed(0)
    k, n, bits, gs = 64, 24, 3, 16
    ws = torch.randn(3, n, k)
    hs = torch.stack([_h(k, 200, 1), _h(k, 200, 2, dead=5), _h(k, 90, 3)])
    deq, _ = gptq_batched(ws, hs, bits, gs, sym=sym, act_order=act_order, blocksize=block, static_groups=static)
    spec = QuantSpec(bits=bits, group_size=gs, sym=sym, act_order=act_order, blocksize=block, static_groups=static)
    for i in range(3):
        ref = gptq_quantize(ws[i], hs[i], spec).dequant
        assert torch.allclose(deq[i], ref, atol=1e-5), (i, (deq[i] - ref).abs().max())


def test_gptq_batched_ragged_last_group_beats_rtn() -> None:
    torch.manual_seed(1)
    w, h = torch.randn(1, 16, 40), _h(40, 300, 4)[None]
    x = torch.randn(300, 40) @ torch.linalg.cholesky(h[0] + 1e-3 * torch.eye(40)).t()
    deq, _ = gptq_batched(w, h, 3, 16, blocksize=16)  # groups 16, 16, 8
    rtn = rtn_batched(w, 3, 16)
    assert ((x @ (w[0] - deq[0]).t()) ** 2).sum() < ((x @ (w[0] - rtn[0]).t()) ** 2).sum()
    assert len(torch.unique(deq[0, 0, 32:])) <= 8  # the 8-wide last group sits on one 3-bit grid


def test_gptq_batched_static_act_order_ragged_groups() -> None:
    """Act-order with static groups and a shorter last group (K = 40, g16): every original group stays on
    one grid (at most 8 levels at 3 bits) although its columns are processed out of order."""
    torch.manual_seed(2)
    w, h = torch.randn(2, 16, 40), torch.stack([_h(40, 300, 5), _h(40, 300, 6)])
    deq, _ = gptq_batched(w, h, 3, 16, blocksize=16, act_order=True, static_groups=True)
    for b in range(2):
        for g0 in (0, 16, 32):
            assert all(len(torch.unique(deq[b, r, g0 : g0 + 16])) <= 8 for r in range(16))
        rtn = rtn_batched(w[b : b + 1], 3, 16)[0]
        x = torch.randn(300, 40) @ torch.linalg.cholesky(h[b] + 1e-3 * torch.eye(40)).t()
        assert ((x @ (w[b] - deq[b]).t()) ** 2).sum() < ((x @ (w[b] - rtn).t()) ** 2).sum()


def test_rtn_batched_equals_rtn_quantize() -> None:
    w = torch.randn(2, 8, 32)
    out = rtn_batched(w, 4, 8)
    for i in range(2):
        assert torch.equal(out[i], rtn_quantize(w[i], QuantSpec(bits=4, group_size=8)).dequant)


@pytest.mark.parametrize("how", ["max", "mean", "diagmax", "trace"])
def test_aggregations_batched(how: str) -> None:
    per = torch.stack([torch.stack([_h(12, 40, 10 * t + layer) for layer in range(2)]) for t in range(3)])
    out = aggregate_batched(how, per)
    for layer in range(2):
        ref = aggregate(how, {f"t{t}": per[t, layer] for t in range(3)}, {})
        assert torch.allclose(out[layer], ref, atol=1e-5)


def _tiny(seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1000.0,
                      pad_token_id=2, eos_token_id=2, bos_token_id=1)
    return LlamaForCausalLM(cfg).eval()


def test_multi_llama_matches_hf_greedy() -> None:
    models = [_tiny(0), _tiny(0)]
    with torch.no_grad():
        for p in models[1].model.layers.parameters():
            p.add_(0.05 * torch.randn_like(p))
    shared, w0 = from_hf(models[0])
    _, w1 = from_hf(models[1])
    ids = torch.tensor([[2, 2, 5, 9, 11, 7], [3, 4, 5, 6, 7, 8], [2, 2, 2, 2, 10, 12]])
    mask = (torch.arange(6)[None] >= torch.tensor([[2], [0], [4]])).long()
    got = MultiLlama(shared, {g: torch.stack([w0[g], w1[g]]) for g in w0}).generate(ids, mask, 6, stop=2)
    for j, m in enumerate(models):
        ref = m.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                         eos_token_id=2, pad_token_id=2)[:, 6:]
        ref = torch.nn.functional.pad(ref, (0, 6 - ref.shape[1]), value=2)
        assert torch.equal(got[j], ref), (j, got[j], ref)


def test_batched_hessians_equal_layerwise_streams() -> None:
    model = _tiny(3)
    g = torch.Generator().manual_seed(0)
    deltas = {li: {"self_attn.q_proj": LoraDelta(torch.randn(4, 32, generator=g) * 0.1,
                                                 torch.randn(32, 4, generator=g) * 0.1, 2.0),
                   "mlp.down_proj": LoraDelta(torch.randn(4, 48, generator=g) * 0.1,
                                              torch.randn(32, 4, generator=g) * 0.1, 2.0)} for li in range(2)}
    adapter = TaskAdapter("t", deltas)
    seqs = [torch.randint(3, 64, (n,), generator=g) for n in (7, 12, 3)]
    before = model.model.layers[0].self_attn.q_proj.weight.clone()
    with merged(model, adapter):
        sums, tokens = collect_sums(model, seqs, "cpu", batch=2)
    assert torch.equal(model.model.layers[0].self_attn.q_proj.weight, before)
    stream = open_stream(model, "t", adapter, seqs, torch.device("cpu"))
    for li, layer in enumerate(model.model.layers):
        ref = step_layer(layer, li, stream)
        for grp, h in ref.items():
            assert torch.allclose(finalize(sums[grp][li], tokens), h, rtol=1e-4, atol=1e-5), (li, grp)
