"""Cheap quality proxy: teacher-forced NLL of each test example's reference answer, given its prompt.

Mean negative log-likelihood per answer token (nats), the answer being `render_answer(target)` (target
plus <|im_end|>) after `render_prompt(prompt)`, exactly the tokens the adapters were trained on. Examples
are right-padded into batches; only answer positions count. Lower is better; the table reports the
difference to the unquantized model with the same adapter.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from inlaid_worker.tasks.chat import render_answer, render_prompt
from inlaid_worker.tasks.example import Example


def encode(tok, examples: Sequence[Example], max_len: int = 512) -> list[tuple[list[int], int]]:
    """(token ids, number of prompt tokens) per example; the answer is the rest."""
    out = []
    for e in examples:
        p = tok(render_prompt(e.prompt), add_special_tokens=False)["input_ids"]
        a = tok(render_answer(e.target), add_special_tokens=False)["input_ids"]
        ids = (p + a)[:max_len]
        if len(ids) <= len(p):
            raise ValueError(f"example {e.id}: no answer tokens left within max_len {max_len}")
        out.append((ids, len(p)))
    return out


@torch.no_grad()
def answer_nll(model, encoded: Sequence[tuple[list[int], int]], batch: int = 16, device: str = "cpu") -> float:
    """Mean NLL (nats) per answer token over all examples."""
    total, count = 0.0, 0
    for b0 in range(0, len(encoded), batch):
        chunk = encoded[b0 : b0 + batch]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        labels = torch.full((len(chunk), width), -100, dtype=torch.long)
        for r, (seq, n_prompt) in enumerate(chunk):
            ids[r, : len(seq)] = torch.tensor(seq)
            mask[r, : len(seq)] = 1
            labels[r, n_prompt : len(seq)] = torch.tensor(seq[n_prompt:])
        # the LM head (a fifth of the model's FLOPs) only at positions that predict an answer token
        hidden = model.model(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state  # [B, S, D]
        tgt = labels[:, 1:].to(device)
        keep = tgt != -100
        logp = torch.log_softmax(model.lm_head(hidden[:, :-1][keep]).float(), dim=-1)  # [M, V]
        total += float(-logp.gather(-1, tgt[keep].unsqueeze(-1)).sum())
        count += int(keep.sum())
    return total / count
