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


def _modules() -> list[tuple[str, ast.Module]]:
    return [
        (str(path.relative_to(PACKAGE)), ast.parse(path.read_text(), str(path)))
        for path in sorted(PACKAGE.rglob("*.py"))
        if "gen" not in path.relative_to(PACKAGE).parts
    ]


def _kind_parameter(cls: ast.ClassDef) -> tuple[int | None, bool] | None:
    """(its position among the constructor's arguments after self, None if keyword-only; whether it has a default) of
    a class built with a `kind` argument: an __init__ taking `kind`, or a dataclass field `kind: ErrorKind`."""
    for node in cls.body:
        if isinstance(node, ast.FunctionDef) and node.name == "__init__":
            args = node.args
            positional = [a.arg for a in args.posonlyargs + args.args][1:]
            if "kind" in positional:
                i = positional.index("kind")
                return i, i >= len(positional) - len(args.defaults)
            keyword = [a.arg for a in args.kwonlyargs]
            if "kind" in keyword:
                return None, args.kw_defaults[keyword.index("kind")] is not None
    fields = [n for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]
    names = [f.target.id for f in fields]  # type: ignore[union-attr]
    if "kind" in names and ast.unparse(fields[names.index("kind")].annotation) == "ErrorKind":
        return names.index("kind"), fields[names.index("kind")].value is not None
    return None


def _kind_classes() -> dict[str, int | None]:
    """Every class of the package constructed with a kind argument -> the kind's position (None: keyword-only)."""
    found: dict[str, int | None] = {}
    for where, tree in _modules():
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            param = _kind_parameter(cls)
            if param is not None:
                position, has_default = param
                assert not has_default, f"{where}: {cls.name}'s kind has a default: each raise must name its own"
                found[cls.name] = position
    return found


def _names_a_kind(node: ast.expr | None) -> bool:
    """`ErrorKind.<member>`, or `ErrorKind.<a> if ... else ErrorKind.<b>`."""
    if isinstance(node, ast.IfExp):
        return _names_a_kind(node.body) and _names_a_kind(node.orelse)
    return (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "ErrorKind"
        and node.attr in ErrorKind.__members__
    )


def test_every_kind_carrying_error_is_built_naming_an_error_kind_member() -> None:
    classes = _kind_classes()
    assert {"RequestError", "StructuredOutputError", "AdmitError"} <= set(classes)
    calls: dict[str, int] = {}
    for where, tree in _modules():
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in classes):
                continue
            name, position = node.func.id, classes[node.func.id]
            calls[name] = calls.get(name, 0) + 1
            kind = next((k.value for k in node.keywords if k.arg == "kind"), None)
            if kind is None and position is not None and position < len(node.args):
                kind = node.args[position]
            assert _names_a_kind(kind), f"{where}:{node.lineno}: {name} without its kind as ErrorKind.<member>"
    # the scan finds them: engine.py's eight RequestErrors and the servicer's one; structured.py's and the grammar
    # cache's StructuredOutputErrors; the engine loop's and the servicer's AdmitErrors
    assert calls["RequestError"] >= 9 and calls["StructuredOutputError"] >= 15 and calls["AdmitError"] >= 4, calls
    with pytest.raises(TypeError):
        RequestError("no kind")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        StructuredOutputError("response_format: no kind")  # type: ignore[call-arg]


def test_request_error_classes_name_their_kinds_and_anything_else_is_internal() -> None:
    assert kind_of(PromptError("x")) is ErrorKind.BAD_INPUT
    assert kind_of(SamplingError("x")) is ErrorKind.BAD_INPUT
    assert kind_of(StructuredOutputError("response_format: x", kind=ErrorKind.BAD_INPUT)) is ErrorKind.BAD_INPUT
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


class _Clocks:
    """time.thread_time / time.perf_counter stand-ins: each reading of either adds its step (seconds)."""

    def __init__(self, cpu_step: float, wall_step: float) -> None:
        self.cpu = self.wall = 0.0
        self.cpu_step, self.wall_step = cpu_step, wall_step

    def thread_time(self) -> float:
        self.cpu += self.cpu_step
        return self.cpu

    def perf_counter(self) -> float:
        self.wall += self.wall_step
        return self.wall


def test_a_resumed_replays_failures_are_never_the_clients(engine: LLMEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A resumed request's replay runs the worker's own earlier output through the grammar: a token the grammar refuses
    is the worker's fault (INTERNAL); the CPU-time bound holds whatever the load, so the same replay overruns again
    (INTERNAL); the wall-time bound alone is the worker's load (OVERLOADED, retry). Before, all three were BAD_INPUT: a
    client 400 for a request the gateway preempted."""
    pytest.importorskip("xgrammar")
    from inlaid_worker.engine import structured

    compiled = engine.grammars.compile(StructuredOutput("regex", "a*b"))
    hf = engine.tokenizer.hf
    a, b = hf.convert_tokens_to_ids("a"), hf.convert_tokens_to_ids("b")

    def replay_kind(tokens: list[int]) -> ErrorKind:
        with pytest.raises(StructuredOutputError) as info:
            GrammarState(compiled, tokens)
        return kind_of(info.value)

    assert replay_kind([a, b, a]) is ErrorKind.INTERNAL  # token 2 after the match ended
    with monkeypatch.context() as m:
        m.setattr(structured, "time", _Clocks(cpu_step=0.1, wall_step=0.1))  # CPU and wall alike: the CPU bound
        assert replay_kind([a] * 1000) is ErrorKind.INTERNAL
    with monkeypatch.context() as m:
        m.setattr(structured, "time", _Clocks(cpu_step=0.0, wall_step=0.1))  # waiting for the GIL: no CPU time
        assert replay_kind([a] * 1000) is ErrorKind.OVERLOADED
