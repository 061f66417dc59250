"""Random sampling batches for the device sampler's tests: rows flat, normal and peaked; greedy and sampled rows
with temperatures, min-p, top-k, top-p, penalties, logit biases, min_tokens bans, logprobs and seeds; and rows that
overflow float32; the worst-case rows and the scratch meter (PeakBytes) of the scratch tests and benches."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from inlaid_worker.engine.device_sampler import sample_batch
from inlaid_worker.engine.sampler import SamplerOutput, TokenHistory, make_generator, sample_rows
from inlaid_worker.engine.sampling_params import SamplingParams
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


@dataclass
class Case:
    logits: torch.Tensor  # [S, V] float32 on the CPU
    params: list[SamplingParams]
    histories: list[TokenHistory | None]
    seeds: list[int]
    banned: list[tuple[int, ...] | None] | None = None  # min_tokens' bans this step (sampler.min_tokens_ban)


def random_row(rng: random.Random, vocab: int, gen: torch.Generator) -> torch.Tensor:
    kind = rng.choice(("flat", "normal", "peaked", "spiky"))
    scale = {"flat": 0.05, "normal": 2.0, "peaked": 8.0, "spiky": 1.0}[kind]
    row = torch.randn(vocab, generator=gen) * scale
    if kind == "spiky":  # a few very likely tokens over a flat tail
        row[torch.randint(0, vocab, (3,), generator=gen)] += 12.0
    return row


def random_bias(rng: random.Random, vocab: int, row: torch.Tensor) -> tuple[tuple[int, float], ...]:
    """0-5 biased tokens, often the row's most likely ones (so a -100 bias moves the greedy pick), or ()."""
    if rng.random() < 0.65:
        return ()
    top = torch.topk(row, min(3, vocab)).indices.tolist()
    ids = {rng.choice(top) if rng.random() < 0.5 else rng.randrange(vocab) for _ in range(rng.randrange(1, 6))}
    if rng.random() < 0.1:
        ids.add(vocab + 2)  # outside the logits: ignored
    return tuple((t, rng.choice((-100.0, -3.5, 0.7, 4.0, 100.0))) for t in sorted(ids))


def random_ban(rng: random.Random, vocab: int, row: torch.Tensor) -> tuple[int, ...] | None:
    """min_tokens' ban of a row: 1-3 ids, often its most likely token, or None."""
    if rng.random() < 0.7:
        return None
    ids = {int(row.argmax())} if rng.random() < 0.6 else set()
    ids.update(rng.randrange(vocab) for _ in range(rng.randrange(1, 3)))
    return tuple(sorted(ids))


def random_params(rng: random.Random, vocab: int, seed: int, row: torch.Tensor) -> SamplingParams:
    greedy = rng.random() < 0.3
    penal = rng.random() < 0.35
    return SamplingParams(
        temperature=0.0 if greedy else rng.choice((0.3, 0.8, 1.0, 1.7)),
        top_k=rng.choice((0, 0, 1, 5, 50, vocab - 1, vocab + 3)),
        top_p=rng.choice((1.0, 1.0, 0.95, 0.5, 0.1, 0.999)),
        seed=seed,
        presence_penalty=rng.choice((0.0, 0.5, -1.0)) if penal else 0.0,
        frequency_penalty=rng.choice((0.0, 0.3, 1.5)) if penal else 0.0,
        repetition_penalty=rng.choice((1.0, 1.2, 0.8, 3.0)) if penal else 1.0,
        logprobs=rng.choice((None, None, 0, 3, 20)),
        min_p=rng.choice((0.0, 0.0, 0.0, 0.02, 0.1, 0.3, 1.0)),
        logit_bias=random_bias(rng, vocab, row),
    )


def random_history(rng: random.Random, vocab: int) -> TokenHistory:
    prompt = [rng.randrange(vocab) for _ in range(rng.randrange(0, 40))]
    output = [rng.randrange(min(vocab, 60)) for _ in range(rng.randrange(0, 30))]  # repeats: counts > 1
    if rng.random() < 0.2:
        output.append(vocab + 7)  # outside the vocabulary: ignored by the penalties
    return TokenHistory(torch.tensor(prompt, dtype=torch.long) if rng.random() < 0.5 else prompt, output)


def random_case(seed: int, rows: int, vocab: int) -> Case:
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    logits = torch.stack([random_row(rng, vocab, gen) for _ in range(rows)])
    if rng.random() < 0.5:  # fp16 values, as a half-precision LM head gives: many exact ties
        logits = logits.half().float()
    params = [random_params(rng, vocab, rng.randrange(2**63), logits[i]) for i in range(rows)]
    histories = [random_history(rng, vocab) if p.has_penalties else None for p in params]
    banned = [random_ban(rng, vocab, logits[i]) for i in range(rows)]
    return Case(logits, params, histories, [p.seed or 0 for p in params], banned)


