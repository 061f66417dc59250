"""The batched sampler's scratch bounds (engine/device_sampler.py): only rows with top_p < 1 are sorted, only rows
with a top-k go through top-k, and sampled rows run in chunks of rows_per_chunk(vocab), with the same tokens and
logprobs as one chunk and as the per-row reference (sampler.sample_rows) on CPU tensors."""

from __future__ import annotations

import pytest
import torch
from device_sampler_cases import both, generators, logprobs_close, mixed_case, random_case
from inlaid_worker.engine import device_sampler
from inlaid_worker.engine.device_sampler import rows_per_chunk, sample_batch
from inlaid_worker.engine.sampler import sample_rows

SHAPES = [(1, 24, 50), (2, 30, 1000), (3, 13, 32000)]


@pytest.mark.parametrize("nucleus", ["sort", "topk"])
@pytest.mark.parametrize(("seed", "rows", "vocab"), SHAPES)
def test_a_mixed_batch_picks_the_reference_tokens(nucleus: str, seed: int, rows: int, vocab: int) -> None:
    case = mixed_case(seed, rows, vocab)
    ref, got, same_state = both(case, "cpu", nucleus)
    assert same_state
    assert got.tokens == ref.tokens
    assert logprobs_close(ref, got, 0.0)
    assert len(set(got.tokens)) > rows // 3  # not a degenerate batch


@pytest.mark.parametrize("nucleus", ["sort", "topk"])
def test_one_row_per_chunk_gives_the_same_tokens_and_logprobs(monkeypatch: pytest.MonkeyPatch, nucleus: str) -> None:
    cases = [mixed_case(s, r, v) for s, r, v in SHAPES] + [random_case(200 + s, 12, 32000) for s in range(2)]
    cases += [random_case(s, 8, 50) for s in range(6)]
    whole = [both(c, "cpu", nucleus) for c in cases]
    assert rows_per_chunk(32000) >= 13  # each case above ran in one chunk
    monkeypatch.setattr(device_sampler, "SCRATCH_BYTES", 1)
    assert rows_per_chunk(50) == rows_per_chunk(32000) == 1
    for c, (ref, one, _) in zip(cases, whole, strict=True):
        _, chunked, same_state = both(c, "cpu", nucleus)
        assert same_state
        assert chunked.tokens == one.tokens == ref.tokens
        assert chunked.logprobs == one.logprobs


def test_chunks_follow_the_scratch_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    per_row = device_sampler.SCRATCH_BYTES_PER_TOKEN * 32000
    assert rows_per_chunk(32000) * per_row <= device_sampler.SCRATCH_BYTES < (rows_per_chunk(32000) + 1) * per_row
    assert rows_per_chunk(128256) * device_sampler.SCRATCH_BYTES_PER_TOKEN * 128256 <= device_sampler.SCRATCH_BYTES
    monkeypatch.setattr(device_sampler, "SCRATCH_BYTES", 3 * per_row)
    seen: list[int] = []
    real = device_sampler._Batch._rows

    def rows(self, x, some, fn):  # type: ignore[no-untyped-def]
        seen.append(int(x.shape[0]))
        return real(self, x, some, fn)

    monkeypatch.setattr(device_sampler._Batch, "_rows", rows)
    case = mixed_case(4, 20, 32000)  # 17 sampled rows (every sixth is greedy): chunks of 3, 3, 3, 3, 3, 2
    ref = sample_rows(case.logits, case.params, generators(case))
    got = sample_batch(case.logits, case.params, generators(case), nucleus="sort")
    assert got.tokens == ref.tokens
    assert seen and max(seen) == 3 and sorted(set(seen)) == [2, 3]


@pytest.mark.parametrize("nucleus", ["sort", "topk"])
def test_only_top_p_rows_are_sorted_and_only_top_k_rows_take_top_k(
    monkeypatch: pytest.MonkeyPatch, nucleus: str
) -> None:
    case = mixed_case(5, 24, 32000)
    sampled = [p for p in case.params if not p.greedy]
    ref = sample_rows(case.logits, case.params, generators(case))
    sorted_rows: list[int] = []
    top_p_seen: list[float] = []
    top_k_seen: list[int] = []
    real_sort, real_top_p, real_top_k = torch.sort, device_sampler._Batch._top_p, device_sampler._Batch._top_k

    def counting_sort(x, *args, **kwargs):  # type: ignore[no-untyped-def]
        sorted_rows.append(int(x.shape[0]) if x.dim() > 1 else 1)
        return real_sort(x, *args, **kwargs)

    def top_p(self, x, p):  # type: ignore[no-untyped-def]
        top_p_seen.extend(p.flatten().tolist())
        return real_top_p(self, x, p)

    def top_k(x, k, kmax):  # type: ignore[no-untyped-def]
        top_k_seen.extend(k.tolist())
        return real_top_k(x, k, kmax)

    monkeypatch.setattr(torch, "sort", counting_sort)
    monkeypatch.setattr(device_sampler._Batch, "_top_p", top_p)
    monkeypatch.setattr(device_sampler._Batch, "_top_k", staticmethod(top_k))
    got = sample_batch(case.logits, case.params, generators(case), nucleus=nucleus)
    monkeypatch.undo()
    assert got.tokens == ref.tokens
    want_p = [p.top_p for p in sampled if p.top_p < 1.0]
    assert len(want_p) == 8 and len(sampled) == 20
    # the top_p = 1 rows are never sorted ("topk" takes the first 256 tokens, and sorts no row of this batch)
    assert sum(sorted_rows) == (len(want_p) if nucleus == "sort" else 0)
    assert sorted(top_p_seen) == pytest.approx(sorted(want_p))
    assert sorted(top_k_seen) == sorted(p.top_k for p in sampled if p.top_k > 0)
