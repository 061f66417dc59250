"""Compiled grammars of structured outputs, cached per tokenizer; compiles run off the engine thread.

`GrammarCache` compiles a StructuredOutput once per (kind, spec) against the model's tokenizer (an LRU of compiled
grammars bounded by bytes; compiles run on a CompilePool whose stuck threads are replaced, and each caller waits at
most COMPILE_TIMEOUT_S; never on the engine thread: the servicer compiles in Prepare and, from the cache, on Admit,
where a compile still under way delays only its own request). `bound` gives a request's SamplingParams their
compiled grammar. `state_async` also builds a resumed request's GrammarState off the engine thread: once its grammar
is compiled (or found cached), its earlier output is replayed into a fresh matcher on a pool of its own (within
structured.REPLAY_MAX_S / REPLAY_MAX_WALL_S, and REPLAY_TIMEOUT_S from the compile's end in all), so replays and
compiles never queue behind each other and the engine thread never replays. `close` (the worker's shutdown) stops
both pools and the deadline thread and fails every future still waiting.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import CancelledError, Future, InvalidStateError
from dataclasses import dataclass, field, replace
from typing import Any

from inlaid_worker.engine.compile_pool import CLOSE_WAIT_S, ClosedError, CompilePool, Timers
from inlaid_worker.engine.error_kind import ErrorKind
from inlaid_worker.engine.sampling_params import SamplingParams
from inlaid_worker.engine.strict_json import strict_json_schema_grammar
from inlaid_worker.engine.structured import (
    REPLAY_MAX_WALL_S,
    GrammarState,
    StructuredOutput,
    StructuredOutputError,
    require_xgrammar,
)

COMPILE_TIMEOUT_S = 10.0
CACHE_BYTES = 256 << 20  # compiled grammars kept (LRU by memory_size_bytes); --grammar-cache-bytes
COMPILE_THREADS = 2
MAX_COMPILE_THREADS = 8  # COMPILE_THREADS plus replacements for compiles stuck past COMPILE_TIMEOUT_S
# resumed requests' replays run on a pool of their own (never queued behind compiles, nor compiles behind them); each
# replay bounds itself (structured.REPLAY_MAX_S of CPU, REPLAY_MAX_WALL_S of wall time), so a thread still busy after
# twice that counts as stuck and is replaced, up to MAX_REPLAY_THREADS
REPLAY_THREADS = 2
MAX_REPLAY_THREADS = 4
# a replay must have ended this long after its grammar's compile did (or after state_async, the grammar cached):
# REPLAY_MAX_WALL_S of its own plus up to twice that waiting for a replay thread; never counted from the compile's start
REPLAY_TIMEOUT_S = 3 * REPLAY_MAX_WALL_S

_XGR_NOISE = re.compile(r"^\s*\[[\d:]+\]\s+\S+:\d+:\s*|Check failed: \(.*?\) is false:\s*")


def _clean(message: str) -> str:
    text = " ".join(_XGR_NOISE.sub("", line).strip() for line in str(message).splitlines() if line.strip())
    return text[:500]


Key = tuple[str, str, tuple[str, ...]]


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
    a stuck compile replaced up to MAX_COMPILE_THREADS); each caller waits at most `timeout_s` for its grammar.
    Resumed requests' replays (state_async) run on a second pool (`replay_threads`, up to `max_replay_threads`, both
    started only by the first replay), each within `replay_timeout_s` of its compile's end."""

    def __init__(
        self,
        hf_tokenizer: Any,
        stop_token_ids: Iterable[int],
        vocab_size: int | None = None,
        max_bytes: int = CACHE_BYTES,
        timeout_s: float = COMPILE_TIMEOUT_S,
        threads: int = COMPILE_THREADS,
        max_threads: int = MAX_COMPILE_THREADS,
        replay_timeout_s: float = REPLAY_TIMEOUT_S,
        replay_threads: int = REPLAY_THREADS,
        max_replay_threads: int = MAX_REPLAY_THREADS,
    ) -> None:
        self._hf = hf_tokenizer
        self._stop = sorted(int(t) for t in stop_token_ids)
        self._vocab = vocab_size
        self._max_bytes = max_bytes
        self.timeout_s = timeout_s
        self._threads = threads
        self._max_threads = max_threads
        self.replay_timeout_s = replay_timeout_s
        self._replay_threads = replay_threads
        self._max_replay_threads = max_replay_threads
        self._replay_pool: CompilePool | None = None
        self._lock = threading.RLock()  # a job cancelled under the lock runs _done inside it
        self._compiler: Any = None
        self._pool: CompilePool | None = None
        self._timers = Timers("grammar-deadlines")
        self._cache: OrderedDict[Key, _Entry] = OrderedDict()
        self._bytes = 0
        self._inflight: dict[Key, _Inflight] = {}
        # state_async's futures still waiting (close fails them); each leaves as it ends (a done-callback, under _lock)
        self._pending: set[Future[Any]] = set()
        self._closed = False
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
        xgr = require_xgrammar()
        with self._lock:
            self._check_open()
            if self._compiler is None:
                vocab = max(self._vocab or 0, len(self._hf))
                info = xgr.TokenizerInfo.from_huggingface(self._hf, vocab_size=vocab, stop_token_ids=self._stop)
                # our own LRU bounds the memory; the compiler's cache would grow unbounded
                self._compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)
                self._pool = CompilePool(self._threads, self._max_threads, self.timeout_s, self._timers)
            assert self._pool is not None
            return self._pool

    def _replays(self) -> CompilePool:
        """The replays' pool, started by the first replay. Its threads are named grammar-replay-N."""
        with self._lock:
            self._check_open()
            if self._replay_pool is None:
                self._replay_pool = CompilePool(
                    self._replay_threads,
                    self._max_replay_threads,
                    2 * REPLAY_MAX_WALL_S,
                    self._timers,
                    name="grammar-replay",
                )
            return self._replay_pool

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the grammar cache is closed (the worker is shutting down)")

    def close(self, timeout_s: float = CLOSE_WAIT_S) -> None:
        """Stops the compile and replay pools and the deadline thread (at the worker's shutdown), waiting at most
        about `timeout_s` for jobs that run (a compile that never ends keeps its daemon thread, not the caller); every
        compile_async / state_async future still waiting fails with ClosedError, and later calls raise it.
        Idempotent: a second call returns at once."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pools = [p for p in (self._pool, self._replay_pool) if p is not None]
            waiters = [w for inflight in self._inflight.values() for w in inflight.waiters]
            waiters += list(self._pending)
            self._inflight.clear()
        deadline = time.monotonic() + timeout_s
        failed: Exception | None = None
        try:
            # the deadlines first: one firing while the pools stop would blame a waiter on its response_format
            for stop in [self._timers.close, *(p.close for p in pools)]:
                try:  # one that fails does not keep the others running
                    stop(max(deadline - time.monotonic(), 0.0))
                except Exception as exc:
                    failed = failed or exc
        finally:  # every waiter settles, whatever a stop raised
            for w in waiters:  # outside the lock: their callbacks (the engine loop's) may take locks of their own
                _settle(
                    w, ClosedError("the grammar cache closed while this request waited (the worker is shutting down)")
                )
        if failed is not None:
            raise failed

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
        that nobody waits for any more is dropped if it has not started (one that runs ends and is cached). Raises
        ClosedError after close()."""
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
            self._check_open()  # close() may have run since _ensure: no entry it would never settle
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
                try:
                    inflight.job = pool.submit(lambda: self._compile_now(so))
                except Exception as exc:  # no thread could start: no entry left that later askers would wait on
                    del self._inflight[key]
                    if isinstance(exc, ClosedError):  # the pool closed (shutdown), not the client's response_format
                        waiter.set_exception(exc)
                    else:
                        waiter.set_exception(
                            StructuredOutputError(
                                f"response_format: the compile could not start: {exc}", kind=ErrorKind.INTERNAL
                            )
                        )
                    return waiter
                inflight.job.add_done_callback(lambda job: self._done(key, so.kind, job))
            else:
                inflight.waiters.add(waiter)
        if not waiter.done():
            try:
                timer = self._timers.call_later(self.timeout_s, lambda: self._expire(waiter, so.kind))
            except Exception as exc:  # (the deadline thread could not start): no wait without its bound
                waiter.add_done_callback(lambda w: self._leave(key, w))
                _settle(waiter, exc)
                return waiter
            waiter.add_done_callback(lambda w: (timer.cancel(), self._leave(key, w)))
        return waiter

    def state_async(self, so: StructuredOutput, replay: Sequence[int]) -> Future[GrammarState]:
        """A future of a fresh GrammarState of `so` with `replay` (a resumed request's earlier output) fed to it, built
        off the caller's thread and the engine's: the compile (compile_async, with its own `timeout_s`) on the compile
        pool, then the replay on the replay pool (never queued behind compiles). It fails with StructuredOutputError
        naming response_format when the compile fails or the replay does (a token the grammar refuses, or past
        structured.REPLAY_MAX_S of CPU / REPLAY_MAX_WALL_S of wall time), or when the replay has not ended
        `replay_timeout_s` after the compile did (queued behind other replays: the queued job is dropped); the
        replay's time is never counted from the compile's start. Cancelling it (the client left) cancels the compile's
        wait and a replay not yet started; a replay under way runs on to its bounds and is dropped. Raises ClosedError
        after close(); a token that is not an int raises (nothing started)."""
        tokens = [int(t) for t in replay]  # before anything starts: a bad token leaves no compile nor pending future
        out: Future[GrammarState] = Future()
        with self._lock:
            self._check_open()
            self._pending.add(out)
        out.add_done_callback(self._forget)
        try:
            compiled = self.compile_async(so)
        except BaseException:  # (closed meanwhile): out is left for nobody
            out.cancel()
            raise
        out.add_done_callback(lambda _: compiled.cancel())  # (if still waited for) the cache forgets this waiter
        compiled.add_done_callback(lambda c: self._on_compiled(c, out, tokens, so.kind))
        return out

    def _forget(self, out: Future[Any]) -> None:
        with self._lock:  # close() copies _pending under the lock
            self._pending.discard(out)

    def _on_compiled(self, compiled: Future[Any], out: Future[GrammarState], tokens: list[int], kind: str) -> None:
        """state_async's next step, once its compile has ended: hands the replay to the replay pool and starts its
        deadline (counted from here, not from the compile's start). Runs on whichever thread ended the compile; a
        done-callback's error would be lost, so every failure settles `out`. A replay whose `out` ends before it
        starts (expired, cancelled, or ended as it was submitted) is dropped, never run for nobody."""
        if out.done():  # cancelled (or settled) meanwhile
            return
        if compiled.cancelled():
            _settle(out, CancelledError("the grammar's compile was cancelled"))
            return
        if compiled.exception() is not None:
            _settle(out, compiled.exception())
            return
        grammar = compiled.result()
        try:
            job = self._replays().submit(lambda: _replay_into(out, grammar, tokens))
        except ClosedError as exc:  # the cache closed meanwhile (shutdown): not the client's response_format
            _settle(out, exc)
            return
        except Exception as exc:  # (e.g. no thread could start)
            _settle(
                out,
                StructuredOutputError(
                    f"response_format: the resumed output's replay could not start: {type(exc).__name__}: {str(exc)[:200]}",
                    kind=ErrorKind.INTERNAL,
                ),
            )
            return
        message = (
            f"response_format: replaying the resumed output through the {kind} took longer than "
            f"{self.replay_timeout_s:g} s (it waited for other requests' replays)"
        )
        try:
            deadline = self._timers.call_later(
                self.replay_timeout_s, lambda: _settle(out, StructuredOutputError(message, kind=ErrorKind.OVERLOADED))
            )
        except Exception as exc:  # (the deadline thread could not start): no replay without its bound
            job.cancel()
            _settle(out, exc)
            return
        out.add_done_callback(lambda _: (deadline.cancel(), job.cancel()))  # runs at once if out ended already

    def _expire(self, waiter: Future[Any], kind: str) -> None:
        # the compile goes on (or is dropped if it never started, see _leave); this caller is refused
        _settle(
            waiter,
            StructuredOutputError(  # the client's grammar: one compile bounded in time (a resumed run's: the gateway's 500)
                f"response_format: the {kind} took longer than {self.timeout_s:g} s to compile", kind=ErrorKind.BAD_INPUT
            ),
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
            exc = None if job.cancelled() else job.exception()
            if not job.cancelled() and exc is None:
                self._store(key, job.result())
        if job.cancelled():  # dropped by _leave (nobody waits), or cancelled queued by its pool's close (shutdown)
            for w in waiters:
                _settle(
                    w, ClosedError("the grammar's compile was cancelled: its pool closed (the worker is shutting down)")
                )
            return
        if exc is None:
            for w in waiters:
                _settle(w, result=job.result())
            return
        if not isinstance(exc, StructuredOutputError):  # xgrammar raises RuntimeError / ValueError / InvalidJSONError
            exc = StructuredOutputError(f"response_format: invalid {kind}: {_clean(str(exc))}", kind=ErrorKind.BAD_INPUT)
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


def _replay_into(out: Future[GrammarState], grammar: Any, tokens: list[int]) -> None:
    """The replay-pool job of state_async: a fresh GrammarState of `grammar` with `tokens` replayed (within
    structured's bounds) settles `out`, unless `out` ended while the job was queued."""
    if out.done():
        return
    try:
        _settle(out, result=GrammarState(grammar, tokens))
    except StructuredOutputError as exc:
        _settle(out, exc)
    except Exception as exc:  # xgrammar's own errors still name response_format
        _settle(
            out,
            StructuredOutputError(
                f"response_format: replaying the resumed output failed: {type(exc).__name__}: {_clean(str(exc))}",
                kind=ErrorKind.INTERNAL,
            ),
        )
    except BaseException as exc:  # handed to `out` as it is: the job's own future is read by nobody
        _settle(out, exc)


def _settle(waiter: Future[Any], exc: BaseException | None = None, result: Any = None) -> None:
    """Completes `waiter` unless it is done already (expired, cancelled or settled by another path)."""
    try:
        if exc is not None:
            waiter.set_exception(exc)
        else:
            waiter.set_result(result)
    except InvalidStateError:
        pass