def grammar_case(tmp_path: Path) -> tuple[Any, Case, Any]:
    """(a tiny model's engine, 5 rows of 320 logits with seeded top-p sampling, logprobs, a presence penalty and a
    history each, a choice grammar "yes" / "no" compiled by the engine's cache)."""
    from engine_helpers import engine_for
    from factories import make_tiny_llama
    from inlaid_worker.engine.structured import StructuredOutput

    engine = engine_for(make_tiny_llama(tmp_path / "m"), kv_cache_bytes=1 << 20)
    compiled = engine.grammars.compile(StructuredOutput("choice", choices=("yes", "no")))
    x = torch.randn(5, 320, generator=torch.Generator().manual_seed(2)) * 2
    params = [SamplingParams(temperature=0.8, seed=s, logprobs=2, top_p=0.9, presence_penalty=0.3) for s in range(5)]
    histories: list[TokenHistory | None] = [TokenHistory([4, 5], [6, 6])] * 5
    return engine, Case(x, params, histories, list(range(5))), compiled


def overflow_case() -> Case:
    """Rows whose float32 values overflow (+inf logits, a tiny temperature or repetition penalty) among plain ones;
    two of them (6, 7) with a min_tokens ban and a logit bias, which their float64 redo must keep."""
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(8, 64, generator=gen) * 3
    logits[0, 5] = 30.0
    logits[1, 9] = float("inf")
    logits[1, 11] = float("inf")
    logits[3, 7] = 31.0
    logits[4, 5] = 30.0
    logits[6, 7], logits[6, 2] = 31.0, 29.0
    history = TokenHistory([5, 7, 9], [7])
    params = [
        SamplingParams(temperature=1.0, repetition_penalty=1e-38, seed=1, logprobs=2),  # 30 / 1e-38 = inf
        SamplingParams(temperature=0.9, seed=2, top_p=0.9, logprobs=1),  # +inf logits
        SamplingParams(temperature=0.8, seed=3, top_k=4),  # plain
        SamplingParams(temperature=1e-38, seed=4),  # 31 / 1e-38 = inf
        SamplingParams(temperature=0.0, repetition_penalty=1e-38),  # greedy over an overflowed row
        SamplingParams(temperature=0.0, logprobs=3),  # plain greedy
        SamplingParams(temperature=1e-38, seed=5, min_tokens=3),  # 31 / 1e-38 = inf, but 7 is banned: 2
        SamplingParams(temperature=1e-38, seed=6, logit_bias=((3, 100.0),), logprobs=1),  # 3 is forced
    ]
    histories: list[TokenHistory | None] = [history, None, None, None, history, None, None, None]
    banned: list[tuple[int, ...] | None] = [None] * 6 + [(7,), None]
    return Case(logits, params, histories, [1, 2, 3, 4, 0, 0, 5, 6], banned)


def generators(case: Case) -> list[torch.Generator | None]:
    return [None if p.greedy else make_generator(s) for p, s in zip(case.params, case.seeds, strict=True)]


def both(case: Case, device: str, nucleus: str | None = None) -> tuple[SamplerOutput, SamplerOutput, bool]:
    """(the per-row reference on the CPU, the batch on `device`, whether both left every generator in the same
    state: one uniform drawn per sampled row)."""
    g_ref, g_dev = generators(case), generators(case)
    ref = sample_rows(case.logits, case.params, g_ref, case.histories, banned=case.banned)
    got = sample_batch(case.logits.to(device), case.params, g_dev, case.histories, nucleus=nucleus, banned=case.banned)
    same_state = all(
        a is None or torch.equal(a.get_state(), b.get_state())  # type: ignore[union-attr]
        for a, b in zip(g_ref, g_dev, strict=True)
    )
    return ref, got, same_state


def logprobs_close(ref: SamplerOutput, got: SamplerOutput, tol: float) -> bool:
    for a, b in zip(ref.logprobs, got.logprobs, strict=True):
        if (a is None) != (b is None):
            return False
        if a is None or b is None:
            continue
        if a.token_id != b.token_id or abs(a.logprob - b.logprob) > tol or len(a.top) != len(b.top):
            return False
        if any(abs(x[1] - y[1]) > tol for x, y in zip(a.top, b.top, strict=True)):
            return False
        # ids: equal, except among alternatives whose logprobs tie within the tolerance
        if any(x[0] != y[0] and abs(x[1] - y[1]) > tol for x, y in zip(a.top, b.top, strict=True)):
            return False
    return True


