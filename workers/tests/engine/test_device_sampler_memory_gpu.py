"""The device sampler's scratch bound holds on CUDA with what the ops allocate inside (engine/device_sampler.py:
SCRATCH_BYTES_PER_TOKEN): torch.cuda.max_memory_allocated over one sample_batch / launch_batch call of 256 rows stays
under sampler_scratch_bytes(vocab, 256) plus 16 MiB of allocator slack, with every row in the nucleus (the CUDA sort:
a segmented radix sort below 128 rows keeps ~32 B of its own buffers per element), one row with top_k 20000
(torch.topk then sorts whole rows) or every row with it, and rows with every restriction, penalties and 20 logprobs
(device_sampler_cases.worst_params). The logits are float32 and the batch spans several chunks, so the call makes no
copy of the whole batch's logits: the bound has nothing else to add. Skipped without CUDA; run with -s to see the measured bytes per chunk row and vocabulary entry."""

from __future__ import annotations

import pytest
import torch
from device_sampler_cases import worst_histories, worst_params
from gpu_peak import SLACK, peak_bytes
from inlaid_worker.engine.device_sampler import (
    SCRATCH_BYTES_PER_TOKEN,
    launch_batch,
    rows_per_chunk,
    sample_batch,
    sampler_scratch_bytes,
)
from inlaid_worker.engine.sampler import make_generator
from inlaid_worker.engine.sampling_params import SamplingParams

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

ROWS = 256


def _params(kind: str, vocab: int) -> list[SamplingParams]:
    if kind == "top_p":
        return [SamplingParams(temperature=0.8, top_p=0.9, seed=i) for i in range(ROWS)]
    if kind == "top_k_20000":  # one row's k makes torch.topk sort whole rows; the others in the nucleus
        return [SamplingParams(temperature=0.8, top_p=0.9, top_k=20000 if i == 3 else 0, seed=i) for i in range(ROWS)]
    if kind == "all_top_k_20000":  # every row sorted twice: torch.topk's full sort, then the nucleus
        return [SamplingParams(temperature=0.8, top_p=0.9, top_k=20000, seed=i) for i in range(ROWS)]
    assert kind == "everything"
    return worst_params(ROWS)


@pytest.mark.parametrize("vocab", [32000, 128256])
@pytest.mark.parametrize("kind", ["top_p", "top_k_20000", "all_top_k_20000", "everything"])
def test_one_call_allocates_at_most_the_scratch_bound(vocab: int, kind: str) -> None:
    gen = torch.Generator(device="cuda").manual_seed(0)
    logits = torch.randn(ROWS, vocab, device="cuda", generator=gen) * 3
    params = _params(kind, vocab)
    histories = worst_histories(ROWS)
    banned = [(2, 3)] * ROWS if kind == "everything" else None
    assert rows_per_chunk(vocab) < ROWS  # several chunks: no whole-batch copy of the logits

    def run() -> object:
        return sample_batch(logits, params, [make_generator(i) for i in range(ROWS)],
                            histories if kind == "everything" else None, banned=banned)  # fmt: skip

    out = run()
    assert all(0 <= t < vocab for t in out.tokens)  # type: ignore[attr-defined]
    peak = peak_bytes(run)
    bound = sampler_scratch_bytes(vocab, ROWS)
    per_token = peak / (rows_per_chunk(vocab) * vocab)
    print(f"\n{kind} vocab {vocab}: peak {peak / 2**20:.1f} MiB, bound {bound / 2**20:.1f} MiB, "
          f"{per_token:.1f} B per chunk row and token (assumed {SCRATCH_BYTES_PER_TOKEN})")  # fmt: skip
    assert peak <= bound + SLACK, (peak, bound, per_token)


@pytest.mark.parametrize("vocab", [32000, 128256])
def test_the_async_launch_allocates_at_most_the_scratch_bound(vocab: int) -> None:
    gen = torch.Generator(device="cuda").manual_seed(1)
    logits = torch.randn(ROWS, vocab, device="cuda", generator=gen) * 3
    params = _params("all_top_k_20000", vocab)
    tokens: list[torch.Tensor] = []

    def run() -> object:
        tokens[:] = [launch_batch(logits, params, [make_generator(i) for i in range(ROWS)])[0]]
        return tokens

    peak = peak_bytes(run)
    assert peak <= sampler_scratch_bytes(vocab, ROWS) + SLACK, peak
