"""The multi-adapter LoRA reference against a per-row loop."""

import torch
from inlaid_worker.lora.apply import LoraMapping, LoraWeights, lora_reference


def test_matches_per_row_loop_with_mixed_ranks_and_base_rows():
    g = torch.Generator().manual_seed(0)
    d_in, d_out = 12, 10
    weights = {
        0: LoraWeights(torch.randn(2, d_in, generator=g), torch.randn(d_out, 2, generator=g), 0.5),
        3: LoraWeights(torch.randn(7, d_in, generator=g), torch.randn(d_out, 7, generator=g), 2.0),
    }
    adapter_ids = torch.tensor([3, -1, 0, 0, 5, 3, -1, 0])  # slot 5 has no weights for this module
    x = torch.randn(8, d_in, generator=g)
    y = torch.randn(8, d_out, generator=g)
    expected = y.clone()
    for t, a in enumerate(adapter_ids.tolist()):
        if a in weights:
            w = weights[a]
            expected[t] += w.scale * (x[t] @ w.a.T) @ w.b.T
    lora_reference(y, x, LoraMapping.build(adapter_ids), weights)
    torch.testing.assert_close(y, expected)
    assert not torch.equal(y[0], expected[0] * 0)


def test_writes_through_column_views():
    x = torch.ones(2, 3)
    fused = torch.zeros(2, 5)
    w = {0: LoraWeights(torch.ones(1, 3), torch.ones(2, 1), 1.0)}
    lora_reference(fused[:, 3:], x, LoraMapping.build(torch.tensor([-1, 0])), w)
    assert fused.tolist() == [[0, 0, 0, 0, 0], [0, 0, 0, 3, 3]]
