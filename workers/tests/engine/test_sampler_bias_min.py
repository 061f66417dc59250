"""logit_bias, min_p and min_tokens in the sampler: each rule on its own, on both paths (sample_rows, the per-row
reference, and device_sampler.sample_batch on CPU tensors), and the validation of the parameters."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from inlaid_worker.engine.device_sampler import sample_batch
from inlaid_worker.engine.sampler import (
    SamplerOutput,
    TokenHistory,
    adjust_row,
    make_generator,
    min_tokens_ban,
    restrict_logits,
    sample_rows,
)
from inlaid_worker.engine.sampling_params import SamplingError, SamplingParams
from inlaid_worker.engine.structured import StructuredOutput

Sampler = Callable[..., SamplerOutput]
PATHS = [pytest.param(sample_rows, id="rows"), pytest.param(sample_batch, id="batch")]
NEG = float("-inf")


def run(
    sampler: Sampler,
    logits: torch.Tensor,
    params: list[SamplingParams],
    histories: list[TokenHistory | None] | None = None,
    banned: list[tuple[int, ...] | None] | None = None,
) -> SamplerOutput:
    gens = [None if p.greedy else make_generator(p.seed) for p in params]
    return sampler(logits, params, gens, histories, banned=banned)


# ---- logit_bias ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", PATHS)
def test_logit_bias_bans_and_forces_tokens_greedy_or_sampled(sampler: Sampler) -> None:
    x = torch.tensor([[5.0, 1.0, 0.5, -2.0, 3.0]] * 4)
    params = [
        SamplingParams(temperature=0),  # plain: the argmax, 0
        SamplingParams(temperature=0, logit_bias=((0, -100.0),)),  # 0 banned: the next, 4
        SamplingParams(temperature=0, logit_bias=((3, 100.0),)),  # 3 forced
        SamplingParams(temperature=1.0, seed=7, logit_bias=((2, 100.0),), logprobs=1),  # 3 forced when sampled
    ]
    out = run(sampler, x, params)
    assert out.tokens == [0, 4, 3, 2]
    # logprobs stay those of the raw logits (vLLM's raw_logprobs): the forced token keeps its low logprob
    lp = out.logprobs[3]
    assert lp is not None and lp.token_id == 2
    assert lp.logprob == pytest.approx(float(torch.log_softmax(x[0], -1)[2]), abs=1e-6)
    assert lp.top[0][0] == 0


@pytest.mark.parametrize("sampler", PATHS)
def test_a_minus_100_bias_is_never_sampled(sampler: Sampler) -> None:
    x = torch.zeros(64, 6)  # uniform rows: without the bias, token 2 comes up in about 1 draw of 6
    plain = run(sampler, x, [SamplingParams(seed=s) for s in range(64)]).tokens
    biased = run(sampler, x, [SamplingParams(seed=s, logit_bias=((2, -100.0),)) for s in range(64)]).tokens
    assert 2 in plain and 2 not in biased


@pytest.mark.parametrize("sampler", PATHS)
def test_logit_bias_comes_before_the_penalties(sampler: Sampler) -> None:
    # token 0: logit 1, bias +3, in the output; token 1: logit 2.2. vLLM (and OpenAI: "added to the logits"):
    # (1 + 3) / 2 = 2.0 < 2.2 picks 1; the penalty first would give 1 / 2 + 3 = 3.5 and pick 0
    x = torch.tensor([[1.0, 2.2, 0.0]])
    p = SamplingParams(temperature=0, repetition_penalty=2.0, logit_bias=((0, 3.0),))
    assert run(sampler, x, [p], [TokenHistory([], [0])]).tokens == [1]


def test_adjust_row_ignores_ids_outside_the_row_and_leaves_its_input_alone() -> None:
    row = torch.tensor([1.0, 2.0, 3.0])
    assert adjust_row(row, SamplingParams(), None) is None
    out = adjust_row(row, SamplingParams(logit_bias=((1, 0.5), (9, 100.0))), (0, 12))
    assert out is not None and out.tolist() == [NEG, 2.5, 3.0]
    assert row.tolist() == [1.0, 2.0, 3.0]


# ---- min_p -----------------------------------------------------------------------------------------------------
def probs_row(p: list[float]) -> torch.Tensor:
    return torch.log(torch.tensor(p))


def test_min_p_drops_tokens_below_min_p_times_the_top_probability() -> None:
    x = probs_row([0.5, 0.3, 0.11, 0.09])  # min_p 0.2: below 0.1 goes
    kept = restrict_logits(x, 1.0, 0, 1.0, min_p=0.2).isfinite().tolist()
    assert kept == [True, True, True, False]
    assert restrict_logits(x, 1.0, 0, 1.0).isfinite().all()  # min_p 0: off
    assert restrict_logits(x, 1.0, 0, 1.0, min_p=1.0).isfinite().tolist() == [True, False, False, False]
    # after temperature: at 2.0 the distribution flattens (0.09 / 0.5 -> 0.42), so all four stay
    assert restrict_logits(x, 2.0, 0, 1.0, min_p=0.4).isfinite().all()


def test_min_p_comes_before_top_p_as_in_vllm() -> None:
    # min_p 0.3 keeps {0, 1, 2} (0.45, 0.3, 0.15; renormalized 0.5, 0.33, 0.17); top_p 0.8 over that keeps {0, 1}.
    # top-p first (0.75 before token 2 < 0.8) would keep token 2.
    x = probs_row([0.45, 0.3, 0.15, 0.1])
    assert restrict_logits(x, 1.0, 0, 0.8, min_p=0.3).isfinite().tolist() == [True, True, False, False]
    assert restrict_logits(x, 1.0, 0, 0.8).isfinite().tolist() == [True, True, True, False]


@pytest.mark.parametrize("sampler", PATHS)
def test_min_p_limits_what_is_sampled_and_leaves_greedy_alone(sampler: Sampler) -> None:
    x = probs_row([0.4, 0.3, 0.2, 0.06, 0.04]).repeat(200, 1)
    plain = set(run(sampler, x, [SamplingParams(seed=s) for s in range(200)]).tokens)
    cut = set(run(sampler, x, [SamplingParams(seed=s, min_p=0.4) for s in range(200)]).tokens)
    assert plain == {0, 1, 2, 3, 4} and cut == {0, 1, 2}
    assert run(sampler, x[:1], [SamplingParams(temperature=0, min_p=1.0)]).tokens == [0]


def test_both_paths_draw_the_same_tokens_with_min_p_top_k_and_top_p() -> None:
    x = torch.randn(40, 300, generator=torch.Generator().manual_seed(5)) * 2.5
    params = [
        SamplingParams(
            seed=s,
            temperature=0.7 + (s % 3) * 0.4,
            min_p=(0.0, 0.05, 0.2, 0.6)[s % 4],
            top_k=(0, 20)[s % 2],
            top_p=(1.0, 0.9, 0.5)[s % 3],
        )
        for s in range(40)
    ]
    ref, got = run(sample_rows, x, params), run(sample_batch, x, params)
    assert got.tokens == ref.tokens
    assert ref.tokens != run(sample_rows, x, [SamplingParams(seed=s) for s in range(40)]).tokens


# ---- min_tokens ------------------------------------------------------------------------------------------------
def test_min_tokens_bans_stop_ids_and_eos_until_the_output_has_that_many() -> None:
    p = SamplingParams(min_tokens=3, stop_token_ids=(9, 4))
    assert min_tokens_ban(p, 0, {2}) == (2, 4, 9)
    assert min_tokens_ban(p, 2, {2}) == (2, 4, 9)
    assert min_tokens_ban(p, 3, {2}) is None
    assert min_tokens_ban(SamplingParams(), 0, {2}) is None
    assert min_tokens_ban(SamplingParams(min_tokens=3, ignore_eos=True), 0, {2}) is None  # EOS ends nothing then
    assert min_tokens_ban(SamplingParams(min_tokens=3, ignore_eos=True, stop_token_ids=(5,)), 0, {2}) == (5,)
    # a grammar ends with EOS even with ignore_eos: its EOS is banned
    grammar = SamplingParams(min_tokens=3, ignore_eos=True, structured=StructuredOutput("regex", "a+"))
    assert min_tokens_ban(grammar, 1, {2}) == (2,)


@pytest.mark.parametrize("sampler", PATHS)
def test_banned_tokens_are_not_picked_and_a_row_keeps_its_only_token(sampler: Sampler) -> None:
    x = torch.tensor([[0.0, 9.0, 1.0, 2.0], [0.0, 9.0, 1.0, 2.0], [NEG, 5.0, NEG, NEG], [0.0, 9.0, 8.9, 2.0]])
    params = [SamplingParams(temperature=0)] * 3 + [SamplingParams(temperature=1.0, seed=3)]
    out = run(sampler, x, params, banned=[None, (1,), (1,), (1, 2)])
    # a row the ban would leave without any token keeps it (a grammar that can only end: EOS)
    assert out.tokens[:3] == [1, 3, 1]
    assert out.tokens[3] in (0, 3)
    assert run(sampler, x, params).tokens[:3] == [1, 1, 1]


def test_sample_batch_refuses_bans_of_another_length() -> None:
    with pytest.raises(ValueError, match="bans"):
        sample_batch(torch.zeros(2, 4), [SamplingParams()] * 2, [None, None], banned=[None])


# ---- validation ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_p": -0.1}, "min_p"),
        ({"min_p": 1.5}, "min_p"),
        ({"min_p": math.nan}, "min_p"),
        ({"min_tokens": -1}, "min_tokens"),
        ({"logit_bias": ((1, 100.5),)}, "^logit_bias: biases"),
        ({"logit_bias": ((1, math.nan),)}, "^logit_bias: biases"),
        ({"logit_bias": ((-1, 1.0),)}, "^logit_bias: token ids"),
        ({"logit_bias": ((3, 1.0), (1, 1.0))}, "^logit_bias: token ids must be unique"),
        ({"logit_bias": tuple((i, 1.0) for i in range(301))}, "^logit_bias: at most 300"),
    ],
)
def test_out_of_range_values_are_refused_naming_the_parameter(kwargs: dict, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(SamplingError, match=match):
        SamplingParams(**kwargs)


def test_logit_bias_ids_are_checked_against_the_vocabulary() -> None:
    p = SamplingParams(logit_bias=tuple((i, -100.0) for i in range(300)))
    p.check_vocab(300)
    with pytest.raises(SamplingError, match=r"^logit_bias: token id 300 is outside the vocabulary \(size 300\)"):
        SamplingParams(logit_bias=((5, 1.0), (300, 1.0))).check_vocab(300)
