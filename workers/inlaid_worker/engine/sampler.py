"""Next-token sampling: logit bias, min_tokens, penalties, greedy, temperature, min-p, top-k, top-p, per-request
seeds, and logprobs.

Each row is sampled with its own torch.Generator (seeded from the request's seed, or from a fresh random
seed), so a request's tokens depend only on its own logits and seed, never on its batch-mates.

Per row, in order (as vLLM): the grammar mask (structured outputs, structured.py: the tokens it disallows set to
-inf), logit_bias added, the tokens min_tokens bans this step (EOS and stop token ids) set to -inf, all on a copy
of the row (rows that set none are untouched); then repetition penalty, frequency penalty, presence penalty (rows
that set none are left untouched, and a batch where no row sets one does no penalty work at all), then greedy
argmax or temperature / min-p / top-k / top-p sampling. Logprobs, for rows that ask, are of the raw model
distribution: log_softmax of the logits before all of that (vLLM's default "raw_logprobs").
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from inlaid_worker.engine.sampling_params import SamplingParams

if TYPE_CHECKING:
    from inlaid_worker.engine.structured import GrammarState


@dataclass(frozen=True)
class TokenHistory:
    """The tokens penalties look at: prompt (repetition only) and output (all three penalties)."""

    prompt: Seq[int] | torch.Tensor
    output: Seq[int] | torch.Tensor


@dataclass(frozen=True)
class TokenLogprobs:
    """Logprob of the sampled token and the top-N alternatives (token id, logprob), highest first."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...]
    rank: int | None = None  # prompt logprobs: the token's rank (1 = most likely); None elsewhere


@dataclass(frozen=True)
class SamplerOutput:
    tokens: list[int]
    logprobs: list[TokenLogprobs | None]  # None for rows that did not ask


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    # torch seeds are < 2^64; an unseeded request still gets its own stream, independent of others.
    g.manual_seed(seed if seed is not None else random.getrandbits(63))
    return g


TOP_P_FIRST_K = 256  # top-p looks at this many most likely tokens first (more only when their mass is short)


def restrict_logits(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float, min_p: float = 0.0
) -> torch.Tensor:
    """Scaled logits of one row with tokens below min-p, outside top-k or outside the top-p nucleus set to -inf
    (vLLM's order: min-p, top-k, then top-p over what is left).

    logits: [V] float32. Min-p drops the tokens whose probability is below min_p times the most likely token's,
    compared as logits (x - max(x) < ln(min_p), one exact subtraction, so the device sampler's batch agrees). The nucleus is the smallest set of most likely tokens whose mass reaches top_p, and every
    token as likely as its least likely one: so it does not depend on how a sort orders ties (fp16 / bf16 logits
    tie often), and the device sampler, whose sort orders them otherwise, keeps the same set.
    """
    x = (logits if logits.dtype == torch.float64 else logits.float()) / temperature
    vocab = x.shape[-1]
    if min_p > 0.0:
        x = x.masked_fill(x - x.max() < min_p_threshold(min_p, x.dtype), float("-inf"))
    if 0 < top_k < vocab:
        kth = torch.topk(x, top_k).values[-1]
        x = x.masked_fill(x < kth, float("-inf"))
    if top_p < 1.0 and not bool(torch.isposinf(x).any()):  # +inf: the caller redoes the row in float64
        # the nucleus from the k most likely tokens, k growing until their mass reaches top_p: every token past
        # them has at least that much mass before it, so it is dropped as a full sort would drop it (a full sort
        # of a 49k vocabulary took ~3 ms a row on the CPU; the top 256 usually suffice)
        probs = torch.softmax(x, dim=-1)
        k = min(vocab, TOP_P_FIRST_K)
        while True:
            vals = torch.topk(probs, k).values
            mass = torch.cumsum(vals, dim=-1)
            if k == vocab or float(mass[-1]) >= top_p:
                break
            k = vocab  # a flat distribution: sort it all
        inside = int(((mass - vals) < top_p).sum())  # a prefix; the first token is always in (no mass before it)
        x = x.masked_fill(probs < vals[inside - 1], float("-inf"))  # ties with the edge token stay
    return x


def min_p_threshold(min_p: float, dtype: torch.dtype) -> torch.Tensor:
    """ln(min_p) in `dtype` (-inf for 0): tokens whose scaled logit is this far below the top one are dropped."""
    return torch.tensor(math.log(min_p) if min_p > 0.0 else float("-inf"), dtype=dtype)


