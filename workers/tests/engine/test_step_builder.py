"""build_step_input (array buffers, a decode short path) gives exactly the tensors the list-based builder gave
(kept below as the reference) for random mixes of prefill chunks, partial chunks and decode rows; Sequence's
token_slice / token_at agree with token_ids."""

from __future__ import annotations

import random

import pytest
import torch
from inlaid_worker.engine.sampling_params import SamplingParams
from inlaid_worker.engine.scheduler import ScheduledChunk
from inlaid_worker.engine.sequence import Sequence
from inlaid_worker.engine.step_builder import build_step_input
from inlaid_worker.model.step_input import StepInput

FIELDS = ("token_ids", "positions", "adapter_ids", "slot_mapping", "query_start_loc", "context_lens",
          "block_tables", "logits_indices")  # fmt: skip


def reference_build(chunks: list[ScheduledChunk], block_size: int) -> StepInput:
    """The builder as it was before the host-overhead work (per-token Python lists, torch.tensor)."""
    token_ids: list[int] = []
    positions: list[int] = []
    adapter_ids: list[int] = []
    slot_mapping: list[int] = []
    query_start_loc = [0]
    context_lens: list[int] = []
    logits_indices: list[int] = []
    max_blocks = max(len(c.seq.block_table) for c in chunks)
    block_tables: list[list[int]] = []
    for chunk in chunks:
        seq = chunk.seq
        table = seq.block_table
        token_ids.extend(seq.token_ids[chunk.start : chunk.end])
        span = range(chunk.start, chunk.end)
        positions.extend(span)
        adapter_ids.extend([seq.adapter_slot] * chunk.num_tokens)
        slot_mapping.extend(table[p // block_size] * block_size + p % block_size for p in span)
        query_start_loc.append(query_start_loc[-1] + chunk.num_tokens)
        context_lens.append(chunk.end)
        logits_indices.append(query_start_loc[-1] - 1)
        block_tables.append(table + [0] * (max_blocks - len(table)))

    def t(values: list[int] | list[list[int]]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.int64)

    return StepInput(t(token_ids), t(positions), t(adapter_ids), t(slot_mapping), t(query_start_loc),
                     t(context_lens), t(block_tables), t(logits_indices))  # fmt: skip


def random_chunks(rng: random.Random, block_size: int) -> list[ScheduledChunk]:
    blocks = rng.sample(range(1, 10**6), 5000)  # distinct ids, enough for 40 rows of block size 1
    chunks = []
    for i in range(rng.randint(1, 40)):
        prompt = [rng.randrange(0, 1000) for _ in range(rng.randint(1, 60))]
        seq = Sequence(f"s{i}", prompt, SamplingParams(), adapter_slot=rng.randint(-1, 5))
        seq.output_token_ids = [rng.randrange(0, 1000) for _ in range(rng.choice([0, 0, 1, 7, 30]))]
        kind = rng.random()
        if kind < 0.5 and seq.num_tokens > 1:  # decode: the last token
            start, n = seq.num_tokens - 1, 1
        else:  # a prefill chunk (whole, partial, or across prompt and output after a preemption)
            start = rng.randrange(0, seq.num_tokens)
            n = rng.randint(1, seq.num_tokens - start)
        need = -(-(start + n) // block_size) + rng.choice([0, 0, 1, 2])  # a table may hold spare blocks
        seq.block_table = [blocks.pop() for _ in range(need)]
        chunks.append(ScheduledChunk(seq, start, n, start + n == seq.num_tokens))
    return chunks


@pytest.mark.parametrize("seed", range(30))
def test_tensors_match_the_reference_builder(seed: int) -> None:
    rng = random.Random(seed)
    block_size = rng.choice([1, 4, 16])
    chunks = random_chunks(rng, block_size)
    got, want = build_step_input(chunks, block_size, "cpu"), reference_build(chunks, block_size)
    for name in FIELDS:
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == torch.int64 and a.shape == b.shape and torch.equal(a, b), name
    assert got.num_tokens == sum(c.num_tokens for c in chunks) and got.num_seqs == len(chunks)


def test_a_table_too_short_for_the_chunk_is_refused() -> None:
    seq = Sequence("s", list(range(10)), SamplingParams())
    seq.block_table = [3, 4]  # 8 slots of 4
    with pytest.raises(RuntimeError, match="cannot hold 10 tokens"):
        build_step_input([ScheduledChunk(seq, 0, 10, True)], 4, "cpu")
    with pytest.raises(ValueError):
        build_step_input([], 4, "cpu")


def test_token_slice_and_token_at_agree_with_token_ids() -> None:
    rng = random.Random(3)
    for _ in range(200):
        seq = Sequence("s", [rng.randrange(9) for _ in range(rng.randint(1, 9))], SamplingParams())
        seq.output_token_ids = [rng.randrange(9) for _ in range(rng.randint(0, 9))]
        ids = seq.token_ids
        start = rng.randint(0, len(ids))
        end = rng.randint(start, len(ids))
        assert seq.token_slice(start, end) == ids[start:end]
        assert [seq.token_at(i) for i in range(len(ids))] == ids


@pytest.mark.parametrize("seed", range(10))
def test_pure_decode_steps_match_the_reference_builder(seed: int) -> None:
    # every chunk one token: query_start_loc and logits_indices come from the per-S cache of 0..n-1 tensors
    rng = random.Random(100 + seed)
    block_size = rng.choice([1, 4, 16])
    for _ in range(3):  # several steps, sizes repeating: a cached tensor must come back unchanged
        chunks = random_chunks(rng, block_size)
        chunks = [ScheduledChunk(c.seq, c.seq.num_tokens - 1, 1, True) for c in chunks]
        for c in chunks:  # the table must now reach the last token
            need = -(-c.seq.num_tokens // block_size) - len(c.seq.block_table)
            c.seq.block_table += [10**6 + rng.randrange(10**6) for _ in range(need)]
        got, want = build_step_input(chunks, block_size, "cpu"), reference_build(chunks, block_size)
        for name in FIELDS:
            a, b = getattr(got, name), getattr(want, name)
            assert a.dtype == torch.int64 and a.shape == b.shape and torch.equal(a, b), name
    again = build_step_input(chunks, block_size, "cpu")
    assert again.query_start_loc is got.query_start_loc and again.logits_indices is got.logits_indices
