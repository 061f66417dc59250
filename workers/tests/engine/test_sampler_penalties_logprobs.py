"""Sampler: presence / frequency / repetition penalties (vLLM's formulas, per row) and raw logprobs."""

from __future__ import annotations

import math

import pytest
import torch
from inlaid_worker.engine.sampler import (
    TokenHistory,
    apply_penalties,
    compute_logprobs,
    make_generator,
    penalize_row,
    sample,
    sample_rows,
)
from inlaid_worker.engine.sampling_params import SamplingError, SamplingParams
from inlaid_worker.engine.sequence import Sequence

# Values exactly representable in float32, so every expected number below is exact.
ROW = torch.tensor([4.0, -2.0, 1.0, 0.5, -1.0, 3.0])
HISTORY = TokenHistory(prompt=[0, 1], output=[2, 2, 1])  # output counts: token 1 once, token 2 twice


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits_of_seen_tokens() -> None:
    x = penalize_row(ROW, HISTORY, repetition=2.0)
    # tokens 0, 1 (prompt) and 2 (output) are seen; 3, 4, 5 are not
    assert x.tolist() == [2.0, -4.0, 0.5, 0.5, -1.0, 3.0]
    assert penalize_row(ROW, HISTORY, repetition=0.5).tolist() == [8.0, -1.0, 2.0, 0.5, -1.0, 3.0]
    assert torch.equal(ROW, torch.tensor([4.0, -2.0, 1.0, 0.5, -1.0, 3.0]))  # the input is untouched


def test_frequency_and_presence_penalties_count_output_tokens_only() -> None:
    # frequency: minus f * count (token 1 once, token 2 twice); the prompt's token 0 is not touched
    assert penalize_row(ROW, HISTORY, frequency=0.5).tolist() == [4.0, -2.5, 0.0, 0.5, -1.0, 3.0]
    # presence: minus p once per distinct output token
    assert penalize_row(ROW, HISTORY, presence=0.25).tolist() == [4.0, -2.25, 0.75, 0.5, -1.0, 3.0]
    # negative values reward repetition
    assert penalize_row(ROW, HISTORY, presence=-1.0, frequency=-0.5).tolist() == [
        4.0,
        -0.5,
        3.0,
        0.5,
        -1.0,
        3.0,
    ]


def test_penalties_compose_in_vllm_order() -> None:
    # repetition first (token 1: -2 -> -4, token 2: 1 -> 0.5), then frequency, then presence
    x = penalize_row(ROW, HISTORY, presence=0.25, frequency=0.5, repetition=2.0)
    assert x.tolist() == [2.0, -4.75, -0.75, 0.5, -1.0, 3.0]


def test_rows_without_penalties_are_bit_identical_in_a_mixed_batch() -> None:
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(3))
    plain = SamplingParams(temperature=0.8, seed=1)
    pen = SamplingParams(temperature=0.8, seed=1, presence_penalty=1.5, repetition_penalty=1.3)
    params = [plain, pen, plain, pen]
    histories = [None, TokenHistory([1, 2], [3, 3, 4]), None, TokenHistory([5], [6])]
    out = apply_penalties(x, params, histories)
    assert torch.equal(out[0], x[0]) and torch.equal(out[2], x[2])
    assert not torch.equal(out[1], x[1]) and not torch.equal(out[3], x[3])
    assert apply_penalties(x, [plain] * 4, None) is x  # nothing to do: no copy, no history needed
    # the unpenalized rows draw exactly what they draw in a batch without penalties
    mixed = sample(x, params, [make_generator(i) for i in range(4)], histories)
    clean = sample(x, [plain] * 4, [make_generator(i) for i in range(4)])
    assert mixed[0] == clean[0] and mixed[2] == clean[2]


def test_penalties_need_histories() -> None:
    pen = SamplingParams(frequency_penalty=1.0)
    with pytest.raises(ValueError, match="histor"):
        sample(torch.zeros(1, 8), [pen], [make_generator(0)])


def test_greedy_applies_penalties_before_argmax() -> None:
    x = torch.tensor([[5.0, 4.9, 0.0], [5.0, 4.9, 0.0], [5.0, 4.9, 0.0]])
    params = [
        SamplingParams(temperature=0),
        SamplingParams(temperature=0, presence_penalty=0.5),
        SamplingParams(temperature=0, repetition_penalty=1.1),
    ]
    hist = TokenHistory(prompt=[], output=[0])
    assert sample(x, params, [None] * 3, [None, hist, TokenHistory(prompt=[0], output=[])]) == [0, 1, 1]