def min_tokens_ban(p: SamplingParams, num_output: int, eos_token_ids: Iterable[int]) -> tuple[int, ...] | None:
    """The token ids min_tokens masks for a row that has generated num_output tokens (None: none): its stop token
    ids, and EOS unless ignore_eos (a grammar ends with EOS even then, so its rows ban EOS regardless)."""
    if num_output >= p.min_tokens:
        return None
    ids = set(p.stop_token_ids)
    if not p.ignore_eos or p.structured is not None:
        ids.update(eos_token_ids)
    return tuple(sorted(ids)) or None


def adjust_row(row: torch.Tensor, p: SamplingParams, banned: Seq[int] | None) -> torch.Tensor | None:
    """A new [V] row with p.logit_bias added and the `banned` ids set to -inf, or None when neither applies.

    Ids outside the row are ignored. The ban is dropped when it would leave no token (a grammar that can only end
    with EOS while min_tokens bans it): the row keeps its EOS.
    """
    vocab = row.shape[-1]
    bias = [(t, b) for t, b in p.logit_bias if t < vocab]
    ban = [t for t in banned or () if 0 <= t < vocab]
    if not bias and not ban:
        return None
    x = row.clone()
    if bias:
        ids = torch.tensor([t for t, _ in bias], dtype=torch.long)
        x[ids] = x[ids] + torch.tensor([b for _, b in bias], dtype=x.dtype)
    if ban:
        masked = x.index_fill(0, torch.tensor(ban, dtype=torch.long), float("-inf"))
        if bool((masked > float("-inf")).any()):
            x = masked
    return x


def uniform(generator: torch.Generator | None) -> float:
    """The one uniform number in [0, 1) a sampled row draws per step from its generator."""
    return float(torch.rand(1, generator=generator, dtype=torch.float64))


def draw(probs: torch.Tensor, generator: torch.Generator | None, u: float | None = None) -> int:
    """One token from `probs` [V] (non-negative, positive sum) by the inverse CDF of one uniform draw: the law of
    torch.multinomial(probs, 1), which draws a random number per vocabulary entry (~0.9 ms a row at 49k on the CPU).
    A token of probability 0 is never drawn (the CDF does not rise there). u: that row's uniform, drawn already
    (the device sampler draws it before it knows a row needs this path); None: draw it from `generator`."""
    cdf = torch.cumsum(probs, dim=0, dtype=torch.float64)
    drawn = uniform(generator) if u is None else u
    x = torch.tensor([drawn], dtype=torch.float64) * cdf[-1]
    return min(int(torch.searchsorted(cdf, x, right=True)), probs.shape[0] - 1)


def penalize_row(
    logits: torch.Tensor,
    history: TokenHistory,
    presence: float = 0.0,
    frequency: float = 0.0,
    repetition: float = 1.0,
) -> torch.Tensor:
    """A new [V] row with vLLM's penalties applied (the input is not modified).

    repetition (tokens in the prompt or the output): x / r where x > 0, else x * r;
    then x -= frequency * count_in_output and x -= presence * (count_in_output > 0).
    Only the seen tokens are touched (work proportional to the history, not the vocabulary); a prompt given
    as a tensor is used as is (Sequence.penalty_history keeps one per sequence).
    """
    vocab = logits.shape[-1]
    x = logits.clone()
    out = _ids(history.output)
    out_ids, counts = torch.unique(out[(out >= 0) & (out < vocab)], return_counts=True)
    if repetition != 1.0:
        prompt = _ids(history.prompt)
        seen = torch.cat([out_ids, prompt[(prompt >= 0) & (prompt < vocab)]])
        v = x[seen]
        x[seen] = torch.where(v > 0, v / repetition, v * repetition)
    if frequency != 0.0:
        x[out_ids] = x[out_ids] - frequency * counts.to(x.dtype)
    if presence != 0.0:
        x[out_ids] = x[out_ids] - presence
    return x


def _ids(tokens: Seq[int] | torch.Tensor) -> torch.Tensor:
    if isinstance(tokens, torch.Tensor):
        return tokens.to(torch.long)
    return torch.as_tensor(list(tokens), dtype=torch.long)


def penalized_rows(
    logits: torch.Tensor,
    params: Seq[SamplingParams],
    histories: Seq[TokenHistory | None] | None,
    base: dict[int, torch.Tensor] | None = None,
    at: Seq[int] | None = None,
) -> dict[int, torch.Tensor]:
    """The penalized [V] row of each row that sets a penalty (row index -> new tensor); {} when none does.
    base: rows to use instead of logits' own (rows masked by a grammar, biased or banned). at: row i's row of logits
    (None: row i)."""
    rows = [i for i, p in enumerate(params) if p.has_penalties]
    if not rows:
        return {}
    if histories is None:
        raise ValueError("penalties need the rows' token histories")
    out: dict[int, torch.Tensor] = {}
    for i in rows:
        history, p = histories[i], params[i]
        if history is None:
            raise ValueError(f"row {i} sets penalties but has no token history")
        row = logits[i if at is None else at[i]] if base is None or i not in base else base[i]
        out[i] = penalize_row(row, history, p.presence_penalty, p.frequency_penalty, p.repetition_penalty)
    return out


