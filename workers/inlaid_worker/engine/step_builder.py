"""Turns the scheduled chunks of one step into the model runner's StepInput (the only torch in scheduling).

Host cost matters here (every step, every row): the columns are filled in one pass into array('q') buffers
(C int64 appends, no per-element Python objects kept) and handed to torch without a copy (torch.frombuffer keeps
each buffer alive); a decode row (one token) takes a short path without ranges or slices. Block tables come from
each sequence's kept int64 copy (table_copy.py: only new blocks are converted). In a step where every chunk is one
token (pure decode), query_start_loc and logits_indices are 0..S and 0..S-1: those two come from a cache of CPU
tensors made once per S (no one writes into a StepInput's tensors: the runner reads them, copies them or moves them).
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence as Seq

import torch

from inlaid_worker.engine.scheduler import ScheduledChunk
from inlaid_worker.engine.table_copy import table_array
from inlaid_worker.model.step_input import StepInput
from inlaid_worker.model.token_feed import TokenFeed

_ARANGE: dict[int, torch.Tensor] = {}  # n -> tensor([0, 1, ..., n - 1]) int64 on the CPU; never written to


def arange(n: int) -> torch.Tensor:
    """0..n-1 as a shared CPU int64 tensor (made on the first request for n)."""
    t = _ARANGE.get(n)
    if t is None:
        t = _ARANGE[n] = torch.arange(n, dtype=torch.int64)
    return t


def build_step_input(
    chunks: Seq[ScheduledChunk], block_size: int, device: torch.device | str, token_feed: TokenFeed | None = None
) -> StepInput:
    """token_feed (async scheduling): a decode row whose token the host has not read yet (one past the sequence's
    known tokens) gets the placeholder id 0; the feed, passed on in the StepInput, names its device value."""
    if not chunks:
        raise ValueError("a step needs at least one scheduled chunk")
    token_ids, positions, adapter_ids, slot_mapping = array("q"), array("q"), array("q"), array("q")
    query_start_loc, context_lens, logits_indices = array("q", [0]), array("q"), array("q")
    max_blocks = max(len(c.seq.block_table) for c in chunks)
    padding = array("q", bytes(8 * max_blocks))  # zeros
    flat_tables = array("q")
    prompt_rows: array | None = None  # prompt logprobs: rows scored, their targets (the next prompt tokens)
    prompt_targets = array("q")
    prompt_top_k = 0
    total = 0
    for chunk in chunks:
        seq = chunk.seq
        table = seq.block_table
        start, n = chunk.start, chunk.num_tokens
        end = start + n
        if len(table) * block_size < end:
            raise RuntimeError(f"{seq.request_id}: {len(table)} blocks cannot hold {end} tokens")
        if n == 1:  # decode
            prompt = seq.prompt_token_ids  # seq.token_at(start), inlined; past the known tokens: fed (token_feed)
            k, out = start - len(prompt), seq.output_token_ids
            token_ids.append(prompt[start] if k < 0 else out[k] if k < len(out) or token_feed is None else 0)
            positions.append(start)
            adapter_ids.append(seq.adapter_slot)
            slot_mapping.append(table[start // block_size] * block_size + start % block_size)
        else:
            token_ids.extend(seq.token_slice(start, end))
            span = range(start, end)
            positions.extend(span)
            adapter_ids.extend([seq.adapter_slot] * n)
            slot_mapping.extend([table[p // block_size] * block_size + p % block_size for p in span])
        if seq.sampling.prompt_logprobs is not None:
            a, b = seq.prompt_span(start, end)
            if a < b:
                prompt_rows = array("q") if prompt_rows is None else prompt_rows
                prompt_rows.extend(range(total + a - start, total + b - start))
                prompt_targets.extend(seq.prompt_token_ids[a + 1 : b + 1])
                prompt_top_k = max(prompt_top_k, seq.sampling.prompt_logprobs)
        total += n
        query_start_loc.append(total)
        context_lens.append(end)
        logits_indices.append(total - 1)
        flat_tables.extend(table_array(seq))  # the sequence's kept int64 copy: no per-block conversion
        if len(table) < max_blocks:
            flat_tables.extend(padding[len(table) :])

    on_cpu = torch.device(device).type == "cpu"  # once: a torch.device costs ~0.5 us, eight columns a step

    def t(values: array) -> torch.Tensor:
        tensor = torch.frombuffer(values, dtype=torch.int64)
        return tensor if on_cpu else tensor.to(device)

    s = len(chunks)
    decode = total == s  # one token a chunk: query_start_loc is 0..S, logits_indices 0..S-1
    return StepInput(
        token_ids=t(token_ids),  # [T]
        positions=t(positions),  # [T]
        adapter_ids=t(adapter_ids),  # [T]
        slot_mapping=t(slot_mapping),  # [T]
        query_start_loc=arange(s + 1) if decode and on_cpu else t(query_start_loc),  # [S+1]
        context_lens=t(context_lens),  # [S]
        block_tables=t(flat_tables).view(s, max_blocks),  # [S, max_blocks]
        logits_indices=arange(s) if decode and on_cpu else t(logits_indices),  # [S]
        prompt_rows=None if prompt_rows is None else t(prompt_rows),  # [R]
        prompt_targets=None if prompt_rows is None else t(prompt_targets),  # [R]
        prompt_top_k=prompt_top_k,
        token_feed=token_feed,
    )
