"""Token ids that stay on the device from one step to the next (async scheduling, engine/async_step.py).

With async scheduling the engine launches step N+1 before the host has read step N's sampled tokens: the decode
rows of step N+1 whose input token is step N's sample come first (one token each, so token row i is step row i) and
carry a placeholder in StepInput.token_ids; prefill chunks and admissions follow with their ids on the host. The
step's TokenFeed names, for each fed row, the row of step N's device token tensor to take instead. The runner writes
them into its device copy of the ids (the decode graphs' or the prefill graphs' static buffer, or the eager path's
ids) after the host ids arrive and before the forward reads them: one device copy (gather) in stream order, no host
sync.

Inside a decode CUDA graph (model.decode_graphs, GRAPH_INPUT 1-2) the gather is the graph's first kernel instead
(stage_in): the step stages, with its other fields, each row's source index (-1: not fed) and the address of the
token tensor (two int32 words; any int64 tensor on the device, a different one each step), so nothing is queued
between the previous step's sampling and the replay but the staging copy; with `copy` the same kernel also reads the
staging buffer itself from pinned host memory through its unified address, so that copy goes too (session 17).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import triton
import triton.language as tl


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

    def sources(self) -> list[int]:
        """Row i's index into tokens, for the fed rows 0..num_rows-1."""
        return list(range(self.num_rows)) if self.src is None else list(self.src)

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


FEED_EXTRA = 2  # after a decode bucket's b row sources: the token tensor's address as two int32 words (low, high)


def address_words(addr: int) -> tuple[int, int]:
    """A 64-bit address as two int32 words (low, high), each as a signed int32 value."""
    lo, hi = addr & 0xFFFFFFFF, (addr >> 32) & 0xFFFFFFFF
    return lo - (1 << 32) if lo >= 1 << 31 else lo, hi - (1 << 32) if hi >= 1 << 31 else hi


def stage_feed(view: np.ndarray, s: int, feed: TokenFeed | None, tokens: torch.Tensor | None) -> None:
    """Fill a decode bucket's feed region (a numpy int32 view of b + FEED_EXTRA words): row i < s takes
    tokens[source] for its fed rows, -1 elsewhere (rows past the feed, padding rows), then tokens' address (0: no
    feed). tokens: the contiguous int64 device tensor the graph reads (feed.tokens, or a copy of it)."""
    b = len(view) - FEED_EXTRA
    if feed is None or tokens is None:
        view[:b] = -1
        view[b:] = 0
        return
    src = feed.sources()
    n = len(src)
    if n > s:
        raise ValueError(f"stage_feed: {n} fed rows in a step of {s}")
    view[:n] = src
    view[n:b] = -1
    view[b:] = address_words(tokens.data_ptr())


def graph_tokens(feed: TokenFeed, device: torch.device) -> torch.Tensor:
    """feed.tokens as the graph's kernel reads them: contiguous int64 on `device` (itself where it already is)."""
    t = feed.tokens
    if t.dtype == torch.int64 and t.device == device and t.dim() == 1 and t.stride(0) == 1:
        return t
    return t.to(device=device, dtype=torch.int64).contiguous()


@triton.jit
def _stage_in_kernel(src_addr, dev_ptr, n, b, feed_off, COPY: tl.constexpr, FEED: tl.constexpr,
                     BLOCK: tl.constexpr):  # fmt: skip
    pid = tl.program_id(0)
    src = src_addr.to(tl.int64).to(tl.pointer_type(tl.int32))  # (an address that fits int32 arrives as int32)
    offs = tl.arange(0, BLOCK)
    if COPY:  # the staging buffer from src (pinned host memory through its unified address) into dev
        o = pid * BLOCK + offs
        tl.store(dev_ptr + o, tl.load(src + o, mask=o < n), mask=o < n)
    if FEED:
        if pid == 0:  # rows < b <= BLOCK: this program also copied their token field (barrier: its stores first)
            tl.debug_barrier()
            m = offs < b
            s = tl.load(src + feed_off + offs, mask=m, other=-1)
            lo = tl.load(src + feed_off + b).to(tl.uint32, bitcast=True).to(tl.int64)
            hi = tl.load(src + feed_off + b + 1).to(tl.int64)
            tok = ((hi << 32) | lo).to(tl.pointer_type(tl.int64))
            fed = m & (s >= 0)
            t = tl.load(tok + tl.where(fed, s, 0), mask=fed, other=0)
            tl.store(dev_ptr + offs, t.to(tl.int32), mask=fed)


STAGE_BLOCK = 1024  # int32 words a program; >= the largest decode bucket (its rows' tokens are in program 0's block)


def stage_in(src: torch.Tensor, dev: torch.Tensor, b: int, feed_off: int, copy: bool) -> None:
    """The decode graph's first kernel: with `copy`, dev[:] = src[:] (src: the pinned staging buffer, read through
    its unified address; else src is dev); then dev[i] = tokens[source[i]] for every row i < b with a source >= 0
    (the feed region at feed_off: b sources, then the tokens' address, as stage_feed writes it). A plain launch (no
    PDL): the step's kernels after it start once it has finished."""
    n = int(dev.numel())
    if b > STAGE_BLOCK or feed_off + b + FEED_EXTRA > n:
        raise ValueError(f"stage_in: bucket {b} or feed offset {feed_off} does not fit a {n}-word buffer")
    grid = (triton.cdiv(n, STAGE_BLOCK) if copy else 1,)
    _stage_in_kernel[grid](src.data_ptr(), dev, n, b, feed_off, COPY=copy, FEED=True, BLOCK=STAGE_BLOCK,
                           num_warps=4)  # fmt: skip