def apply_penalties(
    logits: torch.Tensor, params: Seq[SamplingParams], histories: Seq[TokenHistory | None] | None
) -> torch.Tensor:
    """logits [S, V] with each penalized row replaced; the same tensor when no row sets a penalty."""
    rows = penalized_rows(logits, params, histories)
    if not rows:
        return logits
    out = logits.clone()
    for i, row in rows.items():
        out[i] = row
    return out


def compute_logprobs(
    raw: torch.Tensor, params: Seq[SamplingParams], tokens: Seq[int], at: Seq[int] | None = None
) -> list[TokenLogprobs | None]:
    """For rows with params.logprobs set: log_softmax(raw) at the sampled token, and the top-N. at: row i's row of
    raw (None: row i)."""
    result: list[TokenLogprobs | None] = [None] * len(params)
    rows = [i for i, p in enumerate(params) if p.logprobs is not None]
    if not rows:
        return result
    lp = torch.log_softmax(raw[rows if at is None else [at[i] for i in rows]].float(), dim=-1)  # [R, V]
    chosen = lp[torch.arange(len(rows)), torch.as_tensor([tokens[i] for i in rows])].tolist()
    k = min(max(int(params[i].logprobs or 0) for i in rows), lp.shape[-1])
    top_v: list[list[float]] = [[] for _ in rows]
    top_i: list[list[int]] = [[] for _ in rows]
    if k > 0:
        values, indices = torch.topk(lp, k, dim=-1, sorted=True)
        top_v, top_i = values.tolist(), indices.tolist()
    for j, i in enumerate(rows):
        n = int(params[i].logprobs or 0)
        top = tuple(zip(top_i[j][:n], top_v[j][:n], strict=True))
        result[i] = TokenLogprobs(int(tokens[i]), float(chosen[j]), top)
    return result


def _limit_of_inf(x: torch.Tensor) -> torch.Tensor:
    """x itself, or, when logits are +inf (in the model's own output), uniform over those tokens: softmax would
    give NaN and torch.multinomial raise, failing the whole step."""
    top = torch.isposinf(x)
    if not bool(top.any()):
        return x
    return torch.zeros_like(x).masked_fill(~top, float("-inf"))


def _wide_row(
    raw: torch.Tensor, p: SamplingParams, histories: Seq[TokenHistory | None] | None, row: int
) -> torch.Tensor:
    """The row in float64, penalized when it has a history (rows whose float32 values overflowed)."""
    wide = raw.double()
    history = None if histories is None else histories[row]
    if history is None or not p.has_penalties:
        return wide
    return penalize_row(wide, history, p.presence_penalty, p.frequency_penalty, p.repetition_penalty)


def check_rows(
    logits: torch.Tensor,
    params: Seq[SamplingParams],
    generators: Seq[torch.Generator | None],
    histories: Seq[TokenHistory | None] | None,
    grammars: Seq[GrammarState | None] | None,
    banned: Seq[Seq[int] | None] | None = None,
    rows: Seq[int] | None = None,
) -> None:
    """Raises ValueError unless logits are [S, V] with one params / generator (/ history / grammar / ban) per row,
    or, with rows (the batch's rows of logits), one per entry of rows, each in [0, S)."""
    if logits.dim() != 2:  # before reading shape[0] (a 0-d tensor has none)
        raise ValueError(f"logits must be [S, V], got shape {tuple(logits.shape)}")
    n = int(logits.shape[0]) if rows is None else len(rows)
    if n != len(params) or len(params) != len(generators):
        raise ValueError(
            f"logits {tuple(logits.shape)} do not match {len(params)} params / {len(generators)} generators"
            + ("" if rows is None else f" on {len(rows)} rows")
        )
    if rows and not (min(rows) >= 0 and max(rows) < logits.shape[0]):  # a device gather would fault on them
        raise ValueError(f"rows must be in [0, {logits.shape[0]}), got {min(rows)}..{max(rows)}")
    if histories is not None and len(histories) != len(params):
        raise ValueError(f"{len(histories)} histories for {len(params)} rows")
    if grammars is not None and len(grammars) != len(params):
        raise ValueError(f"{len(grammars)} grammars for {len(params)} rows")
    if banned is not None and len(banned) != len(params):
        raise ValueError(f"{len(banned)} bans for {len(params)} rows")


