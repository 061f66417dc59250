"""The batched sampler's scratch is bounded whatever the batch (engine/device_sampler.py): every full-vocabulary
temporary (bias, ban and penalty copies, the sampling's scratch, the logprobs' log-softmax) is made one chunk of
rows_per_chunk(vocab) rows at a time, with the same tokens and logprobs as one chunk and as the per-row reference; a
256-row batch never holds more than sampler_scratch_bytes(vocab, 256) at once (tensor bytes counted at every op
through a dispatch mode, CPU tensors), and the bound is one chunk; the launch's host-side shortcuts (one pass over
the rows (_classify, tested directly), one upload of the row indices, no per-row upload without sampled rows) give
the same results; a row asking for more logprobs than the vocabulary has gets them all; _host_rows copies any number
of rows (none included) off a device. The engine's start-up check that uses the bound: test_factory_sampling_headroom.py; the
bound against the CUDA allocator's peak: test_device_sampler_memory_gpu.py."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from device_sampler_cases import Case, PeakBytes, generators, logprobs_close, mixed_batch, worst_case
from inlaid_worker.engine import device_sampler
from inlaid_worker.engine.device_sampler import _Batch, rows_per_chunk, sample_batch, sampler_scratch_bytes
from inlaid_worker.engine.sampler import SamplerOutput, TokenHistory, make_generator, sample_rows
from inlaid_worker.engine.sampling_params import SamplingParams


def run(case: Case, nucleus: str | None = None, logits: torch.Tensor | None = None) -> SamplerOutput:
    x = case.logits if logits is None else logits
    return sample_batch(x, case.params, generators(case), case.histories, nucleus=nucleus, banned=case.banned)


@pytest.mark.parametrize("nucleus", ["sort", "topk"])
def test_chunks_of_any_size_give_the_tokens_and_logprobs_of_one_chunk(
    monkeypatch: pytest.MonkeyPatch, nucleus: str
) -> None:
    cases = [mixed_batch(s, 24, 300) for s in range(4)] + [mixed_batch(10 + s, 9, 4000) for s in range(2)]
    assert all(rows_per_chunk(int(c.logits.shape[1])) >= 24 for c in cases)  # one chunk each, as they stand
    kinds = {"bias": 0, "ban": 0, "penalties": 0, "logprobs": 0, "greedy": 0, "sampled": 0}
    for c in cases:
        assert c.banned is not None
        kinds["bias"] += sum(bool(p.logit_bias) for p in c.params)
        kinds["ban"] += sum(bool(b) for b in c.banned)
        kinds["penalties"] += sum(p.has_penalties for p in c.params)
        kinds["logprobs"] += sum(p.logprobs is not None for p in c.params)
        kinds["greedy"] += sum(p.greedy for p in c.params)
        kinds["sampled"] += sum(not p.greedy for p in c.params)
    assert min(kinds.values()) >= 5, kinds  # every kind of row is in the mix
    whole = [run(c, nucleus) for c in cases]
    for c, one in zip(cases, whole, strict=True):
        ref = sample_rows(c.logits, c.params, generators(c), c.histories, banned=c.banned)
        assert one.tokens == ref.tokens and logprobs_close(ref, one, 0.0)
    seen: list[int] = []
    real_raw = _Batch._raw

    def raw(self, rows, index):  # type: ignore[no-untyped-def]
        seen.append(len(rows))
        assert index is None or int(index.numel()) == len(rows)
        return real_raw(self, rows, index)

    monkeypatch.setattr(_Batch, "_raw", raw)
    for per_chunk in (1, 2, 5):
        for c, one in zip(cases, whole, strict=True):
            vocab = int(c.logits.shape[1])
            per_token = device_sampler.SCRATCH_BYTES_PER_TOKEN
            monkeypatch.setattr(device_sampler, "SCRATCH_BYTES", per_chunk * per_token * vocab)
            assert rows_per_chunk(vocab) == per_chunk
            seen.clear()
            chunked = run(c, nucleus)
            assert chunked.tokens == one.tokens
            assert chunked.logprobs == one.logprobs  # exactly: each row's arithmetic does not see its chunk
            assert seen and max(seen) == per_chunk


def test_half_precision_logits_and_a_row_selection_chunk_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    case = mixed_batch(3, 20, 500)
    half = case.logits.half()
    sel = [i for i in range(20) if i % 3 != 1]  # rows a grammar would have taken off (sample_batch's sel)
    assert case.banned is not None
    sub = SimpleNamespace(params=[case.params[i] for i in sel], histories=[case.histories[i] for i in sel],
                          banned=[case.banned[i] for i in sel], seeds=[case.seeds[i] for i in sel])  # fmt: skip

    def batch(logits: torch.Tensor, picked: list[int] | None) -> tuple[list[int], list[Any]]:
        c = sub if picked is not None else case
        b = _Batch(logits, list(c.params), generators(c), list(c.histories), "sort",  # type: ignore[arg-type]
                   list(c.banned), picked)  # fmt: skip
        out = b.run()
        return out.tokens, out.logprobs

    want_half = run(case, "sort", half)
    copy = _Batch(case.logits[sel], list(sub.params), generators(sub),  # type: ignore[arg-type]
                  list(sub.histories), "sort", list(sub.banned)).run()  # fmt: skip
    monkeypatch.setattr(device_sampler, "SCRATCH_BYTES", 2 * device_sampler.SCRATCH_BYTES_PER_TOKEN * 500)
    assert rows_per_chunk(500) == 2
    got_half = run(case, "sort", half)
    assert got_half.tokens == want_half.tokens and got_half.logprobs == want_half.logprobs
    assert batch(case.logits, sel) == (copy.tokens, copy.logprobs)


@pytest.mark.parametrize(("vocab", "per_chunk"), [(2048, 8), (32000, 0)])
def test_a_256_row_batch_never_holds_more_than_the_bound(
    monkeypatch: pytest.MonkeyPatch, vocab: int, per_chunk: int
) -> None:
    if per_chunk:  # a small vocabulary with chunks of 8 rows (32 chunks); 0: the real budget (26 rows at 32k)
        monkeypatch.setattr(device_sampler, "SCRATCH_BYTES", per_chunk * device_sampler.SCRATCH_BYTES_PER_TOKEN * vocab)
    make = (lambda n: mixed_batch(7, n, vocab)) if per_chunk else (lambda n: worst_case(n, vocab))
    case = make(256)
    rows = rows_per_chunk(vocab)
    bound = sampler_scratch_bytes(vocab, 256)
    one_copy = 256 * vocab * 4  # one float32 copy of the whole batch's logits
    assert bound < one_copy or not per_chunk
    with PeakBytes() as meter:
        got = run(case, "sort")
    assert 0 < meter.peak <= bound, (meter.peak, bound)
    # op-boundary peak per chunk row and vocabulary entry: well under SCRATCH_BYTES_PER_TOKEN (the rest is headroom
    # for what an op allocates inside, e.g. the CUDA sort's buffers)
    assert meter.peak <= 30 * rows * vocab, meter.peak / (rows * vocab)
    with PeakBytes() as one_chunk:  # the peak does not grow with the batch: one chunk's rows alone take as much
        run(make(rows), "sort")
    assert meter.peak <= one_chunk.peak + 256 * device_sampler.SCRATCH_BYTES_PER_ROW, (meter.peak, one_chunk.peak)
    ref = sample_rows(case.logits, case.params, generators(case), case.histories, banned=case.banned)
    assert got.tokens == ref.tokens and logprobs_close(ref, got, 0.0)
    with PeakBytes() as check:  # the meter does see a whole-batch copy
        _ = case.logits.clone() + 1
    assert check.peak >= 2 * one_copy


def test_the_bound_is_one_chunk_and_a_few_bytes_a_row() -> None:
    per_token = device_sampler.SCRATCH_BYTES_PER_TOKEN
    # 80: what the CUDA sorts need inside (top-p's segmented sort, a full-row torch.topk) on top of the tensors
    assert per_token == 80 and device_sampler.SCRATCH_BYTES == 64 << 20
    assert rows_per_chunk(32000) == 26 and rows_per_chunk(128256) == 6
    assert sampler_scratch_bytes(32000, 256) == 26 * per_token * 32000 + 8192 + 256 * 1024  # 63.5 MiB + 264 KiB
    assert sampler_scratch_bytes(128256, 256) == 6 * per_token * 128256 + 8192 + 256 * 1024
    assert sampler_scratch_bytes(32000, 4) == 4 * per_token * 32000 + 8192 + 4 * 1024  # a batch below one chunk
    big = 2_000_000  # one row alone exceeds SCRATCH_BYTES: chunks of one row
    assert rows_per_chunk(big) == 1 and sampler_scratch_bytes(big, 256) == per_token * big + 8192 + 256 * 1024
    for vocab in (32000, 128256):  # constant in the batch (beyond one chunk of rows) but for the per-row bytes
        assert sampler_scratch_bytes(vocab, 4096) - sampler_scratch_bytes(vocab, 1024) == 3072 * 1024
    with pytest.raises(ValueError):
        sampler_scratch_bytes(0, 8)


def test_penalty_histories_go_to_the_device_in_bounded_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    vocab = 64
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(3, vocab, generator=gen)
    long_prompt = [(7 * i) % vocab for i in range(5000)]
    long_output = [(3 * i) % 40 for i in range(4000)]
    params = [SamplingParams(temperature=0.7, seed=i, repetition_penalty=1.3, frequency_penalty=0.01,
                             presence_penalty=0.2, logprobs=2) for i in range(3)]  # fmt: skip
    histories = [TokenHistory(long_prompt, long_output) for _ in range(3)]
    copies: list[int] = []
    real = _Batch._scatter

    def scatter(self, into, flat, per_copy, accumulate):  # type: ignore[no-untyped-def]
        copies.append(per_copy)
        return real(self, into, flat, per_copy, accumulate)

    monkeypatch.setattr(_Batch, "_scatter", scatter)
    ref = sample_rows(logits, params, [make_generator(i) for i in range(3)], histories)
    got = sample_batch(logits, params, [make_generator(i) for i in range(3)], histories)
    assert got.tokens == ref.tokens and logprobs_close(ref, got, 0.0)
    assert copies == [device_sampler.HISTORY_IDS_MIN_COPY] * 2  # 3 rows x 64 tokens / 8 < the floor: 1024 ids a copy
    assert 3 * 5000 > device_sampler.HISTORY_IDS_MIN_COPY  # so the 15,000 prompt ids went in several copies


def test_a_row_asking_for_more_logprobs_than_the_vocabulary_gets_them_all() -> None:
    vocab = 8
    logits = torch.randn(3, vocab, generator=torch.Generator().manual_seed(4))
    params = [SamplingParams(temperature=0.0, logprobs=20), SamplingParams(temperature=0.7, seed=1, logprobs=3),
              SamplingParams(temperature=1.0, seed=2, logprobs=12)]  # fmt: skip
    ref = sample_rows(logits, params, [make_generator(i) for i in range(3)])
    got = sample_batch(logits, params, [make_generator(i) for i in range(3)])
    assert got.tokens == ref.tokens and logprobs_close(ref, got, 0.0)
    lengths = [len(lp.top) for lp in got.logprobs]  # type: ignore[union-attr]
    assert lengths == [vocab, 3, vocab]


def test_the_launch_uploads_the_row_indices_once_and_skips_unused_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain sampled rows in several chunks: no _adjusted/_penalized call, one upload of the work rows' indices
    (sliced per chunk), and the tokens of one chunk; rows with biases and penalties still take those steps."""
    vocab, rows = 40, 12
    logits = torch.randn(rows, vocab, generator=torch.Generator().manual_seed(2)) * 2
    plain = [SamplingParams(temperature=0.8, top_p=0.9, top_k=7, seed=i) if i % 4 else
             SamplingParams(temperature=0.0) for i in range(rows)]  # fmt: skip
    sel = list(range(0, 2 * rows, 2))
    wide = torch.stack([logits, logits], dim=1).reshape(2 * rows, vocab)  # its rows 2i and 2i + 1: row i

    def launch(params: list[SamplingParams], picked: list[int] | None) -> tuple[list[int], list[bool]]:
        x = logits if picked is None else wide
        b = _Batch(x, params, [make_generator(i) for i in range(rows)], [TokenHistory([1, 2], [3])] * rows, "sort",
                   None, picked)  # fmt: skip
        tokens, overflow, _ = b.launch()
        return tokens.tolist(), overflow.tolist()

    want = launch(plain, None)
    calls: dict[str, int] = {"adjusted": 0, "penalized": 0, "tensor": 0}
    for key in calls:
        real = getattr(_Batch, f"_{key}")

        def spy(self, *args, _real=real, _key=key, **kwargs):  # type: ignore[no-untyped-def]
            calls[_key] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(_Batch, f"_{key}", spy)
    monkeypatch.setattr(device_sampler, "SCRATCH_BYTES", 2 * device_sampler.SCRATCH_BYTES_PER_TOKEN * vocab)
    for picked in (None, sel):
        calls.update(adjusted=0, penalized=0, tensor=0)
        assert launch(plain, picked) == want  # 5 chunks of 2 rows (9 sampled rows)
        assert calls["adjusted"] == calls["penalized"] == 0
        # per_row and (with sel) sel itself: none per chunk. The work indices are per_row's last segment (the sampled
        # rows, already on the device; with sel, sel's entries there), as the greedy rows' tokens are sel's: no upload
        assert calls["tensor"] == (1 if picked is None else 2), calls
    # greedy rows with a bias only: no per_row upload (the one float64 copy; no sampled row), the tokens unchanged
    biased = [SamplingParams(temperature=0.0, logit_bias=((1, 3.0),)) for _ in range(rows)]
    want_biased = sample_rows(logits, biased, [None] * rows, None).tokens
    dtypes: list[torch.dtype] = []
    counted = _Batch._tensor

    def tensor(self: _Batch, values: list[Any], dtype: torch.dtype) -> torch.Tensor:
        dtypes.append(dtype)
        return counted(self, values, dtype)

    monkeypatch.setattr(_Batch, "_tensor", tensor)
    assert _Batch(logits, plain, [make_generator(i) for i in range(rows)], None, "sort").launch()[0].tolist() == want[0]
    assert dtypes.count(torch.float64) == 1  # the sampled rows' per_row
    dtypes.clear()
    assert _Batch(logits, biased, [None] * rows, None, "sort").launch()[0].tolist() == want_biased
    assert dtypes and torch.float64 not in dtypes, dtypes
    mixed = [SamplingParams(temperature=p.temperature, top_p=p.top_p, top_k=p.top_k, seed=p.seed,
                            logit_bias=((1, 3.0),) if i == 5 else (), presence_penalty=0.5 if i == 8 else 0.0)
             for i, p in enumerate(plain)]  # fmt: skip
    calls.update(adjusted=0, penalized=0)
    gens = [make_generator(i) for i in range(rows)]
    got = sample_batch(logits, mixed, gens, [TokenHistory([1, 2], [3])] * rows)
    ref = sample_rows(logits, mixed, [make_generator(i) for i in range(rows)], [TokenHistory([1, 2], [3])] * rows)
    assert got.tokens == ref.tokens
    assert calls["adjusted"] == calls["penalized"] == 5  # every chunk of the 10 work rows (9 sampled, greedy row 8)


