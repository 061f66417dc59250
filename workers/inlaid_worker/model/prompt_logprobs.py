"""Prompt logprobs (vLLM's `prompt_logprobs`, and completions' `echo` with `logprobs`): for some rows of a step, the
log_softmax of the raw logits at that position (before logit_bias, penalties and temperature, like the sampled
tokens' logprobs), reduced on the device to what was asked: the next prompt token's logprob and rank, and the k most
likely tokens. Only those come to the host.

Memory: the vocabulary-wide work (the rows' logits, their log_softmax, the rank comparison) runs in blocks of rows
whose fp32 logits take at most `max_block_bytes` (64 MiB by default: 341 rows at a 49,152 vocabulary, 128 at
128,256), so a long prompt chunk never materialises [chunk tokens, vocab] at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MAX_BLOCK_BYTES = 64 << 20


@dataclass(frozen=True)
class PromptLogprobs:
    """One entry per StepInput.prompt_rows row, on the host."""

    logprobs: torch.Tensor  # [R] float32: log_softmax at the row's target (the next prompt token)
    ranks: torch.Tensor  # [R] int64: 1 + how many tokens are strictly more likely than the target
    top_ids: torch.Tensor  # [R, k] int64: the k most likely tokens, most likely first
    top_logprobs: torch.Tensor  # [R, k] float32


def prompt_logprobs(
    hidden: torch.Tensor,
    lm_head: torch.Tensor,
    rows: torch.Tensor,
    targets: torch.Tensor,
    top_k: int,
    max_block_bytes: int = MAX_BLOCK_BYTES,
) -> PromptLogprobs:
    """hidden [T, H] (the final norm applied), lm_head [V, H]; rows [R] and targets [R] on hidden's device."""
    vocab = int(lm_head.shape[0])
    k = min(top_k, vocab)
    per = max(1, max_block_bytes // (vocab * 4))
    lps, ranks, ids, vals = [], [], [], []
    for s in range(0, int(rows.shape[0]), per):
        # log_softmax = logits - logsumexp: ranks and the top k are those of the logits (one vocabulary-wide
        # tensor per block, not two)
        logits = torch.nn.functional.linear(hidden[rows[s : s + per]], lm_head).float()
        lse = torch.logsumexp(logits, dim=-1, keepdim=True)  # [r, 1]
        target = logits.gather(1, targets[s : s + per, None])  # [r, 1]
        lps.append((target - lse)[:, 0])
        ranks.append((logits > target).sum(dim=-1) + 1)
        if k > 0:
            v, i = torch.topk(logits, k, dim=-1, sorted=True)
            ids.append(i)
            vals.append(v - lse)
        del logits
    r = int(rows.shape[0])
    dev = hidden.device
    top_ids = torch.cat(ids) if ids else torch.empty(r, 0, dtype=torch.int64, device=dev)
    top_vals = torch.cat(vals) if vals else torch.empty(r, 0, dtype=torch.float32, device=dev)
    logprobs = torch.cat(lps) if lps else torch.empty(0, dtype=torch.float32, device=dev)
    rank = torch.cat(ranks) if ranks else torch.empty(0, dtype=torch.int64, device=dev)
    return PromptLogprobs(logprobs.cpu(), rank.cpu(), top_ids.cpu(), top_vals.cpu())
