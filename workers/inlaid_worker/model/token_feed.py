"""Token ids that stay on the device from one step to the next (async scheduling, engine/async_step.py).

With async scheduling the engine launches step N+1 before the host has read step N's sampled tokens: the decode
rows of step N+1 whose input token is step N's sample come first (one token each, so token row i is step row i) and
carry a placeholder in StepInput.token_ids; prefill chunks and admissions follow with their ids on the host. The
step's TokenFeed names, for each fed row, the row of step N's device token tensor to take instead. The runner writes
them into its device copy of the ids (the decode graphs' or the prefill graphs' static buffer, or the eager path's
ids) after the host ids arrive and before the forward reads them: one device copy (gather) in stream order, no host
sync.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenFeed:
    tokens: torch.Tensor  # [R] int64 on the runner's device: the previous step's sampled token ids
    src: tuple[int, ...] | None  # row i of this step takes tokens[src[i]]; None: row i takes tokens[i]
    num_rows: int  # rows of this step fed (the first num_rows rows)

    def write(self, ids: torch.Tensor) -> None:
        """Overwrites ids[:num_rows] (any integer dtype, the tokens' device) with the fed token ids."""
        n = self.num_rows
        if self.src is None:
            ids[:n].copy_(self.tokens[:n])
            return
        idx = torch.tensor(self.src, dtype=torch.int64).to(self.tokens.device, non_blocking=True)
        ids[:n].copy_(self.tokens.index_select(0, idx))

    def fed(self, ids: torch.Tensor) -> torch.Tensor:
        """A copy of ids (the step's host ids moved to the device) with the fed rows written in."""
        out = ids.clone()
        self.write(out)
        return out


def make_feed(tokens: torch.Tensor, src: list[int]) -> TokenFeed:
    """The feed of a step whose first len(src) rows take tokens[src[i]] (src == 0..n-1: the plain prefix copy)."""
    n = len(src)
    identity = all(s == i for i, s in enumerate(src))
    return TokenFeed(tokens, None if identity else tuple(src), n)
