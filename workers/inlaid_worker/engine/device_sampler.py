"""Batched sampling on the logits' own device: sampler.sample_rows's semantics, without a loop over rows.

The logits stay where the runner left them (the GPU); only the sampled token ids, one overflow flag per row, and
the logprobs that rows ask for (the chosen token's and the top N) come to the host, in one copy each. Per batch:
the rows' logit biases and min_tokens bans (one scatter each, on copies of those rows only), penalties from the
rows' token histories (a count matrix built by one scatter), then one argmax for the greedy rows, and for the
sampled rows temperature, min-p (restrict_logits: x - max(x) < ln(min_p)), top-k, the top-p nucleus
(restrict_logits: the smallest set of most likely tokens whose mass reaches top_p, the first token always kept,
with every token tied with its least likely one, so the set does not depend on how the sort orders ties), softmax
and the inverse-CDF draw; the sampled rows in chunks of rows_per_chunk(vocab) (their full-vocabulary temporaries
stay under SCRATCH_BYTES whatever the batch), top-k on the rows that set one and the nucleus (a sort) on the rows
with top_p < 1 only. Each sampled row's one uniform number comes from its own CPU generator, as sampler.draw
takes it, so a request's tokens depend only on its own logits and seed; on CPU tensors this path picks the same tokens as sample_rows, on
the GPU the same up to float rounding (a draw within rounding of a CDF step, or a nucleus edge). The engine uses
it for GPU logits; for CPU logits it keeps sample_rows, as fast or faster there (bench/results/sampling-2026-11-30-*).

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
# the sampled rows' full-vocabulary temporaries (scaled logits, masks, probabilities, the top-p sort's values and
# ids, the float64 CDF) are made for at most this many bytes' worth of rows at a time: peak scratch does not grow
# with the batch (about 1.5 MB a row at a 32k vocabulary: 43 rows a chunk; 10 at 128k)
SCRATCH_BYTES = 64 << 20
SCRATCH_BYTES_PER_TOKEN = 48  # an upper bound of the above, alive at once, per row and vocabulary entry


def rows_per_chunk(vocab: int) -> int:
    """How many sampled rows one chunk of the batch's sampling takes (>= 1)."""
    return max(1, SCRATCH_BYTES // (SCRATCH_BYTES_PER_TOKEN * max(1, vocab)))


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
) -> SamplerOutput:
    """One token per row, with logprobs for the rows that ask: sample_rows's result, batched on logits.device.

    logits: [S, V] (any float dtype, any device; never modified); the other arguments as sample_rows's.
    nucleus: "sort" | "topk" (nucleus_strategy), None: by device.
    """
    check_rows(logits, params, generators, histories, grammars, banned)
    n = len(params)
    host = [i for i in range(n) if grammars is not None and grammars[i] is not None]
    if len(host) == n:
        return _on_host(logits, host, params, generators, histories, grammars, None, banned)
    skip = set(host)
    batch = [i for i in range(n) if i not in skip]
    tokens: list[int] = [0] * n
    logprobs: list[TokenLogprobs | None] = [None] * n
    sub = logits if len(batch) == n else logits[batch]
    b_params = [params[i] for i in batch]
    b_hist = None if histories is None else [histories[i] for i in batch]
    b_ban = None if banned is None else [banned[i] for i in batch]
    out = _Batch(sub, b_params, [generators[i] for i in batch], b_hist, nucleus, b_ban).run()
    for j, i in enumerate(batch):
        tokens[i], logprobs[i] = out.tokens[j], out.logprobs[j]
    if out.overflowed:  # redo those rows on the host in float64, with the uniforms the batch drew for them
        rows = [batch[j] for j in out.overflowed]
        u = [out.uniforms.get(j) for j in out.overflowed]
        redo = _on_host(logits, rows, params, generators, histories, None, u, banned)
        for i in rows:
            tokens[i], logprobs[i] = redo.tokens[i], redo.logprobs[i]
    if host:
        done = _on_host(logits, host, params, generators, histories, grammars, None, banned)
        for i in host:
            tokens[i], logprobs[i] = done.tokens[i], done.logprobs[i]
    return SamplerOutput(tokens, logprobs)