class _OffCpu:
    """CPU logits that say they live on a GPU (device.type "cuda"): _host_rows' device path without a device."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x, self.shape, self.device = x, x.shape, torch.device("cuda", 0)

    def __getitem__(self, rows: list[int]) -> torch.Tensor:
        return self.x[rows]


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7])
def test_host_rows_off_the_cpu_copies_any_number_of_rows(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    vocab = 50
    x = torch.randn(8, vocab, generator=torch.Generator().manual_seed(n)).half()
    monkeypatch.setattr(device_sampler, "SCRATCH_BYTES", 2 * device_sampler.SCRATCH_BYTES_PER_TOKEN * vocab)
    rows = list(range(n))[::-1]  # 0 rows: one empty copy (no torch.cat of nothing); 3 and 7: chunks of 2
    got = device_sampler._host_rows(_OffCpu(x), rows)  # type: ignore[arg-type]
    assert got.dtype == torch.float32 and got.shape == (n, vocab)
    assert torch.equal(got, x[rows].float())


def test_classify_sorts_the_rows_for_the_launch() -> None:
    """_classify: sampled rows, penalized rows, rows changed by a bias, a ban or penalties, whether some row has a bias
    or a ban, and whether some greedy row is left as it is (its token is the logits' argmax)."""
    from inlaid_worker.engine.device_sampler import _classify, _RowPlan

    greedy, sampled = SamplingParams(temperature=0.0), SamplingParams(temperature=0.8, seed=1)
    biased = SamplingParams(temperature=0.0, logit_bias=((1, 2.0),))
    penalized = SamplingParams(temperature=0.8, seed=2, presence_penalty=0.5)
    params = [greedy, sampled, biased, penalized, greedy]
    plan = _classify(params, [None, None, None, None, (3,)])  # row 4: greedy with a ban
    assert plan == _RowPlan(sampled=[1, 3], penalized=[3], changed=[2, 3, 4], adjusted=True, plain_greedy=True)
    assert _classify([sampled, penalized], None) == _RowPlan([0, 1], [1], [1], False, False)  # penalties: no adjust
    assert _classify([biased, greedy], None) == _RowPlan([], [], [0], True, True)
    assert _classify([biased], [()]) == _RowPlan([], [], [0], True, False)  # an empty ban is no ban
    assert _classify([greedy], [(5,)]) == _RowPlan([], [], [0], True, False)