def test_sampling_draws_from_the_penalized_logits() -> None:
    x = torch.tensor([[5.0, 4.9, 0.0], [5.0, 4.9, 0.0]])
    # top_k = 1 leaves only the most likely token: 0 raw, 1 once token 0 is penalized
    params = [
        SamplingParams(temperature=1.0, top_k=1),
        SamplingParams(temperature=1.0, top_k=1, presence_penalty=0.5),
    ]
    gens = [make_generator(0), make_generator(1)]
    assert sample(x, params, gens, [None, TokenHistory(prompt=[], output=[0])]) == [0, 1]


def test_logprobs_are_log_softmax_of_the_raw_logits_with_sorted_top_n() -> None:
    x = torch.randn(3, 40, generator=torch.Generator().manual_seed(7)) * 3
    params = [
        SamplingParams(temperature=0, logprobs=5),
        SamplingParams(temperature=0.7, seed=3),  # no logprobs
        # sampled with temperature and penalties: logprobs stay those of the raw distribution
        SamplingParams(temperature=0.5, seed=4, logprobs=3, frequency_penalty=2.0, repetition_penalty=1.5),
    ]
    hist = TokenHistory(prompt=list(range(10)), output=list(range(10, 30)))
    out = sample_rows(x, params, [None, make_generator(3), make_generator(4)], [None, None, hist])
    assert out.logprobs[1] is None
    for row, n in ((0, 5), (2, 3)):
        lp = out.logprobs[row]
        assert lp is not None and lp.token_id == out.tokens[row]
        ref = torch.log_softmax(x[row], dim=-1)
        assert lp.logprob == pytest.approx(float(ref[lp.token_id]), abs=1e-6, rel=0)
        assert len(lp.top) == n
        values = [v for _, v in lp.top]
        assert values == sorted(values, reverse=True)
        ref_top = torch.topk(ref, n)
        assert [i for i, _ in lp.top] == ref_top.indices.tolist()
        assert values == pytest.approx(ref_top.values.tolist(), abs=1e-6, rel=0)
        for token, value in lp.top:
            assert value == pytest.approx(float(ref[token]), abs=1e-6, rel=0)
        if lp.token_id in [i for i, _ in lp.top]:
            assert dict(lp.top)[lp.token_id] == lp.logprob  # the sampled token's value is the same number
    probs = torch.softmax(x[0], dim=-1)
    assert math.isclose(sum(math.exp(v) for v in torch.log_softmax(x[0], -1).tolist()), 1.0, rel_tol=1e-5)
    assert float(probs.max()) == pytest.approx(math.exp(out.logprobs[0].top[0][1]), rel=1e-5)


def test_greedy_logprob_is_the_top_alternative() -> None:
    x = torch.randn(2, 30, generator=torch.Generator().manual_seed(11))
    out = sample_rows(
        x, [SamplingParams(temperature=0, logprobs=4), SamplingParams(temperature=0, logprobs=0)], [None] * 2
    )
    first = out.logprobs[0]
    assert first is not None and first.top[0] == (first.token_id, first.logprob)
    assert first.logprob == max(v for _, v in first.top)
    zero = out.logprobs[1]
    assert zero is not None and zero.top == () and zero.token_id == int(x[1].argmax())
    assert zero.logprob == pytest.approx(float(torch.log_softmax(x[1], -1).max()), abs=1e-6, rel=0)


def test_logprobs_include_a_sampled_token_outside_the_top_n() -> None:
    x = torch.tensor([[10.0, 9.0, 8.0, -5.0]])
    lp = compute_logprobs(x, [SamplingParams(logprobs=2)], [3])[0]
    assert lp is not None and lp.token_id == 3 and [i for i, _ in lp.top] == [0, 1]
    assert lp.logprob == pytest.approx(float(torch.log_softmax(x[0], -1)[3]), abs=1e-6, rel=0)


def test_new_sampling_params_are_validated_by_name() -> None:
    for kwargs, name in [
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"frequency_penalty": -2.01}, "frequency_penalty"),
        ({"presence_penalty": float("nan")}, "presence_penalty"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"repetition_penalty": float("inf")}, "repetition_penalty"),
        ({"logprobs": 21}, "logprobs"),
        ({"logprobs": -1}, "logprobs"),
    ]:
        with pytest.raises(SamplingError, match=name):
            SamplingParams(**kwargs)
    ok = SamplingParams(presence_penalty=-2, frequency_penalty=2, repetition_penalty=1.2, logprobs=20)
    assert ok.has_penalties and not SamplingParams(logprobs=3).has_penalties


