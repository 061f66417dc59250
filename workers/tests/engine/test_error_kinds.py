"""Every error a request can meet names its kind where it is raised (engine/error_kind.py): each RequestError raise
(the source, read as a syntax tree, and a real engine), the request error classes, and the grammar cache's own
failures (INTERNAL) and backlog (OVERLOADED) as against a client's bad response_format (BAD_INPUT). The gateway picks
the client's status from the kind alone, so a reworded message can no longer change it."""

from __future__ import annotations

import ast
import threading
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import engine_for
from factories import make_tiny_llama
from inlaid_worker.engine.adapters import UnknownModelError
from inlaid_worker.engine.compile_pool import ClosedError, CompilePool
from inlaid_worker.engine.engine import LLMEngine, RequestError, check_prompt_logprobs_size
from inlaid_worker.engine.error_kind import ErrorKind, declared_kind, kind_of
from inlaid_worker.engine.grammar_cache import GrammarCache
from inlaid_worker.engine.sampling_params import SamplingError, SamplingParams
from inlaid_worker.engine.structured import GrammarState, StructuredOutput, StructuredOutputError
from inlaid_worker.engine.tokenizer import PromptError

PACKAGE = Path(__file__).resolve().parents[2] / "inlaid_worker"


def _request_error_calls() -> list[tuple[str, ast.Call]]:
    calls = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "gen" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "RequestError":
                calls.append((f"{path.relative_to(PACKAGE)}:{node.lineno}", node))
    return calls


def test_every_request_error_raise_names_an_error_kind_member() -> None:
    calls = _request_error_calls()
    assert len(calls) >= 9  # engine.py's eight and the servicer's one (the scan finds them)
    for where, call in calls:
        kind = next((k.value for k in call.keywords if k.arg == "kind"), None)
        named = (
            isinstance(kind, ast.Attribute)
            and isinstance(kind.value, ast.Name)
            and kind.value.id == "ErrorKind"
            and kind.attr in ErrorKind.__members__
        )
        assert named, f"{where}: RequestError without kind=ErrorKind.<member>"
    with pytest.raises(TypeError):
        RequestError("no kind")  # type: ignore[call-arg]


def test_request_error_classes_name_their_kinds_and_anything_else_is_internal() -> None:
    assert kind_of(PromptError("x")) is ErrorKind.BAD_INPUT
    assert kind_of(SamplingError("x")) is ErrorKind.BAD_INPUT
    assert kind_of(StructuredOutputError("response_format: x")) is ErrorKind.BAD_INPUT
    assert kind_of(UnknownModelError("the model 'a' does not exist")) is ErrorKind.UNKNOWN_MODEL
    assert kind_of(ClosedError("compile pool p is closed")) is ErrorKind.SHUTTING_DOWN
    for unforeseen in (KeyError("slot"), ValueError("x"), RuntimeError("can't start new thread")):
        assert declared_kind(unforeseen) is None and kind_of(unforeseen) is ErrorKind.INTERNAL


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> LLMEngine:
    model = make_tiny_llama(tmp_path_factory.mktemp("error-kinds") / "model", vocab=320, max_positions=64)
    return engine_for(model, kv_cache_bytes=1 << 20)


def _kind(engine: LLMEngine, rid: str, prompt: list[int], **kw: Any) -> ErrorKind:
    sampling = kw.pop("sampling", SamplingParams(max_tokens=4))
    with pytest.raises((RequestError, UnknownModelError)) as info:
        engine.add_request(rid, prompt, sampling, **kw)
    return kind_of(info.value)


def test_engine_raise_sites_name_the_fault(engine: LLMEngine) -> None:
    limit = engine.limits.max_model_len
    assert _kind(engine, "empty", []) is ErrorKind.BAD_INPUT
    assert _kind(engine, "long", [1] * limit) is ErrorKind.BAD_INPUT
    assert _kind(engine, "vocab", [1, 320]) is ErrorKind.BAD_INPUT
    assert _kind(engine, "model", [1, 2], model="no-such-adapter") is ErrorKind.UNKNOWN_MODEL
    # the gateway's (or the worker's own) mistakes, never the client's
    assert _kind(engine, "resumed", [1, 2], resumed_output_tokens=5) is ErrorKind.INTERNAL
    engine.add_request("dup", [1, 2], SamplingParams(max_tokens=1))
    try:
        assert _kind(engine, "dup", [1, 2]) is ErrorKind.INTERNAL
    finally:
        engine.abort_request("dup")
        engine.step()


def test_prompt_logprobs_past_their_bound_are_bad_input() -> None:
    with pytest.raises(RequestError) as info:
        check_prompt_logprobs_size(100_000, 20)
    assert info.value.kind is ErrorKind.BAD_INPUT


def _future_kind(future: Any) -> ErrorKind:
    with pytest.raises(Exception) as info:
        future.result(timeout=10)
    return kind_of(info.value)


def test_the_grammar_caches_own_failures_and_backlog_are_not_bad_input(
    engine: LLMEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("xgrammar")
    hf, eos = engine.tokenizer.hf, engine.eos_token_ids
    a = hf.convert_tokens_to_ids("a")
    # the client's: an invalid regex
    cache = GrammarCache(hf, eos, replay_timeout_s=0.3, replay_threads=1, max_replay_threads=1)
    assert _future_kind(cache.compile_async(StructuredOutput("regex", "(a"))) is ErrorKind.BAD_INPUT
    # the worker's backlog: a replay queued behind another past replay_timeout_s
    so = StructuredOutput("regex", "a*b")
    cache.compile(so)
    release = threading.Event()
    real = GrammarState._replay

    def held(state: GrammarState, earlier: Any) -> None:
        release.wait(5.0)
        real(state, earlier)

    with monkeypatch.context() as m:
        m.setattr(GrammarState, "_replay", held)
        busy = [cache.state_async(so, [a] * 3), cache.state_async(so, [a] * 4)]
        try:
            assert [_future_kind(f) for f in busy] == [ErrorKind.OVERLOADED] * 2
        finally:
            release.set()

    # the worker's failure: a replay thread that cannot start
    class Refusing:
        def submit(self, fn: Any) -> Any:
            raise RuntimeError("can't start new thread")

    with monkeypatch.context() as m:
        m.setattr(cache, "_replays", lambda: Refusing())
        assert _future_kind(cache.state_async(so, [a])) is ErrorKind.INTERNAL
    # the worker's failure: a compile thread that cannot start
    fresh = GrammarCache(hf, eos, timeout_s=5.0)
    with monkeypatch.context() as m:
        m.setattr(threading.Thread, "start", lambda self: (_ for _ in ()).throw(RuntimeError("can't start new thread")))
        m.setattr(CompilePool, "live", property(lambda self: 0))
        assert _future_kind(fresh.compile_async(StructuredOutput("regex", "ab"))) is ErrorKind.INTERNAL
    # shutting down
    cache.close()
    with pytest.raises(ClosedError) as info:
        cache.compile_async(StructuredOutput("regex", "abc"))
    assert kind_of(info.value) is ErrorKind.SHUTTING_DOWN
    fresh.close()
