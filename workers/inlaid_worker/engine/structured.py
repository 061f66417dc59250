"""Structured outputs: grammars compiled by xgrammar constrain the tokens a request may sample.

A request's `SamplingParams.structured` names what its output must be (a JSON Schema, any JSON object, a full
match of a regex, or one of a list of strings). `GrammarCache` compiles it once per (kind, spec) against the
model's tokenizer (an LRU of compiled grammars bounded by bytes; compiles run on a CompilePool whose stuck threads
are replaced, and each caller waits at most COMPILE_TIMEOUT_S; never on the engine thread: the servicer compiles in
Prepare and, from the cache, on Admit, where a compile still under way delays only its own request). A JSON schema's
length-bounded strings are made strict JSON (strict_json_schema_grammar). Each sequence keeps a
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
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from inlaid_worker.engine.compile_pool import CompilePool, Timers
from inlaid_worker.engine.sampling_params import SamplingError, SamplingParams

KINDS = ("json_schema", "json_object", "regex", "choice")
MAX_SPEC_CHARS = 65536  # a schema, a regex, or all choices together (the gateway refuses larger ones first)
MAX_CHOICES = 1024
COMPILE_TIMEOUT_S = 10.0
CACHE_BYTES = 256 << 20  # compiled grammars kept (LRU by memory_size_bytes); --grammar-cache-bytes
COMPILE_THREADS = 2
MAX_COMPILE_THREADS = 8  # COMPILE_THREADS plus replacements for compiles stuck past COMPILE_TIMEOUT_S

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


Key = tuple[str, str, tuple[str, ...]]

# xgrammar 0.2.9 turns a string bounded by minLength/maxLength into `"\"" X{min, max} "\""` with the character rule
# `X ::= (([^\"\\\r\n]))`: raw control characters other than CR and LF pass (invalid JSON) and escapes do not.
# strict_json_schema_grammar gives such rules one JSON string character instead: an unescaped character other than
# U+0000-U+001F, `"` and `\`, or an escape (each counts as one character of the value, as minLength/maxLength mean).
_LOOSE_CHARS = re.compile(r'^(\S+) ::= \(\(\[\^\\"\\\\\\r\\n\]\)\)$', re.MULTILINE)
_JSON_CHAR = r'(([^\0-\x1f\"\\]) | ("\\" (([\"\\/bfnrt]) | ("u" [A-Fa-f0-9] [A-Fa-f0-9] [A-Fa-f0-9] [A-Fa-f0-9]))))'


def strict_json_schema_grammar(spec: str) -> Any:
    """xgrammar's grammar of the JSON schema `spec` (compact separators), with length-bounded strings made valid
    JSON (see _LOOSE_CHARS); the Grammar itself when it has no such string."""
    grammar = _xgr().Grammar.from_json_schema(spec, any_whitespace=False)
    text, fixed = _LOOSE_CHARS.subn(lambda m: f"{m.group(1)} ::= {_JSON_CHAR}", str(grammar))
    return _xgr().Grammar.from_ebnf(text) if fixed else grammar


def choice_ebnf(choices: Iterable[str]) -> str:
    """An EBNF grammar whose language is exactly the given strings (JSON escapes inside the literals)."""
    return "root ::= " + " | ".join(json.dumps(c, ensure_ascii=False) for c in choices)


@dataclass(frozen=True)
class _Entry:
    compiled: Any
    nbytes: int  # the CompiledGrammar's memory_size_bytes plus the key's characters


@dataclass(eq=False)
class _Inflight:
    """One compile of one spec under way, and the callers waiting for it."""

    waiters: set[Future[Any]] = field(default_factory=set)
    job: Future[Any] | None = None


class GrammarCache:
    """Compiles StructuredOutputs for one tokenizer; thread-safe. Nothing of xgrammar is built until the first
    structured request. `vocab_size`: the model's vocabulary (at least the tokenizer's; a padded model's
    larger logits width is masked off by constrained_rows).

    Compiled grammars are kept in an LRU bounded by bytes (`max_bytes`: each entry's memory_size_bytes plus its
    spec's length; a grammar larger than the cap is used but not kept). Compiles run on a CompilePool (COMPILE_THREADS,
    a stuck compile replaced up to MAX_COMPILE_THREADS); each caller waits at most `timeout_s` for its grammar."""

    def __init__(
        self,
        hf_tokenizer: Any,
        stop_token_ids: Iterable[int],
        vocab_size: int | None = None,
        max_bytes: int = CACHE_BYTES,
        timeout_s: float = COMPILE_TIMEOUT_S,
        threads: int = COMPILE_THREADS,
        max_threads: int = MAX_COMPILE_THREADS,
    ) -> None:
        self._hf = hf_tokenizer
        self._stop = sorted(int(t) for t in stop_token_ids)
        self._vocab = vocab_size
        self._max_bytes = max_bytes
        self.timeout_s = timeout_s
        self._threads = threads
        self._max_threads = max_threads
        self._lock = threading.RLock()  # a job cancelled under the lock runs _done inside it
        self._compiler: Any = None
        self._pool: CompilePool | None = None
        self._timers = Timers("grammar-deadlines")
        self._cache: OrderedDict[Key, _Entry] = OrderedDict()
        self._bytes = 0
        self._inflight: dict[Key, _Inflight] = {}
        self.hits = 0
        self.misses = 0

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    @max_bytes.setter
    def max_bytes(self, value: int) -> None:
        with self._lock:
            self._max_bytes = value
            self._trim()

    @property
    def nbytes(self) -> int:
        """Bytes the cached grammars hold (as counted against max_bytes)."""
        return self._bytes

    @property
    def pool(self) -> CompilePool:
        return self._ensure()

    def _ensure(self) -> CompilePool:
        xgr = _xgr()
        with self._lock:
            if self._compiler is None:
                vocab = max(self._vocab or 0, len(self._hf))
                info = xgr.TokenizerInfo.from_huggingface(self._hf, vocab_size=vocab, stop_token_ids=self._stop)
                # our own LRU bounds the memory; the compiler's cache would grow unbounded
                self._compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)
                self._pool = CompilePool(self._threads, self._max_threads, self.timeout_s, self._timers)
            assert self._pool is not None
            return self._pool

    def _compile_now(self, so: StructuredOutput) -> Any:
        c = self._compiler
        if so.kind == "json_schema":
            return c.compile_grammar(strict_json_schema_grammar(so.spec))
        if so.kind == "json_object":
            return c.compile_json_schema('{"type": "object"}', any_whitespace=False)
        if so.kind == "regex":
            return c.compile_regex(so.spec)
        return c.compile_grammar(choice_ebnf(so.choices))

    def compile(self, so: StructuredOutput) -> Any:
        """The CompiledGrammar of `so` (cached), waiting for it. Raises StructuredOutputError naming response_format."""
        return self.compile_async(so).result()

    def compile_async(self, so: StructuredOutput) -> Future[Any]:
        """A future of `so`'s CompiledGrammar, done at once on a cache hit. It fails with StructuredOutputError
        (naming response_format) when the spec is invalid or its compile has not ended `timeout_s` from now.
        Callers of one spec share one compile. Cancelling the future (the client left) stops the waiting; a compile
        that nobody waits for any more is dropped if it has not started (one that runs ends and is cached)."""
        waiter: Future[Any] = Future()
        if so.compiled is not None:
            waiter.set_result(so.compiled)
            return waiter
        try:
            pool = self._ensure()
        except StructuredOutputError as exc:
            waiter.set_exception(exc)
            return waiter
        key = so.key
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                self.hits += 1
                waiter.set_result(hit.compiled)
                return waiter
            inflight = self._inflight.get(key)
            if inflight is None:  # one compile per spec at a time; later askers wait on the same one
                self.misses += 1
                inflight = self._inflight[key] = _Inflight({waiter})
                inflight.job = pool.submit(lambda: self._compile_now(so))
                inflight.job.add_done_callback(lambda job: self._done(key, so.kind, job))
            else:
                inflight.waiters.add(waiter)
        if not waiter.done():
            timer = self._timers.call_later(self.timeout_s, lambda: self._expire(waiter, so.kind))
            waiter.add_done_callback(lambda w: (timer.cancel(), self._leave(key, w)))
        return waiter

    def _expire(self, waiter: Future[Any], kind: str) -> None:
        # the compile goes on (or is dropped if it never started, see _leave); this caller is refused
        _settle(
            waiter,
            StructuredOutputError(f"response_format: the {kind} took longer than {self.timeout_s:g} s to compile"),
        )

    def _leave(self, key: Key, waiter: Future[Any]) -> None:
        with self._lock:
            inflight = self._inflight.get(key)
            if inflight is None:
                return
            inflight.waiters.discard(waiter)
            if not inflight.waiters and inflight.job is not None:
                inflight.job.cancel()  # only if still queued; then _done drops the entry

    def _done(self, key: Key, kind: str, job: Future[Any]) -> None:
        with self._lock:
            inflight = self._inflight.pop(key, None)
            waiters = list(inflight.waiters) if inflight is not None else []
            if job.cancelled():
                return
            exc = job.exception()
            if exc is None:
                self._store(key, job.result())
        if exc is None:
            for w in waiters:
                _settle(w, result=job.result())
            return
        if not isinstance(exc, StructuredOutputError):  # xgrammar raises RuntimeError / ValueError / InvalidJSONError
            exc = StructuredOutputError(f"response_format: invalid {kind}: {_clean(str(exc))}")
        for w in waiters:
            _settle(w, exc)

    def _store(self, key: Key, compiled: Any) -> None:  # under _lock
        nbytes = int(compiled.memory_size_bytes) + len(key[1]) + sum(len(c) for c in key[2])
        if nbytes > self._max_bytes:
            return
        self._cache[key] = _Entry(compiled, nbytes)
        self._bytes += nbytes
        self._trim()

    def _trim(self) -> None:  # under _lock
        while self._bytes > self._max_bytes and self._cache:
            _, old = self._cache.popitem(last=False)
            self._bytes -= old.nbytes

    def bind(self, sampling: SamplingParams) -> SamplingParams:
        """`sampling` with its grammar compiled (the same object when it asks for no structure)."""
        so = sampling.structured
        if so is None or so.compiled is not None:
            return sampling
        return bound(sampling, self.compile(so))

    def __len__(self) -> int:
        return len(self._cache)

    def __contains__(self, so: StructuredOutput) -> bool:
        """Whether `so`'s grammar is cached (without touching its place in the LRU)."""
        return so.key in self._cache

    def waiting(self, so: StructuredOutput) -> int | None:
        """Callers waiting for `so`'s compile; None when none is under way."""
        with self._lock:
            inflight = self._inflight.get(so.key)
            return None if inflight is None else len(inflight.waiters)


def bound(sampling: SamplingParams, compiled: Any) -> SamplingParams:
    """`sampling` whose structured output carries `compiled`."""
    assert sampling.structured is not None
    return replace(sampling, structured=replace(sampling.structured, compiled=compiled))


def _settle(waiter: Future[Any], exc: BaseException | None = None, result: Any = None) -> None:
    """Completes `waiter` unless it is done already (expired, cancelled or settled by another path)."""
    try:
        if exc is not None:
            waiter.set_exception(exc)
        else:
            waiter.set_result(result)
    except InvalidStateError:
        pass


# a row whose mask + accept take longer (CPU time) than MAX_ROW_STEP_S in SLOW_STEPS steps in a row ends with an error
MAX_ROW_STEP_S = 0.02
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