@torch.inference_mode()
def launch_batch(
    logits: torch.Tensor,
    params: Seq[SamplingParams],
    generators: Seq[torch.Generator | None],
    banned: Seq[Seq[int] | None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """sample_batch's batch for rows without grammars, penalties or logprobs, left on logits.device: (tokens [S]
    int64, overflowed [S] bool), nothing read back. A row flagged overflowed holds no valid token (sample_batch
    redoes such rows on the host; async scheduling admits only rows that cannot overflow on finite logits)."""
    check_rows(logits, params, generators, None, None, banned)
    if any(p.has_penalties or p.logprobs is not None for p in params):
        raise ValueError("launch_batch takes no rows with penalties or logprobs")
    tokens, overflow, _ = _Batch(logits, list(params), list(generators), None, None,
                                 None if banned is None else list(banned)).launch()  # fmt: skip
    return tokens, overflow


def _on_host(
    logits: torch.Tensor,
    rows: list[int],
    params: Seq[SamplingParams],
    generators: Seq[torch.Generator | None],
    histories: Seq[TokenHistory | None] | None,
    grammars: Seq[GrammarState | None] | None,
    uniforms: list[float | None] | None,
    banned: Seq[Seq[int] | None] | None,
) -> SamplerOutput:
    """sample_rows on host copies of `rows`; the result is indexed like the whole batch (other rows: 0 / None)."""
    out = sample_rows(
        logits[rows].float().cpu(),
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


@dataclass(frozen=True)
class _Result:
    tokens: list[int]
    logprobs: list[TokenLogprobs | None]
    overflowed: list[int]  # rows to redo on the host (float32 overflowed to +inf)
    uniforms: dict[int, float]  # row -> the uniform drawn for it (sampled rows)


class _Batch:
    """One batch of rows without grammars, sampled on their device (sample_batch)."""

    def __init__(
        self,
        logits: torch.Tensor,
        params: list[SamplingParams],
        generators: list[torch.Generator | None],
        histories: list[TokenHistory | None] | None,
        nucleus: str | None,
        banned: list[Seq[int] | None] | None = None,
    ) -> None:
        self.raw = logits.float()  # the logprobs' source; never written
        self.params, self.generators, self.histories = params, generators, histories
        self.banned = banned
        self.dev = logits.device
        self.vocab = int(logits.shape[-1])
        self.nucleus = nucleus or nucleus_strategy(self.dev)
        if self.nucleus not in ("sort", "topk"):
            raise ValueError(f"nucleus must be 'sort' or 'topk', got {self.nucleus!r}")

    def _tensor(self, values: list[float] | list[int], dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype).to(self.dev, non_blocking=True)

    def run(self) -> _Result:
        tokens, overflow, uniforms = self.launch()
        r = len(self.params)
        packed = torch.stack([tokens, overflow.long()]).cpu()  # one copy (and the step's one sync)
        token_list, flags = packed[0].tolist(), packed[1].tolist()
        overflowed = [j for j in range(r) if flags[j]]
        return _Result(token_list, self._logprobs(tokens, token_list), overflowed, uniforms)

    def launch(self) -> tuple[torch.Tensor, torch.Tensor, dict[int, float]]:
        """The rows' tokens and overflow flags as device tensors [R] (int64, bool), and the uniforms drawn: every
        launch queued, nothing read back (no host sync: async scheduling reads them later, engine/async_step.py)."""
        r = len(self.params)
        sampled = [j for j, p in enumerate(self.params) if not p.greedy]
        penalized = [j for j, p in enumerate(self.params) if p.has_penalties]
        # one uniform per sampled row, from its own generator (sampler.draw), drawn first: every per-row number
        # then goes to the device in one copy
        uniforms = {j: uniform(self.generators[j]) for j in sampled}
        x, pen_overflow = self._penalized(penalized, self._adjusted())
        if len(sampled) < r:  # the greedy rows' tokens (the sampled rows' are written below)
            tokens = x.argmax(dim=-1)
        else:
            tokens = torch.zeros(r, dtype=torch.long, device=self.dev)
        overflow = torch.zeros(r, dtype=torch.bool, device=self.dev)
        if penalized:
            overflow[self._tensor(penalized, torch.long)] = pen_overflow
        if sampled:
            tokens = self._sampled(x, sampled, uniforms, tokens, overflow)
        return tokens, overflow, uniforms

    def _sampled(
        self, x: torch.Tensor, sampled: list[int], uniforms: dict[int, float], tokens: torch.Tensor,
        overflow: torch.Tensor,
    ) -> torch.Tensor:  # fmt: skip
        """tokens with the sampled rows' draws written in (overflow updated in place), in chunks of at most
        rows_per_chunk(vocab) rows, so the full-vocabulary scratch stays under SCRATCH_BYTES whatever the batch."""
        r, n, v = int(tokens.shape[0]), len(sampled), self.vocab
        rows = [self.params[j] for j in sampled]
        ks = [p.top_k if 0 < p.top_k < v else v for p in rows]
        # every per-row number in one copy: temperature, top_p, k, the uniform, the row's index in the batch
        per_row = self._tensor([p.temperature for p in rows] + [p.top_p for p in rows] + ks
                               + [uniforms[j] for j in sampled] + sampled, torch.float64)  # fmt: skip
        step = rows_per_chunk(v)
        for a in range(0, n, step):
            b = min(n, a + step)
            c = rows[a:b]
            temperature, top_p = per_row[a:b, None].float(), per_row[n + a : n + b, None].float()
            k, u = per_row[2 * n + a : 2 * n + b].long(), per_row[3 * n + a : 3 * n + b]
            whole = b - a == r  # every row of the batch, in one chunk
            idx = None if whole else per_row[4 * n + a : 4 * n + b].long()
            scaled = (x if idx is None else x[idx]) / temperature
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
                tokens = drawn
            else:
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

    def _adjusted(self) -> torch.Tensor:
        """The logits with the rows that set a logit_bias or have a min_tokens ban replaced (sampler.adjust_row:
        the bias added, then the banned ids set to -inf unless that leaves the row no token); raw itself if none."""
        v = self.vocab
        biased = [(j, p.logit_bias) for j, p in enumerate(self.params) if p.logit_bias]
        bans = [(j, b) for j, b in enumerate(self.banned or ()) if b]
        if not biased and not bans:
            return self.raw
        rows = sorted({j for j, _ in biased} | {j for j, _ in bans})
        pos = {j: k for k, j in enumerate(rows)}
        idx = self._tensor(rows, torch.long)
        x = self.raw[idx]  # a copy
        if biased:
            at = [(pos[j], t, b) for j, bias in biased for t, b in bias if t < v]
            r, c = self._tensor([a[0] for a in at], torch.long), self._tensor([a[1] for a in at], torch.long)
            x[r, c] = x[r, c] + self._tensor([a[2] for a in at], torch.float32)  # ids unique per row
        if bans:
            at2 = [(pos[j], t) for j, ban in bans for t in ban if 0 <= t < v]
            r, c = self._tensor([a[0] for a in at2], torch.long), self._tensor([a[1] for a in at2], torch.long)
            masked = x.index_put((r, c), torch.full((), NEG_INF, device=self.dev))
            x = torch.where((masked > NEG_INF).any(dim=-1, keepdim=True), masked, x)
        return self.raw.index_copy(0, idx, x)

    def _penalized(self, rows: list[int], base: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(base, the logits after logit bias and bans, with the penalized rows replaced; which of those rows hold
        +inf); vLLM's order as sampler.penalize_row: repetition over prompt and output, then frequency, then
        presence."""
        if not rows:
            return base, torch.empty(0, dtype=torch.bool, device=self.dev)
        if self.histories is None:
            raise ValueError("penalties need the rows' token histories")
        v = self.vocab
        out_rows, out_ids, seen_rows, seen_ids = [], [], [], []
        for k, j in enumerate(rows):
            history = self.histories[j]
            if history is None:
                raise ValueError(f"row {j} sets penalties but has no token history")
            out = _ids(history.output)
            out_rows.append(torch.full_like(out, k))
            out_ids.append(out)
            if self.params[j].repetition_penalty != 1.0:
                prompt = _ids(history.prompt)
                seen_rows.append(torch.full_like(prompt, k))
                seen_ids.append(prompt)
        p = len(rows)
        counts = torch.zeros(p, v + 1, dtype=torch.float32, device=self.dev)  # column v: ids outside the vocab
        ones = torch.ones(1, dtype=torch.float32, device=self.dev).expand(sum(len(o) for o in out_ids))
        counts.index_put_((_to(torch.cat(out_rows), self.dev), _to(_clip(torch.cat(out_ids), v), self.dev)), ones,
                          accumulate=True)  # fmt: skip
        counts = counts[:, :v]
        in_output = counts > 0
        idx = self._tensor(rows, torch.long)
        x = base[idx]
        rep = [self.params[j].repetition_penalty for j in rows]
        if any(r != 1.0 for r in rep):
            seen = torch.zeros(p, v + 1, dtype=torch.bool, device=self.dev)
            if seen_ids:
                seen[_to(torch.cat(seen_rows), self.dev), _to(_clip(torch.cat(seen_ids), v), self.dev)] = True
            seen = seen[:, :v] | in_output
            r = self._tensor(rep, torch.float32)[:, None]
            x = torch.where(seen, torch.where(x > 0, x / r, x * r), x)
        freq = [self.params[j].frequency_penalty for j in rows]
        if any(f != 0.0 for f in freq):
            x = x - self._tensor(freq, torch.float32)[:, None] * counts
        pres = [self.params[j].presence_penalty for j in rows]
        if any(q != 0.0 for q in pres):
            x = torch.where(in_output, x - self._tensor(pres, torch.float32)[:, None], x)
        whole = base.index_copy(0, idx, x)
        return whole, torch.isposinf(x).any(dim=-1)

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
        idx = self._tensor(rows, torch.long)
        lp = torch.log_softmax(self.raw[idx], dim=-1)
        parts = [lp.gather(1, tokens[idx][:, None]).double()]
        k = min(max(int(self.params[j].logprobs or 0) for j in rows), self.vocab)
        if k > 0:
            top = torch.topk(lp, k, dim=-1, sorted=True)
            parts += [top.values.double(), top.indices.double()]  # ids < 2^53: exact in float64
        host = torch.cat(parts, dim=1).cpu().tolist()
        for m, j in enumerate(rows):
            n = int(self.params[j].logprobs or 0)
            row = host[m]
            top_pairs = tuple((int(i), float(v)) for v, i in zip(row[1 : 1 + n], row[1 + k : 1 + k + n], strict=True))
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