def test_a_resumed_sequence_counts_its_earlier_output_as_output() -> None:
    seq = Sequence("r", [1, 2, 3, 4], SamplingParams(presence_penalty=1.0), resumed_output_tokens=2)
    seq.output_token_ids.append(9)
    h = seq.penalty_history()
    assert list(h.prompt) == [1, 2] and list(h.output) == [3, 4, 9]
    fresh = Sequence("f", [1, 2, 3, 4], SamplingParams()).penalty_history()
    assert list(fresh.prompt) == [1, 2, 3, 4] and list(fresh.output) == []
    with pytest.raises(ValueError, match="resumed_output_tokens"):
        Sequence("bad", [1, 2], SamplingParams(), resumed_output_tokens=2)


def test_a_tiny_repetition_penalty_that_overflows_a_logit_to_inf_still_samples() -> None:
    # 30 / 1e-38 overflows float32 to +inf: softmax would give NaN and torch.multinomial would raise, which
    # fails the whole engine step (every request in flight). The limit distribution is the +inf tokens.
    logits = torch.tensor([[30.0, 1.0, 2.0, -3.0], [30.0, 1.0, 2.0, -3.0]])
    tiny = SamplingParams(temperature=1.0, max_tokens=4, repetition_penalty=1e-38)
    hot = SamplingParams(temperature=1e-30, max_tokens=4)  # 30 / 1e-30 is finite, 2 / 1e-30 too: no overflow
    history = TokenHistory(prompt=[0], output=[])
    out = sample_rows(logits, [tiny, hot], [make_generator(1), make_generator(2)], [history, None])
    assert out.tokens == [0, 0]
    big = SamplingParams(temperature=0.01, max_tokens=4, repetition_penalty=1e-37, top_k=2, top_p=0.5)
    assert sample_rows(logits[:1], [big], [make_generator(3)], [history]).tokens == [0]
    # several logits overflow: the limit is still the largest of them (never uniform over the overflowed ones)
    close = torch.tensor([[29.0, 1.0, 30.0, -3.0]])
    both = TokenHistory(prompt=[0, 2], output=[])
    cold = SamplingParams(temperature=1e-38, max_tokens=4)
    for seed in range(8):
        assert sample_rows(close, [tiny], [make_generator(seed)], [both]).tokens == [2]
        assert sample_rows(close, [cold], [make_generator(seed)]).tokens == [2]
    greedy = SamplingParams(temperature=0, max_tokens=4, repetition_penalty=1e-38)
    assert sample_rows(close, [greedy], [None], [both]).tokens == [2]


def _dense_reference(x: torch.Tensor, prompt: list[int], output: list[int], p: float, f: float, r: float) -> torch.Tensor:
    counts = torch.bincount(torch.tensor(output, dtype=torch.long), minlength=x.shape[-1])
    seen = counts > 0
    seen[torch.tensor(prompt, dtype=torch.long)] = True
    x = torch.where(seen, torch.where(x > 0, x / r, x * r), x)
    return x - f * counts.to(x.dtype) - p * (counts > 0).to(x.dtype)


def test_penalties_touch_only_seen_tokens_and_match_the_dense_formulas() -> None:
    g = torch.Generator().manual_seed(5)
    vocab = 1000
    x = torch.randn(vocab, generator=g) * 4
    prompt = torch.randint(0, vocab, (300,), generator=g).tolist()
    output = torch.randint(0, vocab, (80,), generator=g).tolist()
    for p, f, r in [(0.5, 0.0, 1.0), (0.0, -1.25, 1.0), (0.0, 0.0, 1.3), (1.5, 0.75, 0.6)]:
        want = _dense_reference(x, prompt, output, p, f, r)
        for prompt_as in (prompt, torch.tensor(prompt)):
            got = penalize_row(x, TokenHistory(prompt_as, output), p, f, r)
            assert torch.equal(got, want), (p, f, r)


def test_a_sequence_builds_its_prompt_history_once_not_every_step() -> None:
    # Repetition penalty looks at every prompt token: turning a long prompt into a tensor on every decode step
    # (per row) is Python work proportional to the prompt; the sequence keeps it.
    seq = Sequence("r", list(range(5000)), SamplingParams(repetition_penalty=1.1))
    first = seq.penalty_history()
    seq.output_token_ids.append(7)
    second = seq.penalty_history()
    assert isinstance(first.prompt, torch.Tensor) and second.prompt is first.prompt
    assert list(second.output) == [7]
    resumed = Sequence("s", [1, 2, 3, 4], SamplingParams(repetition_penalty=1.1), resumed_output_tokens=1)
    assert resumed.penalty_history().prompt is resumed.penalty_history().prompt
    assert resumed.penalty_history().prompt.tolist() == [1, 2, 3]
