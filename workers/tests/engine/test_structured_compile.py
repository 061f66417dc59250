"""Grammar compiles (structured outputs): a compile that never ends cannot use up the compile threads, callers of a
slow compile give up at the timeout while the compile goes on, a queued compile nobody waits for is dropped, the
cache is bounded by bytes (`--grammar-cache-bytes`), and JSON schema strings bounded by minLength/maxLength are
strict JSON (no raw control characters)."""

from __future__ import annotations

import json
import threading
import time

import pytest
from engine_helpers import drain, engine_for, text
from factories import make_tiny_llama
from grammar_helpers import held_compiles
from inlaid_worker.config import load_config
from inlaid_worker.engine.compile_pool import CompilePool, Timers
from inlaid_worker.engine.engine import LLMEngine
from inlaid_worker.engine.grammar_cache import GrammarCache
from inlaid_worker.engine.sampling_params import SamplingParams
from inlaid_worker.engine.sequence import FinishReason
from inlaid_worker.engine.structured import StructuredOutput, StructuredOutputError
from waiting import until

xgr = pytest.importorskip("xgrammar")

BOUNDED = {
    "type": "object",
    "properties": {"s": {"type": "string", "minLength": 1, "maxLength": 6}},
    "required": ["s"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> LLMEngine:
    return engine_for(make_tiny_llama(tmp_path_factory.mktemp("compile") / "model"), kv_cache_bytes=1 << 20)


def regex(pattern: str) -> StructuredOutput:
    return StructuredOutput("regex", pattern)


def test_compiles_that_never_end_do_not_use_up_the_compile_threads(
    engine: LLMEngine, gate: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = GrammarCache(engine.tokenizer.hf, engine.eos_token_ids, timeout_s=0.3, threads=2, max_threads=4)
    held_compiles(cache, monkeypatch, gate, "hang")
    for i in range(2):  # as many hung compiles as the pool had threads
        with pytest.raises(StructuredOutputError, match=r"response_format: the regex took longer than 0\.3 s"):
            cache.compile(regex(f"hang{i}"))
    assert until(lambda: cache.pool.stuck == 2)
    t0 = time.monotonic()
    assert cache.compile(regex("[a-z]+")) is not None  # replacements compile it (it used to time out in the queue)
    assert time.monotonic() - t0 < 2.0
    assert cache.pool.live == 2 and cache.pool.size == 4
    # the cap: a third hung compile gets no replacement, the pool runs on what is left, and never grows past it
    with pytest.raises(StructuredOutputError, match="took longer"):
        cache.compile(regex("hang2"))
    assert until(lambda: cache.pool.stuck == 3)
    assert cache.pool.size == 4 and cache.pool.live == 1
    assert cache.compile(regex("[0-9]+")) is not None
    # once they end, their grammars are cached and the extra threads leave
    gate.set()
    assert until(lambda: cache.pool.stuck == 0 and cache.pool.size == 2)
    assert all(regex(f"hang{i}") in cache for i in range(3))


def test_callers_of_a_slow_compile_share_it_and_give_up_at_the_timeout(
    engine: LLMEngine, gate: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = GrammarCache(engine.tokenizer.hf, engine.eos_token_ids, timeout_s=0.4)
    started = held_compiles(cache, monkeypatch, gate, "slow")  # (the only spec starting with "slow")
    first, second = cache.compile_async(regex("slow")), cache.compile_async(regex("slow"))
    assert cache.misses == 1 and cache.waiting(regex("slow")) == 2
    for fut in (first, second):
        with pytest.raises(StructuredOutputError, match="took longer than 0.4 s"):
            fut.result(timeout=3)
    assert until(
        lambda: cache.waiting(regex("slow")) == 0
    )  # nobody waits; the compile goes on and is cached when it ends
    gate.set()
    assert until(lambda: regex("slow") in cache)
    assert started == ["slow"]
    assert cache.compile_async(regex("slow")).done()  # a hit now


def test_a_queued_compile_whose_callers_left_is_dropped(
    engine: LLMEngine, gate: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = GrammarCache(engine.tokenizer.hf, engine.eos_token_ids, threads=1, max_threads=1)
    started = held_compiles(cache, monkeypatch, gate, "busy")  # (the only spec starting with "busy")
    busy = cache.compile_async(regex("busy"))
    assert until(lambda: started == ["busy"])
    queued = cache.compile_async(regex("queued"))  # waits behind "busy" on the one thread
    assert cache.waiting(regex("queued")) == 1
    assert queued.cancel()  # the client left
    assert cache.waiting(regex("queued")) is None  # the queued compile is gone
    gate.set()
    assert busy.result(timeout=5) is not None
    assert cache.compile(regex("after")) is not None
    assert started == ["busy", "after"] and regex("queued") not in cache


def test_bad_specs_fail_the_future_with_the_same_error(engine: LLMEngine) -> None:
    fut = engine.grammars.compile_async(regex("(unclosed"))
    with pytest.raises(StructuredOutputError, match="response_format: invalid regex"):
        fut.result(timeout=10)


def test_the_cache_cap_is_a_worker_setting() -> None:
    assert load_config([], env={}).grammar_cache_bytes == 256 << 20
    assert load_config([], env={"INLAID_WORKER_GRAMMAR_CACHE_BYTES": "1000"}).grammar_cache_bytes == 1000
    assert load_config(["--grammar-cache-bytes", "2000"], env={}).grammar_cache_bytes == 2000
    with pytest.raises(ValueError, match="grammar-cache-bytes"):
        load_config(["--grammar-cache-bytes", "0"], env={})


def test_compile_pool_jobs_run_and_fail_like_futures() -> None:
    pool = CompilePool(1, 2, 5.0, Timers())
    assert pool.submit(lambda: 7).result(timeout=5) == 7
    with pytest.raises(ZeroDivisionError):
        pool.submit(lambda: 1 / 0).result(timeout=5)
    with pytest.raises(ValueError):
        CompilePool(3, 2, 1.0, Timers())


def test_length_bounded_strings_hold_no_raw_control_characters(engine: LLMEngine) -> None:
    compiled = engine.grammars.compile(StructuredOutput("json_schema", json.dumps(BOUNDED)))

    def accepts(doc: str) -> bool:
        matcher = xgr.GrammarMatcher(compiled, terminate_without_stop_token=True)
        return bool(matcher.accept_string(doc)) and bool(matcher.is_terminated())

    for raw in ("\x01", "\t", "\x1f", "\x00"):
        assert not accepts('{"s": "a' + raw + 'b"}'), repr(raw)
    assert accepts('{"s": "abc"}') and accepts('{"s": "日本"}')
    assert accepts('{"s": "a\\"\\n\\u0001"}')  # escapes are one character each: 4 of at most 6
    assert not accepts('{"s": "abcdefg"}') and not accepts('{"s": ""}')  # the bounds still hold
    assert accepts('{"s": "\\\\\\\\\\\\\\\\\\\\\\\\"}') and not accepts('{"s": "\\\\\\\\\\\\\\\\\\\\\\\\\\\\"}')


def test_sampled_length_bounded_strings_parse_as_json(engine: LLMEngine) -> None:
    so = StructuredOutput("json_schema", json.dumps(BOUNDED))
    ids = engine.tokenizer.encode_prompt("Hello")
    for seed in range(24):
        engine.add_request(f"b{seed}", ids, SamplingParams(max_tokens=100, seed=seed, structured=so))
    for rid, outs in drain(engine).items():
        assert outs[-1].finish_reason is FinishReason.STOP, rid
        value = json.loads(text(outs))  # strict: a raw control character would raise
        assert 1 <= len(value["s"]) <= 6, value


def test_a_job_whose_thread_cannot_start_is_not_left_queued(monkeypatch: pytest.MonkeyPatch) -> None:
    """CompilePool.submit when no thread can start: the error reaches the caller, and neither the job (which would run
    later for nobody) nor a phantom worker stays behind; the next submit works."""
    pool = CompilePool(1, 2, 5.0, Timers())
    real = threading.Thread.start

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    with pytest.raises(RuntimeError, match="start new thread"):
        pool.submit(lambda: 1)
    assert not pool._queue and pool.size == 0
    monkeypatch.setattr(threading.Thread, "start", real)
    assert pool.submit(lambda: 2).result(timeout=5) == 2


def test_a_thread_that_cannot_start_beside_a_live_one_leaves_the_job_to_it(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = CompilePool(2, 2, 5.0, Timers())
    assert pool.submit(lambda: 1).result(timeout=5) == 1  # one live worker
    real = threading.Thread.start

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    fut = pool.submit(lambda: 2)  # a second thread is wanted and cannot start: the live one runs the job
    monkeypatch.setattr(threading.Thread, "start", real)
    assert fut.result(timeout=5) == 2 and pool.size == 1
