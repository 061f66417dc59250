"""Sampler: greedy, seed reproducibility independent of batch-mates, top-k / top-p support."""

import pytest
import torch
from inlaid_worker.engine.sampler import make_generator, restrict_logits, sample
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
