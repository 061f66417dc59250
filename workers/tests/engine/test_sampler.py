"""Sampler: greedy, seed reproducibility independent of batch-mates, top-k / top-p support."""

import pytest
import torch
from inlaid_worker.engine.sampler import draw, make_generator, restrict_logits, sample
from inlaid_worker.engine.sampling_params import SamplingError, SamplingParams


def logits_rows(n: int, vocab: int = 50, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, vocab, generator=torch.Generator().manual_seed(seed))


def test_greedy_is_argmax() -> None:
    x = logits_rows(3)
    p = SamplingParams(temperature=0)
    assert sample(x, [p] * 3, [None] * 3) == x.argmax(-1).tolist()


def test_seeded_sampling_does_not_depend_on_batch_mates() -> None:
    x = logits_rows(4)
    p = SamplingParams(temperature=1.0, seed=1234)
    g = make_generator(1234)
    alone = [sample(x[2:3], [p], [g])[0] for _ in range(6)]
    others = [SamplingParams(temperature=0.7, seed=i) for i in range(3)]
    gens = [make_generator(i) for i in range(3)]
    g_mine = make_generator(1234)
    batched = [sample(x, [others[0], others[1], p, others[2]], [gens[0], gens[1], g_mine, gens[2]])[2]]
    for _ in range(5):
        batched.append(sample(x[[0, 2]], [others[0], p], [gens[0], g_mine])[1])
    assert batched == alone
    assert len(set(alone)) > 1  # the draws really are random


def test_top_k_and_top_p_restrict_the_support() -> None:
    x = torch.tensor([3.0, 2.0, 1.0, 0.0, -1.0])
    k2 = restrict_logits(x, 1.0, 2, 1.0)
    assert torch.isfinite(k2).tolist() == [True, True, False, False, False]
    probs = torch.softmax(x, -1)  # ~[0.64, 0.24, 0.09, 0.03, 0.01]
    p = restrict_logits(x, 1.0, 0, float(probs[0] + 0.01))
    assert torch.isfinite(p).tolist() == [True, True, False, False, False]
    only_top = restrict_logits(x, 1.0, 0, 0.1)
    assert torch.isfinite(only_top).tolist() == [True, False, False, False, False]
    rows = x.repeat(200, 1)
    params = [SamplingParams(temperature=2.0, top_k=3, seed=i) for i in range(200)]
    drawn = set(sample(rows, params, [make_generator(i) for i in range(200)]))
    assert drawn == {0, 1, 2}


def test_sampling_params_validation_names_the_parameter() -> None:
    with pytest.raises(SamplingError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(SamplingError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(SamplingError, match="max_tokens"):
        SamplingParams(max_tokens=0)


def _sorted_nucleus(x: torch.Tensor, top_p: float) -> torch.Tensor:
    """The reference: a full sort (what restrict_logits did before it looked at the top tokens first)."""
    order = torch.sort(x, descending=True).indices
    # the probabilities of the unsorted row, as the sampler takes them: a softmax over the sorted row sums in another
    # order, and which SIMD width the CPU has moves its last bits (the 0.999 boundary then differed on some machines)
    probs = torch.softmax(x, dim=-1)[order]
    drop_sorted = (torch.cumsum(probs, dim=-1) - probs) >= top_p
    return x.masked_fill(torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted), float("-inf"))


@pytest.mark.parametrize("scale", [0.3, 1.0, 4.0, 12.0])  # flat (nucleus past the first 256) to peaked
def test_top_p_from_the_top_tokens_equals_a_full_sort(scale: float) -> None:
    gen = torch.Generator().manual_seed(int(scale * 10))
    for top_p in (0.05, 0.5, 0.9, 0.999):
        x = torch.randn(5000, generator=gen) * scale
        assert torch.equal(restrict_logits(x, 1.0, 0, top_p), _sorted_nucleus(x, top_p))


def test_draw_follows_the_probabilities_and_never_draws_a_zero() -> None:
    probs = torch.tensor([0.5, 0.0, 0.2, 0.0, 0.3, 0.0])
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(6)
    for _ in range(20000):
        counts[draw(probs, gen)] += 1
    assert counts[1] == counts[3] == counts[5] == 0
    assert torch.allclose(counts / counts.sum(), probs, atol=0.015)  # ~5 standard deviations at n = 20000
    assert draw(torch.tensor([0.0, 0.0, 1.0]), gen) == 2 and draw(torch.tensor([1.0, 0.0]), None) == 0
    same = [draw(probs, torch.Generator().manual_seed(7)) for _ in range(3)]
    assert len(set(same)) == 1  # one seed, one draw
