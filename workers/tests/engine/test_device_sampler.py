"""The batched sampler (engine/device_sampler.py) against the per-row reference (sampler.sample_rows).

On CPU tensors the batch must pick exactly the reference's tokens and logprobs; on CUDA (tests marked `gpu`,
skipped without it) the same tokens up to float rounding (a row may differ only where a CDF step or the nucleus
edge lies within 1e-4 of the draw, and at most 2% of rows) and logprobs within 1e-4. Either way each sampled row draws exactly one uniform from its own generator.
"""

from __future__ import annotations

import pytest
import torch
from device_sampler_cases import (
    Case,
    both,
    generators,
    grammar_case,
    logprobs_close,
    near_a_rounding_edge,
    overflow_case,
    random_case,
    subset,
)
from inlaid_worker.engine.device_sampler import nucleus_strategy, sample_batch
from inlaid_worker.engine.sampler import TokenHistory, make_generator, sample_rows
from inlaid_worker.engine.sampling_params import SamplingParams

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
DEVICES = ["cpu", pytest.param("cuda", marks=[CUDA, pytest.mark.gpu])]
# (seed, rows, vocab): small and large vocabularies (top-p's first 256 tokens, and rows needing a full sort)
SHAPES = (
    [(s, 8, 50) for s in range(12)] + [(100 + s, 16, 1000) for s in range(6)] + [(200 + s, 12, 32000) for s in range(3)]
)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("nucleus", ["topk", "sort"])
def test_the_batch_picks_the_reference_tokens_on_random_cases(device: str, nucleus: str) -> None:
    mismatched = total = 0
    kinds = {"greedy": 0, "sampled": 0, "top_p": 0, "top_k": 0, "penalized": 0, "logprobs": 0, "min_p": 0}
    kinds |= {"logit_bias": 0, "banned": 0}
    for seed, rows, vocab in SHAPES:
        case = random_case(seed, rows, vocab)
        ref, got, same_state = both(case, device, nucleus)
        assert same_state, f"case {seed}: a generator drew other than one uniform per sampled row"
        differ = [i for i in range(rows) if ref.tokens[i] != got.tokens[i]]
        mismatched += len(differ)
        total += rows
        if device == "cpu":
            assert not differ and logprobs_close(ref, got, 0.0), f"case {seed}"
        else:  # float rounding may move a token at a CDF step or a nucleus edge, nowhere else
            assert all(near_a_rounding_edge(case, i) for i in differ), f"case {seed}: rows {differ}"
            same = [i for i in range(rows) if i not in differ]
            assert logprobs_close(subset(ref, same), subset(got, same), 1e-4), f"case {seed}"
        for p in case.params:
            kinds["greedy"] += p.greedy
            kinds["sampled"] += not p.greedy
            kinds["top_p"] += not p.greedy and p.top_p < 1
            kinds["top_k"] += not p.greedy and 0 < p.top_k
            kinds["penalized"] += p.has_penalties
            kinds["logprobs"] += p.logprobs is not None
            kinds["min_p"] += not p.greedy and p.min_p > 0
            kinds["logit_bias"] += bool(p.logit_bias)
        kinds["banned"] += sum(b is not None for b in case.banned or ())
    assert min(kinds.values()) >= 20, kinds  # every feature is exercised many times
    assert mismatched <= total // 50, f"{mismatched} of {total} rows differ"


