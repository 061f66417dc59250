"""On CUDA, sampling a step's 256 sampling rows among 257 logits rows in place (rows=, as the engine now passes them)
allocates at most sampler_scratch_bytes plus allocator slack, below one float32 copy of the rows at 128k, where the
engine's former copy (logits[rows]) took 256 x V x 4 bytes more; the tokens equal the copy's exactly (the same values
in the same chunks: the same kernels on the same inputs). Skipped without CUDA; -s prints the measured peaks."""

from __future__ import annotations

import pytest
import torch
from device_sampler_cases import worst_histories, worst_params
from gpu_peak import SLACK, peak_bytes
from inlaid_worker.engine.device_sampler import launch_batch, sample_batch, sampler_scratch_bytes
from inlaid_worker.engine.sampler import make_generator
from inlaid_worker.engine.sampling_params import SamplingParams

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

ROWS = 256


@pytest.mark.parametrize("vocab", [32000, 128256])
def test_rows_in_place_allocate_no_copy_and_pick_the_copys_tokens(vocab: int) -> None:
    gen = torch.Generator(device="cuda").manual_seed(2)
    logits = torch.randn(ROWS + 1, vocab, device="cuda", generator=gen) * 3
    at = [i for i in range(ROWS + 1) if i != 100]  # row 100: a prompt chunk that does not sample yet
    params, histories = worst_params(ROWS), worst_histories(ROWS)
    plain = [SamplingParams(temperature=0.8, top_p=0.9, seed=i) for i in range(ROWS)]

    def full(source: torch.Tensor, rows: list[int] | None) -> object:
        gens = [make_generator(i) for i in range(ROWS)]
        return sample_batch(source, params, gens, histories, banned=[(2, 3)] * ROWS, rows=rows)

    def launch(source: torch.Tensor, rows: list[int] | None) -> list[int]:
        return launch_batch(source, plain, [make_generator(i) for i in range(ROWS)], rows=rows)[0].tolist()

    assert full(logits, at) == full(logits[at], None)
    assert launch(logits, at) == launch(logits[at], None)
    bound = sampler_scratch_bytes(vocab, ROWS)
    in_place = peak_bytes(lambda: full(logits, at))
    launched = peak_bytes(lambda: launch(logits, at))
    copied = peak_bytes(lambda: full(logits[at], None))  # the engine's former copy, then the batch
    mib = 2**20
    print(f"\nvocab {vocab}: in place {in_place / mib:.1f} MiB, launch {launched / mib:.1f} MiB, with the copy "
          f"{copied / mib:.1f} MiB, bound {bound / mib:.1f} MiB, a copy {ROWS * vocab * 4 / mib:.1f} MiB")  # fmt: skip
    assert in_place <= bound + SLACK and launched <= bound + SLACK, (in_place, launched, bound)
    assert copied >= ROWS * vocab * 4 and copied > in_place, (copied, in_place)
