"""Turns the scheduled chunks of one step into the model runner's StepInput (the only torch in scheduling)."""

from __future__ import annotations

from collections.abc import Sequence as Seq

import torch

from inlaid_worker.engine.scheduler import ScheduledChunk
from inlaid_worker.model.step_input import StepInput


def build_step_input(chunks: Seq[ScheduledChunk], block_size: int, device: torch.device | str) -> StepInput:
    if not chunks:
        raise ValueError("a step needs at least one scheduled chunk")
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
        if len(table) * block_size < chunk.end:
            raise RuntimeError(f"{seq.request_id}: {len(table)} blocks cannot hold {chunk.end} tokens")
        token_ids.extend(seq.token_slice(chunk.start, chunk.end))
        span = range(chunk.start, chunk.end)
        positions.extend(span)
        adapter_ids.extend([seq.adapter_slot] * chunk.num_tokens)
        slot_mapping.extend(table[p // block_size] * block_size + p % block_size for p in span)
        query_start_loc.append(query_start_loc[-1] + chunk.num_tokens)
        context_lens.append(chunk.end)
        logits_indices.append(query_start_loc[-1] - 1)
        block_tables.append(table + [0] * (max_blocks - len(table)))

    def t(values: list[int] | list[list[int]]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.int64, device=device)

    return StepInput(
        token_ids=t(token_ids),  # [T]
        positions=t(positions),  # [T]
        adapter_ids=t(adapter_ids),  # [T]
        slot_mapping=t(slot_mapping),  # [T]
        query_start_loc=t(query_start_loc),  # [S+1]
        context_lens=t(context_lens),  # [S]
        block_tables=t(block_tables),  # [S, max_blocks]
        logits_indices=t(logits_indices),  # [S]
    )