def sample_rows(
    logits: torch.Tensor,
    params: Seq[SamplingParams],
    generators: Seq[torch.Generator | None],
    histories: Seq[TokenHistory | None] | None = None,
    grammars: Seq[GrammarState | None] | None = None,
    uniforms: Seq[float | None] | None = None,
    banned: Seq[Seq[int] | None] | None = None,
    rows: Seq[int] | None = None,
) -> SamplerOutput:
    """One token per row, with logprobs for the rows that ask (the per-row reference; device_sampler batches it).

    logits: [S, V] float32; params, generators, histories (needed for rows with penalties) and grammars (None
    or None entries: unconstrained): one per row. uniforms: each sampled row's uniform, drawn already from its
    generator (None, or a None entry: draw it here). banned: the token ids each row may not pick this step
    (min_tokens_ban; None, or a None entry: none). rows: the rows' rows of logits (row i is logits[rows[i]]); None:
    every row. Read in place only where logits are float32 on the CPU (the engine's CPU path): no copy of the selected
    rows. Otherwise this reference copies at once, unchunked: device logits' selected rows (logits[rows] on the
    device, then to the host), and every row of CPU logits of another dtype (widened to float32); device logits go
    through device_sampler.sample_batch, which gathers its rows rows_per_chunk at a time.
    """
    check_rows(logits, params, generators, histories, grammars, banned, rows)
    if uniforms is not None and len(uniforms) != len(params):
        raise ValueError(f"{len(uniforms)} uniforms for {len(params)} rows")
    if rows is not None and logits.device.type != "cpu":  # those rows alone come to the host
        logits, rows = logits[list(rows)], None
    raw = logits.float().cpu()  # the generators live on the CPU
    at = range(len(params)) if rows is None else rows  # row -> its row of raw
    adjusted: dict[int, torch.Tensor] = {}  # rows changed before the penalties: copies; raw is untouched
    if grammars is not None and any(s is not None for s in grammars):
        from inlaid_worker.engine.structured import constrained_rows  # xgrammar only when asked for

        adjusted = dict(constrained_rows(raw, grammars, rows))  # the grammar rows, masked
    for row, p in enumerate(params):  # logit bias and min_tokens' bans
        ban = None if banned is None else banned[row]
        if p.logit_bias or ban:
            new = adjust_row(adjusted[row] if row in adjusted else raw[at[row]], p, ban)
            if new is not None:
                adjusted[row] = new
    # only the rows that set penalties; raw is untouched
    penalized = penalized_rows(raw, params, histories, adjusted or None, rows)
    tokens: list[int] = []
    greedy = raw.argmax(dim=-1).tolist()  # [S]: every row of logits, sampled or not
    for row, (p, g) in enumerate(zip(params, generators, strict=False)):
        base = adjusted.get(row)
        if base is None:
            base = raw[at[row]]
        x = penalized.get(row)
        if p.greedy:
            if x is not None and bool(torch.isposinf(x).any()):
                x = _wide_row(base, p, histories, row)  # ties among overflowed logits: compare in float64
            if x is None and row in adjusted:
                x = base
            tokens.append(int(greedy[at[row]]) if x is None else int(x.argmax()))
            continue
        restricted = restrict_logits(base if x is None else x, p.temperature, p.top_k, p.top_p, p.min_p)
        if bool(torch.isposinf(restricted).any()):
            # float32 overflowed (a tiny temperature or repetition penalty): redo the row in float64, where
            # any float32 logit divided by two float32 positives stays finite
            wide = _wide_row(base, p, histories, row)  # penalized only when the row sets penalties
            restricted = restrict_logits(wide, p.temperature, p.top_k, p.top_p, p.min_p)
        probs = torch.softmax(_limit_of_inf(restricted), dim=-1)
        tokens.append(draw(probs, g, None if uniforms is None else uniforms[row]))
    return SamplerOutput(tokens, compute_logprobs(raw, params, tokens, rows))


def sample(
    logits: torch.Tensor,
    params: Seq[SamplingParams],
    generators: Seq[torch.Generator | None],
    histories: Seq[TokenHistory | None] | None = None,
    grammars: Seq[GrammarState | None] | None = None,
) -> list[int]:
    """One token per row (sample_rows without the logprobs)."""
    return sample_rows(logits, params, generators, histories, grammars).tokens
