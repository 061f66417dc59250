"""The samplers read a batch's rows of logits in place (rows=: the sampling rows of a step where some rows do not
sample, engine._postprocess and async_pipeline's launch and _finish_ahead): device_sampler.sample_batch and
launch_batch gather them chunk by chunk, sampler.sample_rows indexes them, and none copies the selected rows all at
once. Tokens, logprobs and generator states equal those of the copy the engine made before (logits[rows]) exactly:
greedy and sampled rows with temperature, min-p, top-k, top-p, penalties, logit biases, min_tokens bans and logprobs,
chunks of 1-5 rows, rows that overflow float32 (the host redo) and rows with a grammar (the host path). The engine's
side: test_engine_rows_in_place.py; on CUDA: test_sampling_rows_in_place_gpu.py."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
import torch
from device_sampler_cases import Case, PeakBytes, generators, grammar_case, mixed_batch, mixed_case, overflow_case
from inlaid_worker.engine import device_sampler
from inlaid_worker.engine.device_sampler import launch_batch, rows_per_chunk, sample_batch, sampler_scratch_bytes
from inlaid_worker.engine.sampler import SamplerOutput, make_generator, sample_rows
from inlaid_worker.engine.sampling_params import SamplingParams

Sampler = Callable[..., SamplerOutput]


def spread(case: Case, seed: int, shuffled: bool = False) -> tuple[torch.Tensor, list[int]]:
    """(logits with the case's rows among other rows (a step's prefill chunks, finished rows), the case's rows there);
    shuffled: the rows in no particular order."""
    rng = random.Random(seed)
    r, v = case.logits.shape
    total = r + rng.randrange(1, r + 2)
    at = sorted(rng.sample(range(total), r))
    if shuffled:
        rng.shuffle(at)
    wide = torch.randn(total, v, generator=torch.Generator().manual_seed(seed)) * 5  # rows nobody may read
    wide[at] = case.logits
    return wide, at


def outputs(sample: Sampler, case: Case, logits: torch.Tensor, **kw: object) -> str:
    """The sampler's output and its generators' states after the call, as text (exact, and NaN logprobs of +inf
    logits compare equal)."""
    gens = generators(case)
    out = sample(logits, case.params, gens, case.histories, banned=case.banned, **kw)
    return repr((out, [None if g is None else g.get_state().tolist() for g in gens]))


def cases() -> list[Case]:
    return [mixed_batch(s, 24, 300) for s in range(3)] + [overflow_case()]


@pytest.mark.parametrize("per_chunk", [0, 1, 2, 5])  # 0: the real chunk size (every case in one chunk)
@pytest.mark.parametrize("nucleus", ["sort", "topk"])
def test_sample_batch_reads_the_rows_in_place_with_the_copys_results(
    monkeypatch: pytest.MonkeyPatch, nucleus: str, per_chunk: int
) -> None:
    if per_chunk:
        monkeypatch.setattr(device_sampler, "SCRATCH_BYTES", per_chunk * device_sampler.SCRATCH_BYTES_PER_TOKEN * 300)
    for k, case in enumerate(cases()):
        logits, at = spread(case, k, shuffled=k == 1)
        want = outputs(sample_batch, case, logits[at], nucleus=nucleus)
        got = outputs(sample_batch, case, logits, nucleus=nucleus, rows=at)
        assert got == want, (k, nucleus, per_chunk)
    assert rows_per_chunk(300) == (per_chunk or rows_per_chunk(300))


def test_sample_rows_reads_the_rows_in_place_with_the_copys_results() -> None:
    for k, case in enumerate(cases()):
        logits, at = spread(case, k, shuffled=k == 2)
        assert outputs(sample_rows, case, logits, rows=at) == outputs(sample_rows, case, logits[at]), k


def test_launch_batch_reads_the_rows_in_place_with_the_copys_results(monkeypatch: pytest.MonkeyPatch) -> None:
    vocab, rows = 200, 30
    rng = random.Random(5)
    x = torch.randn(rows, vocab, generator=torch.Generator().manual_seed(5)) * 3
    x[3, 7] = float("inf")  # an overflowed row: flagged the same way
    params = [SamplingParams(temperature=0.0) if i % 5 == 0 else
              SamplingParams(temperature=rng.choice((0.5, 1.0)), top_p=rng.choice((1.0, 0.9)),
                             top_k=rng.choice((0, 20)), min_p=rng.choice((0.0, 0.05)), seed=i,
                             logit_bias=((1, 4.0),) if i % 7 == 0 else ())
              for i in range(rows)]  # fmt: skip
    banned: list[tuple[int, ...] | None] = [(2, 9) if i % 6 == 1 else None for i in range(rows)]
    case = Case(x, params, [None] * rows, [p.seed or 0 for p in params], banned)
    for per_chunk in (0, 2, 7):
        if per_chunk:
            per_token = device_sampler.SCRATCH_BYTES_PER_TOKEN
            monkeypatch.setattr(device_sampler, "SCRATCH_BYTES", per_chunk * per_token * vocab)
        logits, at = spread(case, per_chunk)

        def launch(source: torch.Tensor, sel: list[int] | None) -> tuple[list[int], list[bool]]:
            tokens, overflow = launch_batch(source, params, generators(case), banned, rows=sel)
            return tokens.tolist(), overflow.tolist()

        want = launch(logits[at], None)
        assert launch(logits, at) == want and want[1][3] and sum(want[1]) == 1


def test_grammar_rows_read_in_place(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("xgrammar")
    from inlaid_worker.engine.structured import GrammarState

    _engine, case, compiled = grammar_case(tmp_path)
    params, histories = case.params, case.histories
    logits, at = spread(case, 9, shuffled=True)
    for sample in (sample_batch, sample_rows):
        runs = []
        for source, sel in ((logits[at], None), (logits, at)):
            grammars = [None, GrammarState(compiled), None, GrammarState(compiled), None]
            runs.append(sample(source, params, generators(case), histories, grammars, rows=sel))
        assert repr(runs[0]) == repr(runs[1])
        assert all(GrammarState(compiled).accept(runs[1].tokens[r]) for r in (1, 3))


def test_no_copy_of_the_selected_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """256 sampling rows of 300 at a 2048 vocabulary in chunks of 8 rows: sample_batch and launch_batch with rows stay
    under sampler_scratch_bytes (below one float32 copy of the rows); the copy the engine made before did not."""
    vocab, total = 2048, 300
    monkeypatch.setattr(device_sampler, "SCRATCH_BYTES", 8 * device_sampler.SCRATCH_BYTES_PER_TOKEN * vocab)
    case = mixed_batch(4, 256, vocab)
    logits, at = spread(Case(case.logits, case.params, case.histories, case.seeds, case.banned), 4)
    assert logits.shape[0] == total or logits.shape[0] > 256
    one_copy = 256 * vocab * 4
    bound = sampler_scratch_bytes(vocab, 256)
    assert bound < one_copy
    with PeakBytes() as meter:
        got = outputs(sample_batch, case, logits, nucleus="sort", rows=at)
    assert 0 < meter.peak <= bound, (meter.peak, bound)
    with PeakBytes() as old:  # the engine's former logits[rows] (counted: made inside the meter)
        want = outputs(sample_batch, case, logits[at], nucleus="sort")
    assert old.peak >= one_copy and got == want
    plain = [SamplingParams(temperature=0.0) if i % 4 == 0 else SamplingParams(temperature=0.9, top_p=0.9, seed=i)
             for i in range(256)]  # fmt: skip
    gens = [None if p.greedy else make_generator(i) for i, p in enumerate(plain)]
    with PeakBytes() as launch:
        launch_batch(logits, plain, gens, rows=at)
    assert 0 < launch.peak <= bound, (launch.peak, bound)


def test_sample_rows_on_the_cpu_copies_no_row() -> None:
    """The per-row reference keeps copies of the rows it changes (bias, bans, penalties) and of those with logprobs;
    plain rows (greedy, temperature, min-p, top-k, top-p) it reads in place: no [R, V] copy."""
    vocab = 2048
    case = mixed_case(6, 256, vocab)
    params = [SamplingParams(temperature=p.temperature, top_p=p.top_p, top_k=p.top_k, min_p=p.min_p, seed=p.seed)
              for p in case.params]  # fmt: skip
    case = Case(case.logits, params, case.histories, case.seeds)
    logits, at = spread(case, 6)
    with PeakBytes() as meter:
        got = outputs(sample_rows, case, logits, rows=at)
    assert meter.peak < 256 * vocab * 4 // 8, meter.peak  # per-row temporaries only
    with PeakBytes() as old:
        want = outputs(sample_rows, case, logits[at])
    assert old.peak >= 256 * vocab * 4 and got == want


def test_rows_are_checked() -> None:
    x = torch.zeros(4, 8)
    p, g = [SamplingParams(temperature=0.0)] * 2, [None, None]
    for sample in (sample_batch, sample_rows):
        with pytest.raises(ValueError, match="rows must be in"):
            sample(x, p, g, rows=[1, 4])
        with pytest.raises(ValueError, match="rows must be in"):
            sample(x, p, g, rows=[-1, 2])
        with pytest.raises(ValueError, match="on 3 rows"):
            sample(x, p, g, rows=[0, 1, 2])
    with pytest.raises(ValueError, match="rows must be in"):
        launch_batch(x, p, g, rows=[0, 9])
    assert device_sampler._selection(x, [0, 1, 2, 3]) is None  # every row in order: read whole
    assert device_sampler._selection(x, [1, 0, 2, 3]) == [1, 0, 2, 3] and device_sampler._selection(x, None) is None
    for bad in (torch.tensor(1.0), torch.zeros(2), torch.zeros(2, 2, 8)):  # not [S, V]: a ValueError, no IndexError
        for rows in (None, [0, 1]):
            for sample in (sample_batch, sample_rows, launch_batch):
                with pytest.raises(ValueError, match=r"logits must be \[S, V\]"):
                    sample(bad, p, g, rows=rows)
