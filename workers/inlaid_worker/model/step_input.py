"""The contract between the engine (pure scheduling, no torch math) and the model runner (all tensor work).

One engine step schedules S sequences; each contributes a contiguous chunk of new tokens (a whole or partial
prompt at prefill, one token at decode). Their tokens are flattened into T rows, grouped by sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from inlaid_worker.model.token_feed import TokenFeed


@dataclass(frozen=True)
class StepInput:
    token_ids: torch.Tensor  # [T] int64: new tokens of all scheduled sequences, sequence after sequence
    positions: torch.Tensor  # [T] int64: absolute position of each token in its sequence
    adapter_ids: torch.Tensor  # [T] int64: adapter slot per token, -1 = base model (no LoRA)
    slot_mapping: torch.Tensor  # [T] int64: KV cache slot (block_id * block_size + offset) each token writes
    query_start_loc: torch.Tensor  # [S+1] int64: row offsets of each sequence's chunk in the T rows
    context_lens: torch.Tensor  # [S] int64: tokens in the KV cache for each sequence after this step
    block_tables: torch.Tensor  # [S, max_blocks] int64: KV block ids of each sequence, padded with 0
    logits_indices: torch.Tensor  # [S] int64: row whose logits are wanted (last row of each chunk)
    # Prompt logprobs (model.prompt_logprobs): rows whose next prompt token is scored ([R] int64, ascending), that
    # token ([R] int64), and how many of the most likely tokens to return per row (the most any row asked for).
    # None: no row asks (the usual step; graphs run only such steps).
    prompt_rows: torch.Tensor | None = None
    prompt_targets: torch.Tensor | None = None
    prompt_top_k: int = 0
    # Async scheduling (model.token_feed): the rows whose input token is still on the device (the previous step's
    # sample; token_ids holds a placeholder there), written in by the runner before the forward. None: all on host.
    token_feed: TokenFeed | None = None

    @property
    def num_tokens(self) -> int:
        return int(self.token_ids.shape[0])

    @property
    def num_seqs(self) -> int:
        return int(self.context_lens.shape[0])


# Reading a StepInput's index tensors on the host: a torch op (t.max(), t[-1], then .item()) costs microseconds of
# dispatch each, several on a GPU host's CUDA build (bench/results/decode-2026-11-30-s9-b1-profile.md); a short CPU
# tensor is read as a Python list (tolist is no op), a longer one through its numpy view.
SHORT = 64


def max_int(t: torch.Tensor) -> int:
    """The largest value of a non-empty 1-D integer tensor, as a Python int."""
    if not t.is_cpu:
        return int(t.max())
    return max(t.tolist()) if t.shape[0] <= SHORT else int(t.numpy().max())


def last_int(t: torch.Tensor) -> int:
    """The last value of a non-empty 1-D integer tensor, as a Python int."""
    if not t.is_cpu:
        return int(t[-1])
    return int(t.tolist()[-1]) if t.shape[0] <= SHORT else int(t.numpy()[-1])
