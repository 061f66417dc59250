"""Batched sampling on the logits' own device: sampler.sample_rows's semantics, without a loop over rows.

The logits stay where the runner left them (the GPU); only the sampled token ids, one overflow flag per row, and
the logprobs that rows ask for (the chosen token's and the top N) come to the host, in one copy each. Per batch:
the rows' logit biases and min_tokens bans (one scatter each, on copies of those rows only), penalties from the
rows' token histories (a count matrix built by scatters), then one argmax for the greedy rows, and for the
sampled rows temperature, min-p (restrict_logits: x - max(x) < ln(min_p)), top-k, the top-p nucleus
(restrict_logits: the smallest set of most likely tokens whose mass reaches top_p, the first token always kept,
with every token tied with its least likely one, so the set does not depend on how the sort orders ties), softmax
and the inverse-CDF draw. Every full-vocabulary temporary is made for one chunk of at most rows_per_chunk(vocab)
rows at a time (the float32 copy of the chunk's logits, its bias, ban and penalty copies, the sampling's scratch, the
logprobs' log-softmax), so one call's device scratch stays under sampler_scratch_bytes(vocab, rows) whatever the
batch (the engine's start-up check of free device memory counts that bound: engine/factory.py); top-k runs on the
rows that set one and the nucleus (a sort) on the rows with top_p < 1 only; a batch whose rows set no bias, ban or
penalty skips those steps. Row indices go to the device in small copies per call and per chunk, never one per row:
the work rows' once per call (riding in the sampled rows' per-row numbers when no row has a bias, a ban or
penalties), those of rows= once (below), per chunk those of the rows a step touches (the biased, banned, penalized
or greedy rows among them, a chunk's sampled subset), and once those of the logprobs rows. The batch may be some rows
of the logits (rows=: the sampling rows of a step whose other rows do not sample, as the engine passes them):
each chunk gathers its rows from the logits in place, so no copy of the batch's rows is made. Each sampled row's one
uniform number comes from its own CPU generator, as sampler.draw takes it, so a request's tokens depend only on its
own logits and seed; on CPU tensors this path picks the same tokens as sample_rows, on the GPU the same up to float
rounding (a draw within rounding of a CDF step, or a nucleus edge). The engine uses it for GPU logits; for CPU
logits it keeps sample_rows, as fast or faster there (bench/results/sampling-2026-11-30-*).

Rows the batch does not take go to sample_rows on host copies of those rows only: rows with a grammar
(structured outputs: xgrammar fills their bitmasks on the host), and rows whose float32 values overflowed to +inf
(a tiny temperature or repetition penalty, or +inf logits; sample_rows redoes them in float64), which are known
only after the batch ran, so they reuse the uniform the batch drew for them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from inlaid_worker.engine.sampler import (
    TOP_P_FIRST_K,
    SamplerOutput,
    TokenHistory,
    TokenLogprobs,
    check_rows,
    sample_rows,
    uniform,
)
from inlaid_worker.engine.sampling_params import SamplingParams

if TYPE_CHECKING:
    from inlaid_worker.engine.structured import GrammarState

NEG_INF = float("-inf")
# every full-vocabulary temporary (the chunk's float32 logits, bias/ban and penalty copies and counts, scaled logits,
# masks, probabilities, the top-p sort's values and ids, the float64 CDF, the logprobs' log-softmax) is made for at
# most this many bytes' worth of rows at a time: peak scratch does not grow with the batch (2.56 MB a row at a
# 32k vocabulary: 26 rows a chunk; 6 at 128k)
SCRATCH_BYTES = 64 << 20
# an upper bound of the above, alive at once, per row and vocabulary entry, including what the ops allocate inside
# (measured on the GPU: workers/tests/engine/test_device_sampler_memory_gpu.py). The tensors alive between ops stay
# under 30 B (test_device_sampler_scratch.py counts them); the sorts need more inside: the CUDA sort of the top-p
# rows (a segmented radix sort below 128 rows) keeps about 32 B of its own buffers per element (keys and values
# out, their alternates), about 52-56 B in all at its peak, and a top-k above ~4096 makes torch.topk sort the whole
# row, about 70 B (its values and int64 ids besides the sort's buffers). 80 covers both with a margin.
SCRATCH_BYTES_PER_TOKEN = 80
# the rows' token histories go to the device (penalties: one int64 id per token) at most max(this, a byte per row
# and vocabulary entry of the chunk / 8) ids at a time: inside the chunk's scratch, plus at most 8 KiB
HISTORY_IDS_MIN_COPY = 1024
# per row of the batch, whatever the vocabulary: its token, flags, per-row parameters and index tensors, and its
# logprobs (<= 1 + 2 * MAX_LOGPROBS float64 values), generously
SCRATCH_BYTES_PER_ROW = 1024


def rows_per_chunk(vocab: int) -> int:
    """How many rows one chunk of the batch's full-vocabulary work takes (>= 1)."""
    return max(1, SCRATCH_BYTES // (SCRATCH_BYTES_PER_TOKEN * max(1, vocab)))


def sampler_scratch_bytes(vocab: int, max_num_seqs: int) -> int:
    """An upper bound of the device memory that one sample_batch or launch_batch call of at most max_num_seqs rows
    allocates besides its logits (which the caller holds): one chunk's full-vocabulary scratch (<= SCRATCH_BYTES,
    or one row's where a row alone exceeds it; it includes the copies of history ids but for HISTORY_IDS_MIN_COPY of
    them), and a few bytes per row. Tensor bytes: the CUDA caching allocator's rounding of blocks comes on top."""
    if vocab < 1 or max_num_seqs < 1:
        raise ValueError(f"vocab and max_num_seqs must be positive, got {vocab} and {max_num_seqs}")
    chunk = min(max_num_seqs, rows_per_chunk(vocab)) * SCRATCH_BYTES_PER_TOKEN * vocab
    return chunk + HISTORY_IDS_MIN_COPY * 8 + max_num_seqs * SCRATCH_BYTES_PER_ROW


def nucleus_strategy(device: torch.device) -> str:
    """How the batch finds top-p nuclei: "sort" (one full sort of the top-p rows, no host sync: the GPU) or "topk"
    (the TOP_P_FIRST_K most likely tokens first, a full sort only for rows whose mass falls short: the CPU)."""
    return "sort" if device.type == "cuda" else "topk"


@torch.inference_mode()
def sample_batch(
    logits: torch.Tensor,
    params: Seq[SamplingParams],
    generators: Seq[torch.Generator | None],
    histories: Seq[TokenHistory | None] | None = None,
    grammars: Seq[GrammarState | None] | None = None,
    nucleus: str | None = None,
    banned: Seq[Seq[int] | None] | None = None,
    rows: Seq[int] | None = None,
) -> SamplerOutput:
    """One token per row, with logprobs for the rows that ask: sample_rows's result, batched on logits.device.

    logits: [S, V] (any float dtype, any device; never modified); the other arguments as sample_rows's.
    nucleus: "sort" | "topk" (nucleus_strategy), None: by device.
    rows: the batch's rows of logits (row i is logits[rows[i]]: the sampling rows of a step where some rows do not
    sample), read in place chunk by chunk, never copied all at once; None: every row of logits.
    """
    check_rows(logits, params, generators, histories, grammars, banned, rows)
    at = _selection(logits, rows)
    n = len(params)
    host = [i for i in range(n) if grammars is not None and grammars[i] is not None]
    if len(host) == n:
        return _on_host(logits, host, params, generators, histories, grammars, None, banned, at)
    skip = set(host)
    batch = [i for i in range(n) if i not in skip]
    tokens: list[int] = [0] * n
    logprobs: list[TokenLogprobs | None] = [None] * n
    b_params = [params[i] for i in batch]
    b_hist = None if histories is None else [histories[i] for i in batch]
    b_ban = None if banned is None else [banned[i] for i in batch]
    if at is None:  # the batch reads its rows of logits, no copy of them all
        sel = None if len(batch) == n else batch
    else:
        sel = [at[i] for i in batch]
    out = _Batch(logits, b_params, [generators[i] for i in batch], b_hist, nucleus, b_ban, sel).run()
    for j, i in enumerate(batch):
        tokens[i], logprobs[i] = out.tokens[j], out.logprobs[j]
    if out.overflowed:  # redo those rows on the host in float64, with the uniforms the batch drew for them
        redone = [batch[j] for j in out.overflowed]
        u = [out.uniforms.get(j) for j in out.overflowed]
        redo = _on_host(logits, redone, params, generators, histories, None, u, banned, at)
        for i in redone:
            tokens[i], logprobs[i] = redo.tokens[i], redo.logprobs[i]
    if host:
        done = _on_host(logits, host, params, generators, histories, grammars, None, banned, at)
        for i in host:
            tokens[i], logprobs[i] = done.tokens[i], done.logprobs[i]
    return SamplerOutput(tokens, logprobs)


@torch.inference_mode()
def launch_batch(
    logits: torch.Tensor,
    params: Seq[SamplingParams],
    generators: Seq[torch.Generator | None],
    banned: Seq[Seq[int] | None] | None = None,
    rows: Seq[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """sample_batch's batch for rows without grammars, penalties or logprobs, left on logits.device: (tokens [R]
    int64, overflowed [R] bool, one per params entry), nothing read back. A row flagged overflowed holds no valid
    token (sample_batch redoes such rows on the host; async scheduling admits only rows that cannot overflow on finite
    logits). rows: as sample_batch's (the batch's rows of logits, read in place; None: every row)."""
    check_rows(logits, params, generators, None, None, banned, rows)
    if any(p.has_penalties or p.logprobs is not None for p in params):
        raise ValueError("launch_batch takes no rows with penalties or logprobs")
    ban, sel = None if banned is None else list(banned), _selection(logits, rows)
    tokens, overflow, _ = _Batch(logits, list(params), list(generators), None, None, ban, sel).launch()
    return tokens, overflow


def _selection(logits: torch.Tensor, rows: Seq[int] | None) -> list[int] | None:
    """rows as a list, or None where they are every row of logits in order (the batch then reads logits whole)."""
    if rows is None or (len(rows) == logits.shape[0] and all(r == i for i, r in enumerate(rows))):
        return None
    return list(rows)


def _on_host(
    logits: torch.Tensor,
    rows: list[int],
    params: Seq[SamplingParams],
    generators: Seq[torch.Generator | None],
    histories: Seq[TokenHistory | None] | None,
    grammars: Seq[GrammarState | None] | None,
    uniforms: list[float | None] | None,
    banned: Seq[Seq[int] | None] | None,
    at: list[int] | None = None,
) -> SamplerOutput:
    """sample_rows on host copies of `rows`; the result is indexed like the whole batch (other rows: 0 / None).
    at: batch row i's row of logits (None: row i)."""
    out = sample_rows(
        _host_rows(logits, rows if at is None else [at[i] for i in rows]),
        [params[i] for i in rows],
        [generators[i] for i in rows],
        None if histories is None else [histories[i] for i in rows],
        None if grammars is None else [grammars[i] for i in rows],
        uniforms,
        None if banned is None else [banned[i] for i in rows],
    )
    tokens, logprobs = [0] * len(params), [None] * len(params)
    for j, i in enumerate(rows):
        tokens[i] = out.tokens[j]
        logprobs[i] = out.logprobs[j]  # type: ignore[call-overload]
    return SamplerOutput(tokens, logprobs)  # type: ignore[arg-type]


def _host_rows(logits: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """logits[rows] as float32 on the CPU, copied off the device rows_per_chunk rows at a time."""
    step = rows_per_chunk(int(logits.shape[-1]))
    if logits.device.type == "cpu" or len(rows) <= step:  # one copy (none on the CPU); also 0 rows: no cat([])
        return logits[rows].float().cpu()
    return torch.cat([logits[rows[a : a + step]].float().cpu() for a in range(0, len(rows), step)])


@dataclass(frozen=True)
class _RowPlan:
    """How _Batch.launch treats a batch's rows (_classify)."""

    sampled: list[int]  # rows that sample (not greedy)
    penalized: list[int]  # rows with penalties
    changed: list[int]  # rows with a logit bias, a ban or penalties
    adjusted: bool  # some row has a logit bias or a ban
    plain_greedy: bool  # some greedy row has none of those: its token is the logits' argmax


def _classify(params: list[SamplingParams], banned: list[Seq[int] | None] | None) -> _RowPlan:
    """The rows' _RowPlan, in one pass over them (rows in batch order in each list)."""
    sampled: list[int] = []
    penalized: list[int] = []
    changed: list[int] = []
    adjusted = plain_greedy = False
    for j, p in enumerate(params):
        pen = p.has_penalties
        if pen:
            penalized.append(j)
        moved = pen
        if p.logit_bias or (banned is not None and banned[j]):
            adjusted = moved = True
        if moved:
            changed.append(j)
        if not p.greedy:
            sampled.append(j)
        elif not moved:
            plain_greedy = True
    return _RowPlan(sampled, penalized, changed, adjusted, plain_greedy)


def plain_argmax(params: list[SamplingParams], banned: list[Seq[int] | None] | None) -> bool:
    """Every row greedy with logits nothing moves (_classify: no bias, ban or penalties): launch_batch would return
    their argmax with zero overflow flags (engine.async_step's one-kernel greedy path takes such steps)."""
    plan = _classify(params, banned)
    return not plan.sampled and not plan.changed


@dataclass(frozen=True)
class _Result:
    tokens: list[int]
    logprobs: list[TokenLogprobs | None]
    overflowed: list[int]  # rows to redo on the host (float32 overflowed to +inf)
    uniforms: dict[int, float]  # row -> the uniform drawn for it (sampled rows)


class _Batch:
    """One batch of rows without grammars, sampled on their device (sample_batch). Its rows are rows `sel` of logits
    (None: every row); every full-vocabulary temporary is made for one chunk of rows_per_chunk(vocab) rows."""

    def __init__(
        self,
        logits: torch.Tensor,
        params: list[SamplingParams],
        generators: list[torch.Generator | None],
        histories: list[TokenHistory | None] | None,
        nucleus: str | None,
        banned: list[Seq[int] | None] | None = None,
        sel: list[int] | None = None,
    ) -> None:
        self.logits = logits  # never written
        self.sel = sel
        self._sel_dev: torch.Tensor | None = None  # sel on the device (_sel_index)
        self.params, self.generators, self.histories = params, generators, histories
        self.banned = banned
        self.dev = logits.device
        self.vocab = int(logits.shape[-1])
        self.nucleus = nucleus or nucleus_strategy(self.dev)
        if self.nucleus not in ("sort", "topk"):
            raise ValueError(f"nucleus must be 'sort' or 'topk', got {self.nucleus!r}")

    def _tensor(self, values: list[float] | list[int], dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype).to(self.dev, non_blocking=True)

    def _raw(self, rows: list[int], index: torch.Tensor | None) -> tuple[torch.Tensor, bool]:
        """(the float32 logits of the batch's `rows` (sorted), whether that tensor is this call's own copy (False: it
        is the caller's logits, never to be written)). index: those rows' rows of logits (_global) on the device
        already (a slice of one upload per call); None only where `rows` are every row of the logits."""
        if self.sel is None and len(rows) == len(self.params):
            x = self.logits.float()
            return x, x is not self.logits
        assert index is not None, "index is None only where the rows are every row of the logits"
        return self.logits[index].float(), True

    def _sel_index(self) -> torch.Tensor:
        """sel on the device: one upload per call, on first use."""
        if self._sel_dev is None:
            assert self.sel is not None
            self._sel_dev = self._tensor(self.sel, torch.long)
        return self._sel_dev

    def _global(self, rows: list[int]) -> list[int]:
        """The batch's `rows` as rows of logits."""
        return rows if self.sel is None else [self.sel[j] for j in rows]

    def run(self) -> _Result:
        tokens, overflow, uniforms = self.launch()
        r = len(self.params)
        packed = torch.stack([tokens, overflow.long()]).cpu()  # one copy (and the step's one sync)
        token_list, flags = packed[0].tolist(), packed[1].tolist()
        overflowed = [j for j in range(r) if flags[j]]
        return _Result(token_list, self._logprobs(tokens, token_list), overflowed, uniforms)

    def launch(self) -> tuple[torch.Tensor, torch.Tensor, dict[int, float]]:
        """The rows' tokens and overflow flags as device tensors [R] (int64, bool), and the uniforms drawn: every
        launch queued, nothing read back (no host sync: async scheduling reads them later, engine/async_step.py).
        The rows that need full-vocabulary work (sampled, or with a bias, a ban or penalties) go in chunks of
        rows_per_chunk(vocab); the other greedy rows take one argmax of the logits as they are."""
        r = len(self.params)
        plan = _classify(self.params, self.banned)
        sampled, penalized, changed, adjusted = plan.sampled, plan.penalized, plan.changed, plan.adjusted
        # one uniform per sampled row, from its own generator (sampler.draw), drawn first: every per-row number
        # then goes to the device in one copy
        uniforms = {j: uniform(self.generators[j]) for j in sampled}
        if penalized:
            self._check_histories(penalized)
        if plan.plain_greedy:  # the greedy rows' tokens
            tokens = self.logits.argmax(dim=-1)  # = argmax of the float32 values (exact widening)
            if self.sel is not None:
                tokens = tokens[self._sel_index()]
        else:
            tokens = torch.zeros(r, dtype=torch.long, device=self.dev)
        overflow = torch.zeros(r, dtype=torch.bool, device=self.dev)
        work = sorted(set(sampled).union(changed)) if changed else sampled
        if not work:
            return tokens, overflow, uniforms
        rows = [self.params[j] for j in sampled]
        v = self.vocab
        # every sampled row's numbers in one copy: temperature, top_p, k, the uniform, the row's index in the batch
        # (none without sampled rows: the work is then greedy rows with a bias, a ban or penalties)
        ks = [p.top_k if 0 < p.top_k < v else v for p in rows]
        per_row = None
        if sampled:
            per_row = self._tensor([p.temperature for p in rows] + [p.top_p for p in rows] + ks
                                   + [uniforms[j] for j in sampled] + sampled, torch.float64)  # fmt: skip
        at = {j: m for m, j in enumerate(sampled)} if changed else {}  # row -> its place in sampled
        step = rows_per_chunk(v)
        # the work rows' rows of logits in one copy, sliced per chunk (none where one chunk reads the logits whole).
        # Without changed rows the work rows are the sampled rows, already on the device as per_row's last segment
        # (as _sampled reads its idx): no second upload (with sel, their rows of logits are sel's there)
        whole = self.sel is None and len(work) == r and step >= r
        if whole:
            index = None
        elif not changed:
            assert per_row is not None  # work is sampled, not empty
            index = per_row[4 * len(sampled) :].long()
            if self.sel is not None:
                index = self._sel_index()[index]
        else:
            index = self._tensor(self._global(work), torch.long)
        for a in range(0, len(work), step):
            chunk = work[a : a + step]
            x, own = self._raw(chunk, None if index is None else index[a : a + step])
            if changed:
                if adjusted:
                    x, own = self._adjusted(x, own, chunk)
                if penalized:
                    x = self._penalized(x, own, chunk, overflow)
                local = [m for m, j in enumerate(chunk) if j in at]  # the chunk's sampled rows
                first = at[chunk[local[0]]] if local else 0
            else:  # work is sampled: every row of the chunk samples, sampled[a:a + len(chunk)]
                local, first = list(range(len(chunk))), a
            if len(local) < len(chunk):  # its greedy rows (each one with a bias, a ban or penalties)
                greedy = [m for m, j in enumerate(chunk) if j not in at]
                where = self._tensor(greedy + [chunk[m] for m in greedy], torch.long)
                tokens[where[len(greedy) :]] = x.argmax(dim=-1)[where[: len(greedy)]]
            if local:  # x handed over in a box, so that its memory goes as soon as the sampling has scaled it
                box = [x]
                del x
                assert per_row is not None  # local: some row of the chunk samples
                tokens = self._sampled(box, chunk, local, first, per_row, ks, tokens, overflow)
        return tokens, overflow, uniforms

    def _sampled(
        self, box: list[torch.Tensor], chunk: list[int], local: list[int], first: int, per_row: torch.Tensor,
        ks: list[int], tokens: torch.Tensor, overflow: torch.Tensor,
    ) -> torch.Tensor:  # fmt: skip
        """tokens with the draws of the chunk's sampled rows (rows `local` of x = box.pop(), the chunk's logits after
        bias, bans and penalties; sampled[first:first + len(local)]) written in, overflow updated in place. x is not
        written."""
        x = box.pop()
        r, n, v = int(tokens.shape[0]), int(per_row.shape[0]) // 5, self.vocab
        a, b = first, first + len(local)
        c = [self.params[chunk[m]] for m in local]
        temperature, top_p = per_row[a:b, None].float(), per_row[n + a : n + b, None].float()
        k, u = per_row[2 * n + a : 2 * n + b].long(), per_row[3 * n + a : 3 * n + b]
        whole = b - a == r  # every row of the batch, in one chunk
        idx = None if whole else per_row[4 * n + a : 4 * n + b].long()
        if len(local) < x.shape[0]:
            x = x[self._tensor(local, torch.long)]
        scaled = x / temperature
        del x
        hot = torch.isposinf(scaled).any(dim=-1)
        if idx is None:
            overflow |= hot
        else:
            overflow[idx] |= hot
        if max(p.min_p for p in c) > 0.0:  # ln(min_p) per row (-inf: off)
            cut = self._tensor([math.log(p.min_p) if p.min_p > 0.0 else NEG_INF for p in c], torch.float32)
            scaled = scaled.masked_fill(scaled - scaled.amax(dim=-1, keepdim=True) < cut[:, None], NEG_INF)
        some = [m for m in range(b - a) if ks[a + m] < v]  # top-k rows of the chunk
        if some:
            scaled = self._rows(scaled, some, lambda y, s: self._top_k(y, k[s], max(ks[a + m] for m in some)))
        some = [m for m in range(b - a) if c[m].top_p < 1.0]  # top-p rows: only they are sorted
        if some:
            scaled = self._rows(scaled, some, lambda y, s: self._top_p(y, top_p[s]))
        cdf = torch.softmax(scaled, dim=-1).double().cumsum(dim=-1)  # = cumsum(dtype=float64), 4x faster on CPU
        del scaled
        drawn = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)[:, 0].clamp_max(v - 1)
        del cdf
        if idx is None:
            return drawn
        tokens[idx] = drawn
        return tokens

    def _rows(
        self, x: torch.Tensor, some: list[int], fn: Callable[[torch.Tensor, torch.Tensor | slice], torch.Tensor]
    ) -> torch.Tensor:
        """fn applied to rows `some` of x only (fn(rows, their selector)), written into x (a chunk's own scratch, never
        the caller's logits); fn's result when `some` is every row."""
        if len(some) == x.shape[0]:
            return fn(x, slice(None))
        s = self._tensor(some, torch.long)
        return x.index_copy_(0, s, fn(x[s], s))

    def _adjusted(self, x: torch.Tensor, own: bool, chunk: list[int]) -> tuple[torch.Tensor, bool]:
        """(x, the chunk's logits, with its rows that set a logit_bias or have a min_tokens ban replaced
        (sampler.adjust_row: the bias added, then the banned ids set to -inf unless that leaves the row no token),
        whether the result is this call's own tensor); x itself if no row of the chunk has either."""
        v = self.vocab
        biased = [(m, self.params[j].logit_bias) for m, j in enumerate(chunk) if self.params[j].logit_bias]
        bans = [(m, self.banned[j]) for m, j in enumerate(chunk) if self.banned is not None and self.banned[j]]
        if not biased and not bans:
            return x, own
        rows = sorted({m for m, _ in biased} | {m for m, _ in bans})
        pos = {m: k for k, m in enumerate(rows)}
        idx = self._tensor(rows, torch.long)
        y = x[idx]  # a copy
        if biased:
            at = [(pos[m], t, b) for m, bias in biased for t, b in bias if t < v]
            r, c = self._tensor([a[0] for a in at], torch.long), self._tensor([a[1] for a in at], torch.long)
            y[r, c] = y[r, c] + self._tensor([a[2] for a in at], torch.float32)  # ids unique per row
        if bans:
            at2 = [(pos[m], t) for m, ban in bans for t in ban if 0 <= t < v]  # type: ignore[union-attr]
            r, c = self._tensor([a[0] for a in at2], torch.long), self._tensor([a[1] for a in at2], torch.long)
            masked = y.index_put((r, c), torch.full((), NEG_INF, device=self.dev))
            y = torch.where((masked > NEG_INF).any(dim=-1, keepdim=True), masked, y)
            del masked
        return (x.index_copy_(0, idx, y) if own else x.index_copy(0, idx, y)), True

    def _check_histories(self, rows: list[int]) -> None:
        if self.histories is None:
            raise ValueError("penalties need the rows' token histories")
        for j in rows:
            if self.histories[j] is None:
                raise ValueError(f"row {j} sets penalties but has no token history")

    def _penalized(self, x: torch.Tensor, own: bool, chunk: list[int], overflow: torch.Tensor) -> torch.Tensor:
        """x (the chunk's logits after logit bias and bans) with the chunk's penalized rows replaced, and overflow set
        for those rows (whether they hold +inf); vLLM's order as sampler.penalize_row: repetition over prompt and
        output, then frequency, then presence. A copy where x is not this call's own."""
        local = [m for m, j in enumerate(chunk) if self.params[j].has_penalties]
        if not local:
            return x
        assert self.histories is not None  # launch checked
        v = self.vocab
        out_ids, seen_ids = [], []
        for k, m in enumerate(local):  # flat ids into a [p, v + 1] matrix (column v: ids outside the vocab)
            history = self.histories[chunk[m]]
            assert history is not None
            out_ids.append(_clip(_ids(history.output), v) + k * (v + 1))
            if self.params[chunk[m]].repetition_penalty != 1.0:
                seen_ids.append(_clip(_ids(history.prompt), v) + k * (v + 1))
        p = len(local)
        counts = torch.zeros(p, v + 1, dtype=torch.float32, device=self.dev)
        per_copy = max(HISTORY_IDS_MIN_COPY, len(chunk) * v // 8)  # ids: at most a byte per chunk row and token
        self._scatter(counts, torch.cat(out_ids), per_copy, accumulate=True)
        counts = counts[:, :v]
        in_output = counts > 0
        params = [self.params[chunk[m]] for m in local]
        idx = self._tensor(local + [chunk[m] for m in local], torch.long)
        y = x[idx[:p]]
        rep = [q.repetition_penalty for q in params]
        if any(r != 1.0 for r in rep):
            seen = torch.zeros(p, v + 1, dtype=torch.bool, device=self.dev)
            if seen_ids:
                self._scatter(seen, torch.cat(seen_ids), per_copy, accumulate=False)
            seen = seen[:, :v] | in_output
            r = self._tensor(rep, torch.float32)[:, None]
            y = torch.where(seen, torch.where(y > 0, y / r, y * r), y)
            del seen
        freq = [q.frequency_penalty for q in params]
        if any(f != 0.0 for f in freq):
            y = y - self._tensor(freq, torch.float32)[:, None] * counts
        del counts
        pres = [q.presence_penalty for q in params]
        if any(q != 0.0 for q in pres):
            y = torch.where(in_output, y - self._tensor(pres, torch.float32)[:, None], y)
        del in_output
        overflow[idx[p:]] = torch.isposinf(y).any(dim=-1)
        return x.index_copy_(0, idx[:p], y) if own else x.index_copy(0, idx[:p], y)

    def _scatter(self, into: torch.Tensor, flat: torch.Tensor, per_copy: int, accumulate: bool) -> None:
        """into.view(-1)[flat] += 1 (accumulate) or = True, the host ids `flat` sent per_copy at a time (float32
        counts of whole numbers: exact in any order)."""
        dest = into.view(-1)
        for a in range(0, int(flat.numel()), per_copy):
            ids = _to(flat[a : a + per_copy], self.dev)
            one = torch.ones(1, dtype=into.dtype, device=self.dev).expand(int(ids.numel()))
            dest.index_put_((ids,), one, accumulate=accumulate)

    @staticmethod
    def _top_k(x: torch.Tensor, k: torch.Tensor, kmax: int) -> torch.Tensor:
        """Tokens below each row's k-th largest value set to -inf (ties with it kept, as restrict_logits keeps
        them); rows whose k is the vocabulary size are untouched."""
        values = torch.topk(x, kmax, dim=-1).values  # [R, kmax], sorted
        kth = values.gather(1, (k.clamp_max(kmax) - 1)[:, None])
        kth = torch.where(k[:, None] >= x.shape[-1], torch.full_like(kth, NEG_INF), kth)
        return x.masked_fill(x < kth, NEG_INF)

    def _top_p(self, x: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
        """restrict_logits's nucleus for each row of x (top_p 1: all tokens; _sampled passes only rows with top_p < 1):
        the most likely tokens until their mass reaches top_p, and the tokens tied with the last of them."""
        probs = torch.softmax(x, dim=-1)
        if self.nucleus == "sort":
            vals = torch.sort(probs, dim=-1, descending=True).values
            mass = torch.cumsum(vals, dim=-1)
        else:
            vals, mass = self._top_first(probs, top_p)
        inside = ((mass - vals) < top_p).sum(dim=-1, keepdim=True)  # a prefix: its length, >= 1 (NaN rows: 0)
        edge = vals.gather(1, (inside - 1).clamp_min(0))
        edge = torch.where(top_p >= 1.0, torch.zeros_like(edge), edge)
        return x.masked_fill(probs < edge, NEG_INF)

    def _top_first(self, probs: torch.Tensor, top_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sorted probabilities, their running mass) of the TOP_P_FIRST_K most likely tokens of each row, padded
        with zeros; all of them where that mass is short of top_p (one host sync: fine on the CPU)."""
        k = min(self.vocab, TOP_P_FIRST_K)
        vals = torch.topk(probs, k, dim=-1).values
        mass = torch.cumsum(vals, dim=-1)
        short = ((mass[:, -1:] < top_p) & (top_p < 1.0))[:, 0].nonzero().flatten()
        if k == self.vocab or not short.numel():
            return vals, mass
        full = torch.topk(probs[short], self.vocab, dim=-1).values
        pad = torch.zeros(probs.shape[0], self.vocab - k, dtype=vals.dtype, device=vals.device)
        vals = torch.cat([vals, pad], dim=1).index_copy(0, short, full)
        return vals, torch.cumsum(vals, dim=-1)

    def _logprobs(self, tokens: torch.Tensor, token_list: list[int]) -> list[TokenLogprobs | None]:
        """log_softmax of the raw logits at the chosen token and the top N (sampler.compute_logprobs)."""
        result: list[TokenLogprobs | None] = [None] * len(self.params)
        rows = [j for j, p in enumerate(self.params) if p.logprobs is not None]
        if not rows:
            return result
        k = min(max(int(self.params[j].logprobs or 0) for j in rows), self.vocab)
        step = rows_per_chunk(self.vocab)
        n = len(rows)  # the rows' places in the batch, then (with sel) in logits: one copy, sliced per chunk
        ids = self._tensor(rows if self.sel is None else rows + self._global(rows), torch.long)
        at, glob = ids[:n], ids if self.sel is None else ids[n:]
        chunks = []
        for a in range(0, n, step):  # the log-softmax for one chunk of rows at a time
            chunk = rows[a : a + step]
            x, _ = self._raw(chunk, glob[a : a + step])
            lp = torch.log_softmax(x, dim=-1)
            del x
            parts = [lp.gather(1, tokens[at[a : a + step]][:, None]).double()]
            if k > 0:
                top = torch.topk(lp, k, dim=-1, sorted=True)
                parts += [top.values.double(), top.indices.double()]  # ids < 2^53: exact in float64
            del lp
            chunks.append(torch.cat(parts, dim=1))
        host = (chunks[0] if len(chunks) == 1 else torch.cat(chunks)).cpu().tolist()  # one copy
        for m, j in enumerate(rows):
            top = min(int(self.params[j].logprobs or 0), k)  # k: at most the vocabulary
            row = host[m]
            pairs = zip(row[1 : 1 + top], row[1 + k : 1 + k + top], strict=True)  # top <= k: as many values as ids
            top_pairs = tuple((int(i), float(v)) for v, i in pairs)
            result[j] = TokenLogprobs(token_list[j], float(row[0]), top_pairs)
        return result


def _ids(tokens: Seq[int] | torch.Tensor) -> torch.Tensor:
    if isinstance(tokens, torch.Tensor):
        return tokens.to(torch.long).flatten()
    return torch.as_tensor(list(tokens), dtype=torch.long)


def _clip(ids: torch.Tensor, vocab: int) -> torch.Tensor:
    """Ids outside [0, vocab) mapped to the spare column `vocab` (penalize_row ignores them)."""
    return torch.where((ids >= 0) & (ids < vocab), ids, torch.full_like(ids, vocab))


def _to(t: torch.Tensor, dev: torch.device) -> torch.Tensor:
    return t.to(dev, non_blocking=True)