def near_a_rounding_edge(case: Case, row: int, tol: float = 1e-4) -> bool:
    """Whether float rounding may change row's token (a GPU's sums and exponentials round otherwise than the CPU's):
    greedy, the top two logits within tol; sampled, (in float64) the nucleus edge or the uniform's CDF target within
    tol of a step."""
    from inlaid_worker.engine.sampler import adjust_row, penalize_row, uniform

    p, x = case.params[row], case.logits[row].double()
    adjusted = adjust_row(x, p, None if case.banned is None else case.banned[row])
    x = x if adjusted is None else adjusted
    history = case.histories[row]
    if p.has_penalties and history is not None:
        x = penalize_row(x, history, p.presence_penalty, p.frequency_penalty, p.repetition_penalty)
    if p.greedy:
        top2 = torch.topk(x, 2).values
        return float(top2[0] - top2[1]) < tol
    x = x / p.temperature
    if p.min_p > 0.0:
        gap = x - x.max() - math.log(p.min_p)
        if float(gap[gap.isfinite()].abs().min()) < tol:
            return True
        x = x.masked_fill(gap < 0, float("-inf"))
    if 0 < p.top_k < x.shape[0]:
        x = x.masked_fill(x < torch.topk(x, p.top_k).values[-1], float("-inf"))
    if p.top_p < 1.0:
        vals = torch.sort(torch.softmax(x, -1), descending=True).values
        before = torch.cumsum(vals, -1) - vals
        if float((before - p.top_p).abs().min()) < tol:
            return True
        edge = vals[int((before < p.top_p).sum()) - 1]
        x = x.masked_fill(torch.softmax(x, -1) < edge, float("-inf"))
    cdf = torch.cumsum(torch.softmax(x, -1), -1)
    target = uniform(make_generator(case.seeds[row])) * float(cdf[-1])
    return float((cdf - target).abs().min()) < tol


def subset(out: SamplerOutput, rows: list[int]) -> SamplerOutput:
    return SamplerOutput([out.tokens[i] for i in rows], [out.logprobs[i] for i in rows])


def mixed_case(seed: int, rows: int, vocab: int) -> Case:
    """Sampled rows in a fixed cycle: top_p < 1, top_p 1, top_k, top_k and top_p, min-p, greedy (every sixth), with
    logprobs on some; logits normal or spiky, fp16 values."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    logits = torch.stack([random_row(rng, vocab, gen) for _ in range(rows)]).half().float()
    cycle = [
        {"top_p": 0.9},
        {"top_p": 1.0},
        {"top_k": 40},
        {"top_k": 200, "top_p": 0.5},
        {"min_p": 0.05, "logprobs": 2},
        {"temperature": 0.0, "logprobs": 1},
    ]
    params = []
    for i in range(rows):
        kw: dict = {"temperature": 0.8, "seed": seed * 1000 + i} | cycle[i % len(cycle)]
        params.append(SamplingParams(**kw))
    return Case(logits, params, [None] * rows, [p.seed or 0 for p in params])


def worst_params(rows: int) -> list[SamplingParams]:
    """Every row sampled with every restriction, a bias, all three penalties and 20 logprobs (worst_case's rows)."""
    return [SamplingParams(temperature=0.9, top_k=50 + i, top_p=0.9, min_p=0.01, seed=i, presence_penalty=0.5,
                           frequency_penalty=0.3, repetition_penalty=1.2, logprobs=20,
                           logit_bias=((1, 2.0), (5, -3.0))) for i in range(rows)]  # fmt: skip


def worst_histories(rows: int) -> list[TokenHistory | None]:
    """worst_case's penalty histories: ~300 prompt and ~43 output tokens a row."""
    return [TokenHistory(list(range(i % 7, 900, 3)), list(range(0, 300, 7))) for i in range(rows)]


def worst_case(rows: int, vocab: int, seed: int = 0) -> Case:
    """Every row sampled with every restriction, a bias, a ban, all three penalties and 20 logprobs."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, vocab, generator=gen) * 3
    return Case(logits, worst_params(rows), worst_histories(rows), list(range(rows)), [(2, 3)] * rows)


def mixed_batch(seed: int, rows: int, vocab: int) -> Case:
    """random_case's rows (greedy and sampled, biased, banned, penalized, with logprobs) with some worst-case rows."""
    case, worst = random_case(seed, rows, vocab), worst_case(rows, vocab, seed)
    rng = random.Random(seed)
    for i in rng.sample(range(rows), rows // 4):
        case.params[i], case.histories[i], case.seeds[i] = worst.params[i], worst.histories[i], worst.seeds[i]
        assert case.banned is not None
        case.banned[i] = (2, 3)
    return case


class PeakBytes(TorchDispatchMode):
    """The most tensor bytes allocated inside the mode and alive at once, checked after every op (storages that
    existed before, such as the logits, and views of them are not counted; an op's internal buffers are not seen)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int, bool]] = {}  # data_ptr -> (ref, bytes, counted)
        self.now = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        for key in [k for k, (ref, _, _) in self.live.items() if ref.expired()]:
            _, size, counted = self.live.pop(key)
            self.now -= size if counted else 0
        self._see(tree_leaves((args, kwargs)), counted=False)
        out = func(*args, **kwargs)
        self._see(tree_leaves(out), counted=True)
        self.peak = max(self.peak, self.now)
        return out

    def _see(self, leaves: list[Any], counted: bool) -> None:
        for t in leaves:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in self.live:
                st = t.untyped_storage()
                self.live[st.data_ptr()] = (StorageWeakRef(st), st.nbytes(), counted)
                self.now += st.nbytes() if counted else 0