@pytest.mark.parametrize("device", DEVICES)
def test_overflowing_rows_take_the_float64_path_with_the_uniform_drawn_for_them(device: str) -> None:
    case = overflow_case()
    ref, got, same_state = both(case, device)
    assert got.tokens == ref.tokens
    assert got.tokens[0] == 5 and got.tokens[1] in (9, 11) and got.tokens[3] == 7 and got.tokens[4] == 5
    assert got.tokens[6] == 2 and got.tokens[7] == 3  # the redo keeps the ban and the bias
    assert same_state
    assert logprobs_close(ref, got, 0.0 if device == "cpu" else 1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_seeded_rows_do_not_depend_on_their_batch_mates(device: str) -> None:
    mine = SamplingParams(temperature=0.9, top_p=0.9, top_k=40, seed=77, presence_penalty=0.4, logprobs=2)
    history = TokenHistory([1, 2, 3], [4, 4, 5])
    row = torch.randn(1, 500, generator=torch.Generator().manual_seed(9)) * 3
    g = make_generator(77)
    alone = [sample_batch(row.to(device), [mine], [g], [history]).tokens[0] for _ in range(8)]
    assert len(set(alone)) > 1  # the draws really are random
    g = make_generator(77)
    mixed = []
    for step in range(8):  # other rows, other sizes, other positions, greedy and sampled
        n = 2 + step % 5
        others = torch.randn(n, 500, generator=torch.Generator().manual_seed(step)) * (1 + step)
        at = step % (n + 1)
        logits = torch.cat([others[:at], row, others[at:]])
        params = [SamplingParams(temperature=(k % 3) * 0.6, seed=k, top_p=0.8) for k in range(n)]
        gens = [None if p.greedy else make_generator(k) for k, p in enumerate(params)]
        hist: list[TokenHistory | None] = [None] * n
        params.insert(at, mine)
        gens.insert(at, g)
        hist.insert(at, history)
        mixed.append(sample_batch(logits.to(device), params, gens, hist).tokens[at])
    assert mixed == alone


@pytest.mark.parametrize("device", DEVICES)
def test_greedy_rows_are_the_argmax_and_the_logits_are_untouched(device: str) -> None:
    x = torch.randn(5, 300, generator=torch.Generator().manual_seed(1)).to(device)
    before = x.clone()
    out = sample_batch(x, [SamplingParams(temperature=0)] * 5, [None] * 5)
    assert out.tokens == x.argmax(-1).tolist()
    assert torch.equal(x, before)


def test_mismatched_arguments_are_refused() -> None:
    x = torch.zeros(2, 10)
    with pytest.raises(ValueError, match="params"):
        sample_batch(x, [SamplingParams()], [None])
    with pytest.raises(ValueError, match="histories"):
        sample_batch(x, [SamplingParams(presence_penalty=1.0)] * 2, [None, None])
    with pytest.raises(ValueError, match="nucleus"):
        sample_batch(x, [SamplingParams(temperature=0.5)] * 2, [make_generator(1)] * 2, nucleus="heap")


def test_the_nucleus_strategy_follows_the_device() -> None:
    assert nucleus_strategy(torch.device("cpu")) == "topk"
    assert nucleus_strategy(torch.device("cuda")) == "sort"


def test_a_flat_row_needs_the_full_sort_and_still_matches() -> None:
    # 0.95 of a near-uniform 4000-token row is far past the first 256 tokens: the "topk" path sorts it all
    x = torch.randn(3, 4000, generator=torch.Generator().manual_seed(4)) * 0.01
    case = Case(x, [SamplingParams(temperature=1.0, top_p=0.95, seed=s) for s in range(3)], [None] * 3, [0, 1, 2])
    for nucleus in ("topk", "sort"):
        ref = sample_rows(case.logits, case.params, generators(case))
        got = sample_batch(case.logits, case.params, generators(case), nucleus=nucleus)
        assert got.tokens == ref.tokens


@pytest.mark.parametrize("device", DEVICES)
def test_tied_logits_keep_the_same_nucleus_whatever_the_sort_order(device: str) -> None:
    # fp16 logits of a near-flat row tie by the hundred: the nucleus keeps every token tied with its edge, so a
    # full sort (the GPU's order of ties) and the top 256 first (the CPU's) keep the same set
    x = (torch.randn(6, 8000, generator=torch.Generator().manual_seed(8)) * 0.5).half().float()
    assert len(torch.unique(x[0])) < 8000 * 3 // 4  # ties everywhere
    params = [SamplingParams(temperature=1.0, top_p=p, seed=s) for s, p in enumerate((0.9, 0.95, 0.5, 0.3, 0.99, 0.7))]
    case = Case(x, params, [None] * 6, list(range(6)))
    ref = sample_rows(case.logits, case.params, generators(case))
    for nucleus in ("topk", "sort"):
        got = sample_batch(case.logits.to(device), case.params, generators(case), nucleus=nucleus)
        differ = [i for i in range(6) if got.tokens[i] != ref.tokens[i]]
        if device == "cpu":
            assert not differ, nucleus
        else:
            assert all(near_a_rounding_edge(case, i) for i in differ), (nucleus, differ)


def test_grammar_rows_take_the_host_path_and_free_rows_stay_batched(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("xgrammar")
    from inlaid_worker.engine.structured import GrammarState

    _engine, case, compiled = grammar_case(tmp_path)
    x, params, histories = case.logits, case.params, case.histories

    def grammars() -> list[GrammarState | None]:
        return [None, GrammarState(compiled), None, GrammarState(compiled), None]

    ref = sample_rows(x, params, generators(case), histories, grammars())
    got = sample_batch(x, params, generators(case), histories, grammars())
    assert got.tokens == ref.tokens and got.logprobs == ref.logprobs
    assert all(GrammarState(compiled).accept(got.tokens[r]) for r in (1, 3))  # the mask was applied
    free = sample_batch(x, params, generators(case), histories)  # rows without grammars: as without any grammar
    assert [got.tokens[r] for r in (0, 2, 4)] == [free.tokens[r] for r in (0, 2, 4)]
