"""Structured outputs: grammars compiled by xgrammar constrain the tokens a request may sample.

A request's `SamplingParams.structured` names what its output must be (a JSON Schema, any JSON object, a full
match of a regex, or one of a list of strings). `GrammarCache` compiles it once per (kind, spec) against the
model's tokenizer (an LRU of compiled grammars; compiling runs on a small thread pool with a timeout, off the
engine thread: the servicer compiles in Prepare and again, from the cache, on Admit). Each sequence keeps a
`GrammarState` (an xgrammar GrammarMatcher); every step `constrained_rows` fills the token bitmask of the rows
that have one and returns masked copies of those rows only (rows without a grammar are never touched, and a
batch without any grammar does no work at all). The sampler then applies penalties, temperature, top-k/top-p
to the masked rows; logprobs stay those of the raw distribution. The engine feeds each sampled token to the
matcher; the mask allows EOS only where the grammar can end, and the request finishes ("stop") when the
matcher has terminated. A resumed request (its last prompt tokens are its own earlier output) rebuilds the
matcher by replaying those tokens.

xgrammar is imported only when a request asks for structure, so a worker without the package serves every
other request (and refuses structured ones with a clear error).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from collections.abc import Sequence as Seq
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from inlaid_worker.engine.sampling_params import SamplingError, SamplingParams

KINDS = ("json_schema", "json_object", "regex", "choice")
MAX_SPEC_CHARS = 65536  # a schema, a regex, or all choices together (the gateway refuses larger ones first)
MAX_CHOICES = 1024
COMPILE_TIMEOUT_S = 10.0
CACHE_ENTRIES = 256  # compiled grammars kept (LRU)
COMPILE_THREADS = 2

_XGR_NOISE = re.compile(r"^\s*\[[\d:]+\]\s+\S+:\d+:\s*|Check failed: \(.*?\) is false:\s*")


class StructuredOutputError(SamplingError):
    """The response_format cannot be used (invalid, too large, too slow to compile, or no xgrammar)."""


@dataclass(frozen=True)
class StructuredOutput:
    """What the output must be. `compiled` (the xgrammar CompiledGrammar, set by GrammarCache.bind) is not part
    of the value: two requests with the same kind and spec are equal."""

    kind: str
    spec: str = ""  # json_schema: the schema's JSON text; regex: the pattern; otherwise ""
    choices: tuple[str, ...] = ()  # choice: the allowed outputs
    compiled: Any = field(default=None, compare=False, repr=False, hash=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise StructuredOutputError(f"response_format: unknown type {self.kind!r} (one of {', '.join(KINDS)})")
        size = len(self.spec) + sum(len(c) for c in self.choices)
        if size > MAX_SPEC_CHARS:
            raise StructuredOutputError(
                f"response_format: the {self.kind} spec has {size} characters, at most {MAX_SPEC_CHARS}"
            )
        if self.kind in ("json_schema", "regex") and not self.spec:
            raise StructuredOutputError(f"response_format: the {self.kind} must not be empty")
        if self.kind == "choice":
            if not self.choices or len(self.choices) > MAX_CHOICES:
                raise StructuredOutputError(f"response_format: choice needs 1 to {MAX_CHOICES} strings")
            if any(not c for c in self.choices):
                raise StructuredOutputError("response_format: choice strings must not be empty")
        if self.kind == "json_schema":
            try:
                schema = json.loads(self.spec)
            except ValueError as exc:
                raise StructuredOutputError(f"response_format: the JSON schema is not valid JSON ({exc})") from None
            if not isinstance(schema, dict):
                raise StructuredOutputError("response_format: the JSON schema must be a JSON object")

    @property
    def key(self) -> tuple[str, str, tuple[str, ...]]:
        return (self.kind, self.spec, self.choices)


def _xgr() -> Any:
    try:
        import xgrammar
    except ImportError:  # the worker serves everything else without it
        raise StructuredOutputError(
            "response_format: structured outputs need the xgrammar package, which this worker lacks"
        ) from None
    return xgrammar


def _clean(message: str) -> str:
    text = " ".join(_XGR_NOISE.sub("", line).strip() for line in str(message).splitlines() if line.strip())
    return text[:500]


def choice_ebnf(choices: Iterable[str]) -> str:
    """An EBNF grammar whose language is exactly the given strings (JSON escapes inside the literals)."""
    return "root ::= " + " | ".join(json.dumps(c, ensure_ascii=False) for c in choices)


class GrammarCache:
    """Compiles StructuredOutputs for one tokenizer; thread-safe. Nothing of xgrammar is built until the first
    structured request. `vocab_size`: the model's vocabulary (at least the tokenizer's; a padded model's
    larger logits width is masked off by constrained_rows)."""

    def __init__(
        self,
        hf_tokenizer: Any,
        stop_token_ids: Iterable[int],
        vocab_size: int | None = None,
        max_entries: int = CACHE_ENTRIES,
        timeout_s: float = COMPILE_TIMEOUT_S,
        threads: int = COMPILE_THREADS,
    ) -> None:
        self._hf = hf_tokenizer
        self._stop = sorted(int(t) for t in stop_token_ids)
        self._vocab = vocab_size
        self.max_entries = max_entries
        self.timeout_s = timeout_s
        self._threads = threads
        self._lock = threading.RLock()  # a compile that is done already runs _done inside compile()
        self._compiler: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._cache: OrderedDict[tuple[str, str, tuple[str, ...]], Any] = OrderedDict()
        self._inflight: dict[tuple[str, str, tuple[str, ...]], Future[Any]] = {}
        self.hits = 0
        self.misses = 0

    def _ensure(self) -> ThreadPoolExecutor:
        xgr = _xgr()
        with self._lock:
            if self._compiler is None:
                vocab = max(self._vocab or 0, len(self._hf))
                info = xgr.TokenizerInfo.from_huggingface(self._hf, vocab_size=vocab, stop_token_ids=self._stop)
                # our own LRU bounds the memory; the compiler's cache would grow unbounded
                self._compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)
                self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="grammar")
            assert self._pool is not None
            return self._pool

    def _compile_now(self, so: StructuredOutput) -> Any:
        c = self._compiler
        if so.kind == "json_schema":
            return c.compile_json_schema(so.spec, any_whitespace=False)
        if so.kind == "json_object":
            return c.compile_json_schema('{"type": "object"}', any_whitespace=False)
        if so.kind == "regex":
            return c.compile_regex(so.spec)
        return c.compile_grammar(choice_ebnf(so.choices))

    def compile(self, so: StructuredOutput) -> Any:
        """The CompiledGrammar of `so` (cached). Raises StructuredOutputError naming response_format."""
        if so.compiled is not None:
            return so.compiled
        pool = self._ensure()
        key = so.key
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                self.hits += 1
                return hit
            fut = self._inflight.get(key)
            if fut is None:  # one compile per spec at a time; later askers wait on the same one
                self.misses += 1
                fut = pool.submit(self._compile_now, so)
                self._inflight[key] = fut
                fut.add_done_callback(lambda f, k=key: self._done(k, f))
        try:
            return fut.result(timeout=self.timeout_s)
        except FutureTimeout:
            # the compile goes on in its thread and is cached if it ever ends; this request is refused
            raise StructuredOutputError(
                f"response_format: the {so.kind} took longer than {self.timeout_s:g} s to compile"
            ) from None
        except StructuredOutputError:
            raise
        except Exception as exc:  # xgrammar raises RuntimeError / ValueError / InvalidJSONError
            raise StructuredOutputError(f"response_format: invalid {so.kind}: {_clean(str(exc))}") from None

    def _done(self, key: tuple[str, str, tuple[str, ...]], fut: Future[Any]) -> None:
        with self._lock:
            self._inflight.pop(key, None)
            if fut.cancelled() or fut.exception() is not None:
                return
            self._cache[key] = fut.result()
            self._cache.move_to_end(key)
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)

    def bind(self, sampling: SamplingParams) -> SamplingParams:
        """`sampling` with its grammar compiled (the same object when it asks for no structure)."""
        so = sampling.structured
        if so is None or so.compiled is not None:
            return sampling
        return replace(sampling, structured=replace(so, compiled=self.compile(so)))

    def __len__(self) -> int:
        return len(self._cache)


MAX_ROW_STEP_S = 0.02  # a row whose mask + accept take longer (CPU time) in SLOW_STEPS steps in a row ends with an error
SLOW_STEPS = 3


class GrammarState:
    """One sequence's matcher. `replay`: tokens this request already produced (a resumed run).

    `step_s` is the CPU time this row's grammar took in the current step (mask fill + accept; the thread's CPU time,
    so waiting for the GIL or the processor does not count). Some patterns make xgrammar's per-token work grow with the
    output (e.g. the regex `(a*)*b`: ~10 ms per step after 200 tokens, 75 ms after 400, on the engine thread, so every
    request of the worker would slow down); `too_slow` turns true once SLOW_STEPS steps in a row took more than
    MAX_ROW_STEP_S each, and the engine then ends that request with an error."""

    def __init__(self, compiled: Any, replay: Seq[int] = ()) -> None:
        xgr = _xgr()
        self.matcher = xgr.GrammarMatcher(compiled)
        self.vocab_size = int(compiled.tokenizer_info.vocab_size)
        self.step_s = 0.0
        self.slow_steps = 0  # steps in a row over MAX_ROW_STEP_S, counted at accept
        for i, token in enumerate(replay):
            if not self.matcher.accept_token(int(token)):
                raise StructuredOutputError(
                    f"response_format: the resumed output's token {i} ({int(token)}) does not match the grammar"
                )

    def fill(self, bitmask: Any, index: int) -> None:
        """This row's mask into row `index` of `bitmask`; starts the step's time."""
        t0 = time.thread_time()
        self.matcher.fill_next_token_bitmask(bitmask, index)
        self.step_s = time.thread_time() - t0

    def accept(self, token: int) -> bool:
        t0 = time.thread_time()
        ok = bool(self.matcher.accept_token(int(token)))
        self.step_s += time.thread_time() - t0
        self.slow_steps = self.slow_steps + 1 if self.step_s > MAX_ROW_STEP_S else 0
        return ok

    @property
    def too_slow(self) -> bool:
        return self.slow_steps >= SLOW_STEPS

    @property
    def terminated(self) -> bool:
        return bool(self.matcher.is_terminated())


def constrained_rows(raw: torch.Tensor, states: Seq[GrammarState | None] | None) -> dict[int, torch.Tensor]:
    """Masked copies of the rows of `raw` [S, W] that have a live grammar (row -> [W] tensor): tokens the grammar
    disallows, and every column past the tokenizer's vocabulary, are -inf. {} when no row has a grammar."""
    if states is None:
        return {}
    rows = [i for i, s in enumerate(states) if s is not None and not s.terminated]
    if not rows:
        return {}
    xgr = _xgr()
    width = raw.shape[-1]
    vocab = states[rows[0]].vocab_size  # type: ignore[union-attr]
    bitmask = xgr.allocate_token_bitmask(len(rows), vocab)
    for j, i in enumerate(rows):
        states[i].fill(bitmask, j)  # type: ignore[union-attr]
    sub = raw[rows].float()  # a copy: raw (the logprobs' source) is untouched
    xgr.apply_token_bitmask_inplace(sub, bitmask, vocab_size=min(width, vocab))
    if width > vocab:
        sub[:, vocab:] = float("-inf")
    dead = torch.amax(sub, dim=-1) == float("-inf")  # amax: 7x cheaper than isneginf(sub).all(-1) here
    if bool(dead.any()):  # the model put -inf on every allowed token: choose uniformly among them
        for j in dead.nonzero().flatten().tolist():
            allowed = torch.zeros(1, width)
            xgr.apply_token_bitmask_inplace(allowed, bitmask[j : j + 1], vocab_size=min(width, vocab))
            if width > vocab:
                allowed[:, vocab:] = float("-inf")
            sub[j] = allowed[0]
    return {i: sub[j] for j, i in enumerate(rows)}
