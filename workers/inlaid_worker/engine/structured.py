"""Structured outputs: what a request's output must be, and the grammar that constrains the tokens it may sample.

A request's `SamplingParams.structured` names what its output must be (a JSON Schema, any JSON object, a full
match of a regex, or one of a list of strings); `StructuredOutput` checks it. xgrammar compiles it
(grammar_cache.GrammarCache; a JSON schema's length-bounded strings are made strict JSON by strict_json). Each
sequence keeps a `GrammarState` (an xgrammar GrammarMatcher); every step `constrained_rows` fills the token bitmask
of the rows that have one and returns masked copies of those rows only (rows without a grammar are never touched,
and a batch without any grammar does no work at all). The sampler then applies penalties, temperature, top-k/top-p
to the masked rows; logprobs stay those of the raw distribution. The engine feeds each sampled token to the
matcher; the mask allows EOS only where the grammar can end, and the request finishes ("stop") when the
matcher has terminated. A resumed request (its last prompt tokens are its own earlier output) rebuilds the
matcher by replaying those tokens into a fresh one, within REPLAY_MAX_S of CPU time and REPLAY_MAX_WALL_S of wall
time: past either the request is refused (StructuredOutputError naming response_format: an AdmitError for that
request alone, nothing queued; INTERNAL past the CPU bound or for a token the grammar refuses, OVERLOADED past the
wall-time bound alone). In the worker the replay runs off the engine thread, on the grammar replay pool
(GrammarCache.state_async, called by the servicer on Admit; the engine loop's admit_when_ready waits for it as it
waits for a compile), and engine.add_request is handed the ready GrammarState, so no other request stalls while
it runs; engine.add_request replays on its caller's thread only when it is handed none (direct engine use).

xgrammar is imported only when a request asks for structure, so a worker without the package serves every
other request (and refuses structured ones with a clear error).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from typing import Any

import torch

from inlaid_worker.engine.error_kind import ErrorKind
from inlaid_worker.engine.sampling_params import SamplingError

KINDS = ("json_schema", "json_object", "regex", "choice")
MAX_SPEC_CHARS = 65536  # a schema, a regex, or all choices together (the gateway refuses larger ones first)
MAX_CHOICES = 1024


class StructuredOutputError(SamplingError):
    """The response_format cannot be used: invalid, too large, too slow to compile, or no xgrammar (the client's,
    BAD_INPUT); or a resumed request's replay failed (the worker's own, INTERNAL, or its load, OVERLOADED). Each raise
    names its kind (no default: the AST check in tests/engine/test_error_kinds.py holds every raise to it)."""

    def __init__(self, message: str, *, kind: ErrorKind) -> None:
        super().__init__(message)
        self.kind = kind


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
            raise StructuredOutputError(
                f"response_format: unknown type {self.kind!r} (one of {', '.join(KINDS)})", kind=ErrorKind.BAD_INPUT
            )
        size = len(self.spec) + sum(len(c) for c in self.choices)
        if size > MAX_SPEC_CHARS:
            raise StructuredOutputError(
                f"response_format: the {self.kind} spec has {size} characters, at most {MAX_SPEC_CHARS}",
                kind=ErrorKind.BAD_INPUT,
            )
        if self.kind in ("json_schema", "regex") and not self.spec:
            raise StructuredOutputError(f"response_format: the {self.kind} must not be empty", kind=ErrorKind.BAD_INPUT)
        if self.kind == "choice":
            if not self.choices or len(self.choices) > MAX_CHOICES:
                raise StructuredOutputError(
                    f"response_format: choice needs 1 to {MAX_CHOICES} strings", kind=ErrorKind.BAD_INPUT
                )
            if any(not c for c in self.choices):
                raise StructuredOutputError("response_format: choice strings must not be empty", kind=ErrorKind.BAD_INPUT)
        if self.kind == "json_schema":
            try:
                schema = json.loads(self.spec)
            except ValueError as exc:
                raise StructuredOutputError(
                    f"response_format: the JSON schema is not valid JSON ({exc})", kind=ErrorKind.BAD_INPUT
                ) from None
            except RecursionError:
                raise StructuredOutputError(
                    "response_format: the JSON schema is nested too deep", kind=ErrorKind.BAD_INPUT
                ) from None
            if not isinstance(schema, dict):
                raise StructuredOutputError(
                    "response_format: the JSON schema must be a JSON object", kind=ErrorKind.BAD_INPUT
                )

    @property
    def key(self) -> tuple[str, str, tuple[str, ...]]:
        return (self.kind, self.spec, self.choices)


def require_xgrammar() -> Any:
    """The xgrammar module; StructuredOutputError (naming response_format) when it is not installed."""
    try:
        import xgrammar
    except ImportError:  # the worker serves everything else without it
        raise StructuredOutputError(  # a feature this worker does not offer: a clear 400, as for any unsupported field
            "response_format: structured outputs need the xgrammar package, which this worker lacks",
            kind=ErrorKind.BAD_INPUT,
        ) from None
    return xgrammar


# a row whose mask + accept take longer (CPU time) than MAX_ROW_STEP_S in SLOW_STEPS steps in a row ends with an error
MAX_ROW_STEP_S = 0.02
SLOW_STEPS = 3
# a resumed request's replay of its earlier output through the matcher may take this much CPU time (the replaying
# thread's: a replay-pool thread in the worker, see GrammarCache.state_async); a JSON schema replays at ~1 us a token
# on the CPU (5,896 tokens in 4 ms), the regex `(a*)*b` took 0.31 s for 150 tokens, 0.9 s for 200 and 265 s for 800
# before this bound
REPLAY_MAX_S = 0.5
# ... and this much wall time: the thread's CPU time leaves out the time it waits for the GIL while other threads hold
# it (a replay of 0.88 s of CPU time took 5.97 s with two busy threads), and the request, and the replay-pool thread
# it holds, wait all the same
REPLAY_MAX_WALL_S = 2.0
# the clocks are read every REPLAY_CHECK_EVERY tokens (time.thread_time costs ~20% of a JSON token's accept), and after
# every token once half of either bound is spent (a grammar whose work per token grows overruns by one token at most)
REPLAY_CHECK_EVERY = 32


class GrammarState:
    """One sequence's matcher. `replay`: tokens this request already produced (a resumed run), fed to the matcher
    here, on the calling thread (see _replay's bounds); `compiled` and `replayed` (how many were fed) let
    engine.add_request check a state built elsewhere (GrammarCache.state_async) against its request.

    `step_s` is the CPU time this row's grammar took in the current step (mask fill + accept; the thread's CPU time,
    so waiting for the GIL or the processor does not count). Some patterns make xgrammar's per-token work grow with the
    output (e.g. the regex `(a*)*b`: ~10 ms per step after 200 tokens, 75 ms after 400, on the engine thread, so every
    request of the worker would slow down); `too_slow` turns true once SLOW_STEPS steps in a row took more than
    MAX_ROW_STEP_S each, and the engine then ends that request with an error."""

    def __init__(self, compiled: Any, replay: Seq[int] = ()) -> None:
        xgr = require_xgrammar()
        self.matcher = xgr.GrammarMatcher(compiled)
        self.compiled = compiled
        self.replayed = len(replay)
        self.vocab_size = int(compiled.tokenizer_info.vocab_size)
        self.step_s = 0.0
        self.slow_steps = 0  # steps in a row over MAX_ROW_STEP_S, counted at accept
        if replay:
            self._replay(replay)

    def _replay(self, replay: Seq[int]) -> None:
        """Feeds a resumed request's earlier output to the matcher, at most REPLAY_MAX_S of this thread's CPU time and
        REPLAY_MAX_WALL_S of wall time (clocks read every REPLAY_CHECK_EVERY tokens, then every token once half of
        either is spent). An overrun found only after the last token is let go: the replay is done."""
        n = len(replay)
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        check = REPLAY_CHECK_EVERY
        for i, token in enumerate(replay):
            if not self.matcher.accept_token(int(token)):  # the worker sampled it under this grammar: its own fault
                raise StructuredOutputError(
                    f"response_format: the resumed output's token {i} ({int(token)}) does not match the grammar",
                    kind=ErrorKind.INTERNAL,
                )
            if i + 1 < check or i + 1 == n:
                continue
            cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
            if cpu > REPLAY_MAX_S or wall > REPLAY_MAX_WALL_S:
                raise StructuredOutputError(
                    f"response_format: replaying the resumed output through the grammar took {cpu:.2f} s of CPU "
                    f"time, {wall:.2f} s of wall time, after {i + 1} of {n} tokens (at most {REPLAY_MAX_S:g} s of "
                    f"CPU time or {REPLAY_MAX_WALL_S:g} s of wall time); this grammar is too slow to apply to an "
                    "output this long",
                    # past the CPU bound: INTERNAL. The thread's CPU time does not depend on the worker's load, the same
                    # grammar and output overrun again (a retry would not help), and the request ran fine until the
                    # gateway preempted it: the worker's limit on its own resumption, a 500. Within it but past the
                    # wall-time bound: OVERLOADED (503, retry): the replay waited for the GIL or the processor behind
                    # other threads (0.88 s of CPU time took 5.97 s with two busy threads), the worker's load
                    kind=ErrorKind.INTERNAL if cpu > REPLAY_MAX_S else ErrorKind.OVERLOADED,
                )
            near = cpu > REPLAY_MAX_S / 2 or wall > REPLAY_MAX_WALL_S / 2
            check = i + 1 + (1 if near else REPLAY_CHECK_EVERY)

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


def constrained_rows(
    raw: torch.Tensor, states: Seq[GrammarState | None] | None, at: Seq[int] | None = None
) -> dict[int, torch.Tensor]:
    """Masked copies of the rows of `raw` [S, W] that have a live grammar (row -> [W] tensor): tokens the grammar
    disallows, and every column past the tokenizer's vocabulary, are -inf. {} when no row has a grammar. at: row
    i's row of raw (None: row i)."""
    if states is None:
        return {}
    rows = [i for i, s in enumerate(states) if s is not None and not s.terminated]
    if not rows:
        return {}
    xgr = require_xgrammar()
    width = raw.shape[-1]
    vocab = states[rows[0]].vocab_size  # type: ignore[union-attr]
    bitmask = xgr.allocate_token_bitmask(len(rows), vocab)
    for j, i in enumerate(rows):
        states[i].fill(bitmask, j)  # type: ignore[union-attr]
    sub = raw[rows if at is None else [at[i] for i in rows]].float()  # a copy: raw (the logprobs' source) is kept
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
