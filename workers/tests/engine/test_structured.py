"""Structured outputs (xgrammar): every sampled output of a random tiny model matches its JSON schema / regex /
choice (the mask forces it), greedy or sampled, batched with free rows that stay bit-identical, with stop
strings, logprobs of the raw distribution, worker preemption and a gateway resume; bad specs are refused."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_helpers import drain, engine_for, text, tokens
from factories import make_tiny_llama
from grammar_helpers import held_compiles
from inlaid_worker.engine.engine import LLMEngine
from inlaid_worker.engine.error_kind import ErrorKind
from inlaid_worker.engine.grammar_cache import GrammarCache
from inlaid_worker.engine.sampler import TokenHistory, make_generator, sample_rows
from inlaid_worker.engine.sampling_params import SamplingError, SamplingParams
from inlaid_worker.engine.sequence import FinishReason
from inlaid_worker.engine.structured import (
    MAX_SPEC_CHARS,
    GrammarState,
    StructuredOutput,
    StructuredOutputError,
    constrained_rows,
)
from waiting import until

pytest.importorskip("xgrammar")

# Bounded everywhere, so a random model ends well within MAX_TOKENS. (Strings bounded by maxLength, which
# xgrammar 0.2.9 alone lets hold raw control characters, are in test_structured_compile.py.)
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": "[A-Za-z ]{1,12}"},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "role": {"enum": ["admin", "user", "guest"]},
        "tags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 3},
    },
    "required": ["name", "age", "role", "tags"],
    "additionalProperties": False,
}
JSON_SCHEMA = StructuredOutput("json_schema", json.dumps(SCHEMA))
REGEX = r"[a-z]{3,8}@[a-z]{2,5}\.(com|org)"
CHOICES = ("yes", "no", 'say "hi"\n', "日本")
MAX_TOKENS = 400
PROMPT = "Hello, world! How are"


def matches_schema(out: str) -> bool:
    value = json.loads(out)  # strict: no raw control characters
    return (
        set(value) == {"name", "age", "role", "tags"}
        and re.fullmatch("[A-Za-z ]{1,12}", value["name"]) is not None
        and type(value["age"]) is int
        and 0 <= value["age"] <= 150
        and value["role"] in ("admin", "user", "guest")
        and isinstance(value["tags"], list)
        and len(value["tags"]) <= 3
        and all(type(t) is bool for t in value["tags"])
    )


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("structured") / "model")


@pytest.fixture(scope="module")
def engine(model: Path) -> LLMEngine:
    return engine_for(model, kv_cache_bytes=1 << 20)


def run(engine: LLMEngine, requests: dict[str, SamplingParams], prompt: str = PROMPT) -> dict[str, Any]:
    ids = engine.tokenizer.encode_prompt(prompt)
    for rid, params in requests.items():
        engine.add_request(rid, ids, params)
    return drain(engine)


@pytest.mark.parametrize("greedy", [False, True])
def test_every_output_matches_its_spec_even_for_a_random_model(engine: LLMEngine, greedy: bool) -> None:
    temperature = 0.0 if greedy else 1.0
    specs = {
        "schema": JSON_SCHEMA,
        "object": StructuredOutput("json_object"),
        "regex": StructuredOutput("regex", REGEX),
        "choice": StructuredOutput("choice", choices=CHOICES),
    }
    seeds = [0] if greedy else list(range(6))
    requests = {
        f"{kind}-{seed}": SamplingParams(max_tokens=MAX_TOKENS, temperature=temperature, seed=seed, structured=so)
        for kind, so in specs.items()
        for seed in seeds
    }
    # json_object is unbounded: a random model may not close it within max_tokens; those that end are objects
    outs = run(engine, requests)
    for rid, o in outs.items():
        out, reason = text(o), o[-1].finish_reason
        kind = rid.split("-")[0]
        if kind == "object" and reason is FinishReason.LENGTH:
            continue
        assert reason is FinishReason.STOP, (rid, out)
        assert o[-1].token_ids[-1] in engine.eos_token_ids  # the grammar ended with EOS, not cut short
        if kind == "schema":
            assert matches_schema(out), out
        elif kind == "object":
            assert isinstance(json.loads(out), dict), out
        elif kind == "regex":
            assert re.fullmatch(REGEX, out), out
        else:
            assert out in CHOICES, out
    finished_objects = [r for r in outs if r.startswith("object") and outs[r][-1].finish_reason is FinishReason.STOP]
    assert finished_objects or greedy  # at least one sampled json_object ran to its end


def test_free_rows_are_bit_identical_next_to_grammar_rows(engine: LLMEngine) -> None:
    # sampler level: a batch where rows 1 and 3 have grammars; rows 0 and 2 give the same tokens and logprobs
    # as without any grammar, and raw logits are untouched
    cache = engine.grammars
    compiled = cache.compile(JSON_SCHEMA)
    logits = torch.randn(4, 320, generator=torch.Generator().manual_seed(0))
    before = logits.clone()
    params = [SamplingParams(temperature=0.7, seed=3, logprobs=5, presence_penalty=0.5)] * 4
    histories = [TokenHistory([5, 6], [7, 7])] * 4
    free = sample_rows(logits, params, [make_generator(3) for _ in range(4)], histories)
    grammars = [None, GrammarState(compiled), None, GrammarState(compiled)]
    mixed = sample_rows(logits, params, [make_generator(3) for _ in range(4)], histories, grammars)
    assert torch.equal(logits, before)
    for row in (0, 2):
        assert mixed.tokens[row] == free.tokens[row]
        assert mixed.logprobs[row] == free.logprobs[row]
    assert all(compiled.tokenizer_info.decoded_vocab[mixed.tokens[r]].startswith(b"{") for r in (1, 3))
    # engine level: a free seeded request alongside structured ones samples what it samples alone
    free_params = SamplingParams(temperature=1.0, seed=11, max_tokens=20, ignore_eos=True)
    alone = tokens(run(engine, {"free": free_params})["free"])
    outs = run(
        engine,
        {
            "s1": SamplingParams(max_tokens=MAX_TOKENS, seed=1, structured=JSON_SCHEMA),
            "free": free_params,
            "s2": SamplingParams(max_tokens=MAX_TOKENS, temperature=0, structured=StructuredOutput("regex", REGEX)),
        },
    )
    assert tokens(outs["free"]) == alone
    assert matches_schema(text(outs["s1"]))


def test_logprobs_are_of_the_raw_distribution(engine: LLMEngine) -> None:
    compiled = engine.grammars.compile(StructuredOutput("choice", choices=CHOICES))
    logits = torch.randn(1, 320, generator=torch.Generator().manual_seed(5))
    p = SamplingParams(temperature=1.0, seed=1, logprobs=3)
    out = sample_rows(logits, [p], [make_generator(1)], None, [GrammarState(compiled)])
    lp = torch.log_softmax(logits[0], dim=-1)
    got = out.logprobs[0]
    assert got is not None
    assert got.logprob == pytest.approx(float(lp[out.tokens[0]]))
    assert [i for i, _ in got.top] == torch.topk(lp, 3).indices.tolist()  # top alternatives ignore the mask
    # the engine returns one raw logprob per token of a structured request
    outs = run(engine, {"lp": SamplingParams(max_tokens=MAX_TOKENS, seed=2, logprobs=2, structured=JSON_SCHEMA)})
    o = outs["lp"]
    assert sum(len(x.logprobs or ()) for x in o) == len(tokens(o))


def test_n_choices_share_one_compile_and_the_cache_is_bounded_by_bytes(model: Path) -> None:
    engine = engine_for(model, kv_cache_bytes=1 << 20)
    outs = run(
        engine, {f"c{i}": SamplingParams(max_tokens=MAX_TOKENS, seed=i, structured=JSON_SCHEMA) for i in range(4)}
    )
    assert all(matches_schema(text(o)) for o in outs.values())
    assert engine.grammars.misses == 1
    cache = engine.grammars
    a, b, c = (StructuredOutput("regex", p) for p in ("a+", "b+", "c+"))
    schema_size = cache.compile(JSON_SCHEMA).memory_size_bytes + len(JSON_SCHEMA.spec)  # LRU: schema, a, b, c
    size = {so: cache.compile(so).memory_size_bytes + len(so.spec) for so in (a, b, c)}
    assert cache.nbytes == schema_size + sum(size.values())  # each entry counts its CompiledGrammar's bytes
    cache.max_bytes = size[b] + max(size[a], size[c])  # fits two of the regexes, not three
    assert cache.nbytes <= cache.max_bytes and JSON_SCHEMA not in cache and a not in cache  # the least recent
    assert b in cache and c in cache
    cache.compile(b)  # a hit: b becomes the most recent
    misses = cache.misses
    cache.compile(a)
    assert cache.misses == misses + 1 and a in cache and b in cache and c not in cache
    assert cache.nbytes == size[a] + size[b] <= cache.max_bytes
    assert schema_size > cache.max_bytes
    assert cache.compile(JSON_SCHEMA) is not None and JSON_SCHEMA not in cache  # larger than the cap: used, not kept
    assert a in cache and b in cache


def test_stop_strings_and_max_tokens_still_end_a_structured_request(engine: LLMEngine) -> None:
    outs = run(
        engine,
        {
            "stop": SamplingParams(max_tokens=MAX_TOKENS, seed=1, stop=('"age"',), structured=JSON_SCHEMA),
            "short": SamplingParams(max_tokens=3, seed=1, structured=JSON_SCHEMA),
        },
    )
    assert outs["stop"][-1].finish_reason is FinishReason.STOP
    assert text(outs["stop"]).startswith('{"name": "') and '"age"' not in text(outs["stop"])
    assert outs["short"][-1].finish_reason is FinishReason.LENGTH and len(tokens(outs["short"])) == 3


def test_ignore_eos_still_finishes_when_the_grammar_ends(engine: LLMEngine) -> None:
    so = StructuredOutput("choice", choices=("yes", "no"))
    outs = run(engine, {"x": SamplingParams(max_tokens=50, seed=4, ignore_eos=True, structured=so)})
    assert outs["x"][-1].finish_reason is FinishReason.STOP and text(outs["x"]) in ("yes", "no")


def test_preemption_keeps_the_matcher(model: Path) -> None:
    per_block = engine_for(model, kv_cache_bytes=1 << 20).runner.kv_bytes_per_block  # type: ignore[attr-defined]
    engine = engine_for(model, kv_cache_bytes=6 * per_block, max_num_batched_tokens=8)
    reqs = {f"p{i}": SamplingParams(max_tokens=80, temperature=0, structured=JSON_SCHEMA) for i in range(3)}
    prompts = ["Hello, world! How are", "The capital of France is", "def add(a, b):\n"]
    for (rid, p), prompt in zip(reqs.items(), prompts, strict=True):
        engine.add_request(rid, engine.tokenizer.encode_prompt(prompt), p)
    outs = drain(engine)
    assert engine.num_preemptions > 0
    calm = engine_for(model, kv_cache_bytes=1 << 20)
    for (rid, p), prompt in zip(reqs.items(), prompts, strict=True):
        assert matches_schema(text(outs[rid]))
        assert tokens(outs[rid]) == tokens(run(calm, {rid: p}, prompt)[rid])  # greedy: the same as unpreempted


def test_a_resumed_request_rebuilds_its_matcher_from_its_earlier_tokens(engine: LLMEngine) -> None:
    ids = engine.tokenizer.encode_prompt(PROMPT)
    greedy = SamplingParams(max_tokens=MAX_TOKENS, temperature=0, structured=JSON_SCHEMA)
    full = tokens(run(engine, {"full": greedy})["full"])
    for k in (1, 5, len(full) // 2):
        done = full[:k]  # what the first run had produced when the gateway moved it
        rest = SamplingParams(max_tokens=MAX_TOKENS - k, temperature=0, structured=JSON_SCHEMA)
        engine.add_request("resumed", ids + done, rest, resumed_output_tokens=k)
        tail = tokens(drain(engine)["resumed"])
        assert done + tail == full  # greedy: the resumed run continues exactly where the first one stopped
        assert matches_schema(engine.tokenizer.decode(done + tail[:-1]))
    # sampled: whatever the continuation, the whole output matches
    for seed in range(3):
        rest = SamplingParams(max_tokens=MAX_TOKENS, seed=seed, structured=JSON_SCHEMA)
        engine.add_request("resumed", ids + full[:6], rest, resumed_output_tokens=6)
        tail = tokens(drain(engine)["resumed"])
        assert matches_schema(engine.tokenizer.decode(full[:6] + tail[:-1]))
    # earlier tokens the grammar cannot have produced are refused (nothing is queued)
    bad = engine.tokenizer.encode_prompt("nope")
    with pytest.raises(SamplingError, match="response_format"):
        engine.add_request("bad", ids + bad, greedy, resumed_output_tokens=len(bad))
    assert not engine.has_work


def test_a_resumed_state_built_off_the_engine_thread_is_handed_to_add_request(
    engine: LLMEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GrammarCache.state_async compiles on the compile pool and replays on the replay pool (the worker's path, so its
    engine thread never replays); add_request takes the ready state and the run continues as if it had replayed itself.
    A state that does not fit the request (other replay length, no response_format, another grammar) is refused,
    nothing queued; a replay the grammar refuses fails the future with an error naming response_format."""
    import threading

    from inlaid_worker.engine.grammar_cache import bound

    ids = engine.tokenizer.encode_prompt(PROMPT)
    n, k = 40, 20
    full = tokens(run(engine, {"full": SamplingParams(max_tokens=n, temperature=0, structured=JSON_SCHEMA)})["full"])
    rest = SamplingParams(max_tokens=n - k, temperature=0, structured=JSON_SCHEMA)
    threads: list[str] = []
    real = GrammarState._replay

    def replay(state: GrammarState, earlier: Any) -> None:
        threads.append(threading.current_thread().name)
        real(state, earlier)

    monkeypatch.setattr(GrammarState, "_replay", replay)
    state = engine.grammars.state_async(JSON_SCHEMA, full[:k]).result(timeout=10)
    assert state.replayed == k and threads == [threads[0]] and threads[0].startswith("grammar-replay-")
    for bad_k, params in ((k - 1, rest), (k, SamplingParams(max_tokens=4))):
        with pytest.raises(ValueError, match="a grammar state that replayed 20 tokens was handed"):
            engine.add_request("mismatch", ids + full[:k], params, resumed_output_tokens=bad_k, grammar=state)
    other = bound(SamplingParams(max_tokens=4, structured=StructuredOutput("json_object")), object())
    with pytest.raises(ValueError, match="not of its response_format"):
        engine.add_request("mismatch", ids + full[:k], other, resumed_output_tokens=k, grammar=state)
    assert not engine.has_work
    engine.add_request("resumed", ids + full[:k], bound(rest, state.compiled), resumed_output_tokens=k, grammar=state)
    assert threads == [threads[0]]  # add_request did not replay again
    assert full[:k] + tokens(drain(engine)["resumed"]) == full
    refused = engine.grammars.state_async(JSON_SCHEMA, engine.tokenizer.encode_prompt("nope"))
    with pytest.raises(StructuredOutputError, match="response_format: the resumed output's token 0"):
        refused.result(timeout=10)


def test_a_replay_queued_behind_a_busy_pool_times_out_and_is_dropped(
    engine: LLMEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """state_async's future fails (naming response_format) once `replay_timeout_s` has passed since its compile, also
    while its replay waits for a replay thread; that queued replay is then dropped, never run."""
    import threading

    cache = GrammarCache(
        engine.tokenizer.hf, engine.eos_token_ids, replay_timeout_s=0.3, replay_threads=1, max_replay_threads=1
    )
    so = StructuredOutput("regex", "a*b")
    cache.compile(so)
    a = engine.tokenizer.hf.convert_tokens_to_ids("a")
    release, ran = threading.Event(), []
    real = GrammarState._replay

    def held(state: GrammarState, earlier: Any) -> None:
        ran.append(len(earlier))
        release.wait(5.0)
        real(state, earlier)

    monkeypatch.setattr(GrammarState, "_replay", held)
    first, second = cache.state_async(so, [a] * 3), cache.state_async(so, [a] * 4)
    for f in (first, second):
        with pytest.raises(StructuredOutputError, match=r"response_format: replaying .* through the regex .*0\.3 s"):
            f.result(timeout=5)
    release.set()
    cache.state_async(so, [a] * 5).result(timeout=5)  # the pool goes on: the queued one was dropped
    assert ran == [3, 5]


def test_a_cached_grammar_replays_at_once_while_compiles_hold_the_compile_pool(
    engine: LLMEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replays run on a pool of their own: a resumed request whose grammar is cached replays at once even while slow
    compiles of other specs hold every compile thread (on one shared pool it waited behind them and was refused)."""
    import threading
    import time

    cache = GrammarCache(engine.tokenizer.hf, engine.eos_token_ids, timeout_s=1.0, threads=2, max_threads=8)
    so = StructuredOutput("regex", "a*b")
    cache.compile(so)
    gate = threading.Event()
    started = held_compiles(cache, monkeypatch, gate, "slow", wait_s=5.0)
    real, threads = GrammarState._replay, []

    def replay(state: GrammarState, earlier: Any) -> None:
        threads.append(threading.current_thread().name)
        real(state, earlier)

    monkeypatch.setattr(GrammarState, "_replay", replay)
    try:
        slow = [cache.compile_async(StructuredOutput("regex", f"slow{i}")) for i in range(4)]
        assert until(lambda: len(started) == 2)  # both compile threads are held, two more compiles queued
        a = engine.tokenizer.hf.convert_tokens_to_ids("a")
        t0 = time.perf_counter()
        state = cache.state_async(so, [a] * 3).result(timeout=5)
        assert state.replayed == 3 and time.perf_counter() - t0 < 0.5
        assert threads == [threads[0]] and threads[0].startswith("grammar-replay-")
        assert not any(f.done() for f in slow)
    finally:
        gate.set()


def test_a_burst_of_replays_does_not_delay_fresh_compiles(engine: LLMEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slow (in-bound) replays hold the replay threads; a fresh request's compile still runs at once on the compile
    pool (on one shared pool it queued behind them and timed out, refused as INVALID_ARGUMENT)."""
    import time

    cache = GrammarCache(engine.tokenizer.hf, engine.eos_token_ids, timeout_s=1.0)
    so = StructuredOutput("regex", "a*b")
    cache.compile(so)
    real = GrammarState._replay

    def slow_replay(state: GrammarState, earlier: Any) -> None:  # stands for a replay near REPLAY_MAX_WALL_S
        time.sleep(0.3)
        real(state, earlier)

    monkeypatch.setattr(GrammarState, "_replay", slow_replay)
    a = engine.tokenizer.hf.convert_tokens_to_ids("a")
    replays = [cache.state_async(so, [a] * 2) for _ in range(8)]  # 8 x 0.3 s on 2 threads: 1.2 s of queue
    t0 = time.perf_counter()
    assert cache.compile_async(StructuredOutput("regex", "fresh[0-9]")).result(timeout=5) is not None
    assert time.perf_counter() - t0 < 0.8
    assert all(r.result(timeout=5).replayed == 2 for r in replays)  # within replay_timeout_s, queued or not


def test_a_replay_is_not_charged_the_time_its_compile_took(engine: LLMEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The compile keeps its own `timeout_s` and the replay its own `replay_timeout_s`, counted from the compile's end:
    a compile that took most of its timeout leaves the replay its whole time (once the sum was bounded by timeout_s)."""
    import threading
    import time

    cache = GrammarCache(engine.tokenizer.hf, engine.eos_token_ids, timeout_s=0.5, replay_timeout_s=0.5)
    real = GrammarState._replay

    def slow_replay(state: GrammarState, earlier: Any) -> None:
        time.sleep(0.25)
        real(state, earlier)

    monkeypatch.setattr(GrammarState, "_replay", slow_replay)
    gate = threading.Event()
    held_compiles(cache, monkeypatch, gate, "a", wait_s=5.0)
    a = engine.tokenizer.hf.convert_tokens_to_ids("a")
    out = cache.state_async(StructuredOutput("regex", "a*b"), [a] * 3)
    time.sleep(0.35)  # the compile takes 0.35 s of its 0.5 s
    gate.set()
    assert out.result(timeout=5).replayed == 3


def test_a_replay_whose_future_ended_as_it_was_submitted_never_runs(
    engine: LLMEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """state_async's future ended (settled or cancelled by another path) between on_compiled's first check and the
    replay's submit: the queued replay is dropped at once, never run for nobody."""
    import threading
    import time

    from inlaid_worker.engine.compile_pool import CompilePool

    cache = GrammarCache(engine.tokenizer.hf, engine.eos_token_ids, replay_threads=1, max_replay_threads=1)
    so = StructuredOutput("regex", "a*b")
    gate = threading.Event()
    held_compiles(cache, monkeypatch, gate, "a", wait_s=5.0)
    ran: list[int] = []
    real_replay = GrammarState._replay
    monkeypatch.setattr(GrammarState, "_replay", lambda s, r: (ran.append(len(r)), real_replay(s, r)))
    busy, futures = threading.Event(), []
    real_replays = cache._replays

    def replays() -> CompilePool:  # the future ends just before the replay is submitted (behind a busy thread)
        futures[0].set_exception(StructuredOutputError("response_format: ended elsewhere", kind=ErrorKind.BAD_INPUT))
        pool = real_replays()
        pool.submit(lambda: busy.wait(5.0))
        return pool

    monkeypatch.setattr(cache, "_replays", replays)
    a = engine.tokenizer.hf.convert_tokens_to_ids("a")
    futures.append(cache.state_async(so, [a] * 3))
    gate.set()
    with pytest.raises(StructuredOutputError, match="ended elsewhere"):
        futures[0].result(timeout=5)
    assert until(lambda: cache._replay_pool is not None)
    busy.set()
    time.sleep(0.3)
    assert ran == []
    monkeypatch.setattr(cache, "_replays", real_replays)
    assert cache.state_async(so, [a] * 4).result(timeout=5).replayed == 4 and ran == [4]


@pytest.mark.parametrize(
    ("so", "message"),
    [
        (lambda: StructuredOutput("json_schema", "{not json"), "not valid JSON"),
        (lambda: StructuredOutput("json_schema", "[1, 2]"), "must be a JSON object"),
        (lambda: StructuredOutput("json_schema", '{"type": "frobnicate"}'), "invalid json_schema"),
        (lambda: StructuredOutput("regex", "(unclosed"), "invalid regex"),
        (lambda: StructuredOutput("regex", ""), "must not be empty"),
        (lambda: StructuredOutput("choice", choices=()), "choice needs"),
        (lambda: StructuredOutput("choice", choices=("a", "")), "must not be empty"),
        (lambda: StructuredOutput("grammar", "root ::= 'a'"), "unknown type"),
        (lambda: StructuredOutput("regex", "a" * (MAX_SPEC_CHARS + 1)), "at most"),
    ],
)
def test_bad_specs_are_refused_naming_response_format(engine: LLMEngine, so: Any, message: str) -> None:
    with pytest.raises(StructuredOutputError, match=f"response_format.*{message}"):
        engine.grammars.compile(so())
    assert issubclass(StructuredOutputError, SamplingError)  # the servicer's INVALID_ARGUMENT path


def test_a_slow_compile_is_refused_after_the_timeout(engine: LLMEngine) -> None:
    cache = GrammarCache(engine.tokenizer.hf, engine.eos_token_ids, timeout_s=0.0)
    props = {f"p{i}": {"type": "string", "pattern": f"[a-z]{{1,{i % 40 + 1}}}"} for i in range(200)}
    with pytest.raises(StructuredOutputError, match="longer than 0 s to compile"):
        cache.compile(StructuredOutput("json_schema", json.dumps({"type": "object", "properties": props})))


def test_padded_logits_columns_past_the_vocabulary_are_masked(engine: LLMEngine) -> None:
    compiled = engine.grammars.compile(StructuredOutput("json_object"))
    logits = torch.zeros(2, 320 + 64)
    logits[:, 320:] = 100.0  # a padded model's extra columns: never sampled under a grammar
    rows = constrained_rows(logits, [GrammarState(compiled), None])
    assert set(rows) == {0}
    assert torch.isneginf(rows[0][320:]).all()
    allowed = (~torch.isneginf(rows[0])).nonzero().flatten().tolist()
    assert allowed and all(compiled.tokenizer_info.decoded_vocab[t].startswith(b"{") for t in allowed)
    # every allowed logit at -inf: the row becomes uniform over the allowed tokens instead of NaN
    dead = torch.full((1, 320), float("-inf"))
    row = constrained_rows(dead, [GrammarState(compiled)])[0]
    assert ((~torch.isneginf(row)).nonzero().flatten().tolist()) == allowed


def test_without_xgrammar_only_structured_requests_fail(engine: LLMEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_xgrammar(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "xgrammar":
            raise ImportError("no xgrammar")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_xgrammar)
    cache = GrammarCache(engine.tokenizer.hf, engine.eos_token_ids)
    with pytest.raises(StructuredOutputError, match="xgrammar"):
        cache.compile(StructuredOutput("regex", "a+"))
    outs = run(engine, {"plain": SamplingParams(max_tokens=4, temperature=0, ignore_eos=True)})
    assert len(tokens(outs["plain"])) == 4


def test_a_grammar_too_slow_to_apply_ends_its_request_with_an_error(
    engine: LLMEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row whose mask + accept take more than MAX_ROW_STEP_S in SLOW_STEPS steps in a row (patterns like `(a*)*b`
    grow with the output) ends with an error instead of slowing every request of the worker; a free row next to it goes on."""
    from inlaid_worker.engine import structured

    free_params = SamplingParams(temperature=1.0, seed=11, max_tokens=20, ignore_eos=True)
    alone = tokens(run(engine, {"free": free_params})["free"])
    monkeypatch.setattr(structured, "MAX_ROW_STEP_S", -1.0)  # every step counts as too slow
    outs = run(engine, {"slow": SamplingParams(max_tokens=MAX_TOKENS, structured=JSON_SCHEMA), "free": free_params})
    assert [o.finish_reason for o in outs["slow"]][-1] == FinishReason.ERROR
    assert len(tokens(outs["slow"])) == structured.SLOW_STEPS  # slow steps in a row, not one slow step
    assert tokens(outs["free"]) == alone
    monkeypatch.setattr(structured, "MAX_ROW_STEP_S", 0.02)
    state = GrammarState(engine.grammars.compile(StructuredOutput("regex", "(a*)*b")))
    assert not state.too_slow and state.step_s == 0.0 and state.slow_steps == 0


def test_a_resumed_replay_too_slow_for_its_grammar_is_refused(
    engine: LLMEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resumed request replays its earlier output through the matcher (here on the caller's thread, as
    engine.add_request does when handed no GrammarState; the worker replays on the replay pool): with `(a*)*b` the cost
    grows with the output (0.9 s of CPU for 200 tokens, 265 s for 800), so past REPLAY_MAX_S the request is refused
    (nothing queued) rather than stalling the worker; a grammar that replays fast is untouched by the bound."""
    import time

    from inlaid_worker.engine import structured

    monkeypatch.setattr(structured, "REPLAY_MAX_S", 0.05)
    a = engine.tokenizer.hf.convert_tokens_to_ids("a")
    done = [a] * 200  # ~0.9 s of replay without the bound
    ids = engine.tokenizer.encode_prompt(PROMPT) + done
    so = StructuredOutput("regex", "(a*)*b")
    t0 = time.perf_counter()
    with pytest.raises(
        StructuredOutputError, match=r"response_format: replaying .* took .* s of CPU time, .* after \d+ of 200 tokens"
    ):
        engine.add_request("slow-replay", ids, SamplingParams(max_tokens=8, structured=so), resumed_output_tokens=200)
    assert time.perf_counter() - t0 < 1.5
    assert not engine.has_work
    short = SamplingParams(max_tokens=4, temperature=0, structured=so)  # a short replay of the same grammar is fine
    engine.add_request("short-replay", ids[: -200 + 5], short, resumed_output_tokens=5)
    assert drain(engine)["short-replay"][-1].finish_reason is not None


class _Clocks:
    """Stand-ins for time.thread_time / time.perf_counter: `wall(k)` is the wall clock's k-th reading (0-based);
    the CPU clock stays at 0 (a thread waiting for the GIL spends no CPU time)."""

    def __init__(self, wall: Any) -> None:
        self.wall, self.reads = wall, 0

    def thread_time(self) -> float:
        return 0.0

    def perf_counter(self) -> float:
        self.reads += 1
        return float(self.wall(self.reads - 1))


def test_a_resumed_replay_is_bounded_in_wall_time_too(engine: LLMEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Thread CPU time leaves out the time the engine thread waits for the GIL (0.88 s of CPU took 5.97 s of wall
    time next to two busy Python threads), so the replay is refused past REPLAY_MAX_WALL_S of wall time as well; the
    clocks are read every REPLAY_CHECK_EVERY tokens (then every token once half a bound is spent), and an overrun
    seen only after the last token is let go (the replay is done)."""
    from inlaid_worker.engine import structured

    compiled = engine.grammars.compile(StructuredOutput("regex", "a*b"))
    a = engine.tokenizer.hf.convert_tokens_to_ids("a")
    every = structured.REPLAY_CHECK_EVERY
    clocks = _Clocks(lambda k: 0.1 * k)  # 0.1 s of wall time (no CPU time) per reading
    monkeypatch.setattr(structured, "time", clocks)
    with pytest.raises(
        StructuredOutputError, match=r"took 0\.00 s of CPU time, 2\.10 s of wall time, after \d+ of 1000"
    ):
        GrammarState(compiled, [a] * 1000)
    # readings: the start, 10 every `every` tokens (up to 1.0 s), then one a token from 1.1 s on, refused at 2.1 s
    assert clocks.reads == 22
    clocks = _Clocks(lambda k: 0.0)
    monkeypatch.setattr(structured, "time", clocks)
    GrammarState(compiled, [a] * 1000)  # a fast replay: the clocks read every `every` tokens, not every token
    assert clocks.reads == 1 + (1000 - 1) // every
    clocks = _Clocks(lambda k: 0.0 if k < 2 else 100.0)  # the clock jumps past the bound at the last token
    monkeypatch.setattr(structured, "time", clocks)
    state = GrammarState(compiled, [a] * (2 * every))
    assert clocks.reads == 2 and not state.matcher.is_terminated()


def test_a_compile_that_cannot_start_leaves_no_entry_behind(engine: LLMEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """GrammarCache.compile_async when the pool cannot start a thread and none runs: that request fails naming
    response_format, and the spec is not left in flight (later askers would wait on a compile that never runs)."""
    import threading

    from inlaid_worker.engine.compile_pool import CompilePool

    cache = GrammarCache(engine.tokenizer.hf, engine.eos_token_ids, timeout_s=5.0)
    assert cache.pool.size == 0  # the compiler and its (empty) pool exist

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    so = StructuredOutput("regex", "ab")
    with monkeypatch.context() as m:
        m.setattr(threading.Thread, "start", refuse)
        m.setattr(CompilePool, "live", property(lambda self: 0))  # no thread runs
        with pytest.raises(StructuredOutputError, match="response_format: the compile could not start"):
            cache.compile_async(so).result(timeout=5)
    assert so.key not in cache._inflight
    assert cache.compile_async(so).result(timeout=30) is not None  # asked again once threads start: compiled


def test_a_resumed_request_whose_compile_cannot_start_fails_and_leaves_no_entry(
    engine: LLMEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """state_async when its compile cannot get a thread: its future fails with the compile's error (naming
    response_format) without a replay job, no in-flight entry is left for later requests to wait on, and the next
    state_async of the spec compiles and replays."""
    import threading

    from inlaid_worker.engine.compile_pool import CompilePool

    cache = GrammarCache(engine.tokenizer.hf, engine.eos_token_ids, timeout_s=5.0)
    assert cache.pool.size == 0
    so = StructuredOutput("regex", "a*b")
    a = engine.tokenizer.hf.convert_tokens_to_ids("a")

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    with monkeypatch.context() as m:
        m.setattr(threading.Thread, "start", refuse)
        m.setattr(CompilePool, "live", property(lambda self: 0))
        with pytest.raises(StructuredOutputError, match="response_format: the compile could not start"):
            cache.state_async(so, [a] * 3).result(timeout=5)
    assert so.key not in cache._inflight and cache._replay_pool is None
    assert cache.state_async(so, [a] * 3).result(timeout=30).replayed == 3


def test_state_async_with_a_token_that_is_not_an_int_starts_nothing(engine: LLMEngine) -> None:
    """The tokens are converted before anything starts: a bad one raises and leaves no compile, no in-flight entry
    and no pending future behind (the compile once started first)."""
    cache = GrammarCache(engine.tokenizer.hf, engine.eos_token_ids)
    so = StructuredOutput("regex", "a*b")
    a = engine.tokenizer.hf.convert_tokens_to_ids("a")
    with pytest.raises(ValueError):
        cache.state_async(so, [a, "x"])  # type: ignore[list-item]
    assert cache.misses == 0 and cache.waiting(so) is None and not cache._pending and cache._pool is None
    cache.close()


def test_a_replay_raising_a_base_exception_fails_its_future_at_once(
    engine: LLMEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replay that raises a BaseException other than an Exception hands it to state_async's future at once (it once
    went to the replay job's future, read by nobody, and the request waited for its deadline, then was told it had
    waited for other requests' replays)."""

    class Interrupted(BaseException):
        pass

    cache = GrammarCache(engine.tokenizer.hf, engine.eos_token_ids, replay_timeout_s=2.0)
    so = StructuredOutput("regex", "a*b")
    cache.compile(so)

    def interrupted(state: GrammarState, earlier: Any) -> None:
        raise Interrupted("replay interrupted")

    monkeypatch.setattr(GrammarState, "_replay", interrupted)
    a = engine.tokenizer.hf.convert_tokens_to_ids("a")
    assert isinstance(cache.state_async(so, [a]).exception(timeout=1), Interrupted)
    cache.close()


def test_cancelling_a_resumed_request_cancels_its_compile_wait(
    engine: LLMEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelling state_async's future (the client left) takes its waiter off the compile, and a compile nobody else
    waits for and that has not started is cancelled, never run."""
    import threading

    cache = GrammarCache(engine.tokenizer.hf, engine.eos_token_ids, threads=1, max_threads=1, timeout_s=5.0)
    gate = threading.Event()
    started = held_compiles(cache, monkeypatch, gate, "slow", wait_s=5.0)
    try:
        held = cache.compile_async(StructuredOutput("regex", "slow0"))  # holds the only compile thread
        assert until(lambda: started == ["slow0"])
        so = StructuredOutput("regex", "q+")
        a = engine.tokenizer.hf.convert_tokens_to_ids("a")
        out = cache.state_async(so, [a])
        assert cache.waiting(so) == 1
        job = cache._inflight[so.key].job
        assert job is not None and not job.done()
        assert out.cancel()
        assert cache.waiting(so) is None and job.cancelled()
    finally:
        gate.set()
    assert held.result(timeout=5) is not None and started == ["slow0"]
    cache.close()


def test_a_queued_replay_is_cancelled_when_its_future_ends(engine: LLMEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """state_async's future ending (here cancelled) while its replay waits for a replay thread cancels the queued
    replay job itself (not only skipped once it runs)."""
    import threading

    cache = GrammarCache(engine.tokenizer.hf, engine.eos_token_ids, replay_threads=1, max_replay_threads=1)
    so = StructuredOutput("regex", "a*b")
    cache.compile(so)
    pool, release, jobs = cache._replays(), threading.Event(), []
    busy = pool.submit(lambda: release.wait(5.0))  # holds the only replay thread
    real_submit = pool.submit

    def submit(fn: Any) -> Any:
        jobs.append(real_submit(fn))
        return jobs[-1]

    monkeypatch.setattr(pool, "submit", submit)
    a = engine.tokenizer.hf.convert_tokens_to_ids("a")
    try:
        out = cache.state_async(so, [a] * 3)
        assert len(jobs) == 1 and not jobs[0].done()
        assert out.cancel()
        assert jobs[0].cancelled()
    finally:
        release.set()
    assert busy.result(timeout=5) is True
    cache.close()


def test_a_replay_that_cannot_be_submitted_fails_and_leaves_no_deadline(
    engine: LLMEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replay pool's submit raising (no thread could start) fails state_async's future at once, naming the
    failure, and sets no deadline for a replay that never runs."""

    class Refusing:
        def submit(self, fn: Any) -> Any:
            raise RuntimeError("can't start new thread")

    cache = GrammarCache(engine.tokenizer.hf, engine.eos_token_ids)
    so = StructuredOutput("regex", "a*b")
    cache.compile(so)
    monkeypatch.setattr(cache, "_replays", lambda: Refusing())
    a = engine.tokenizer.hf.convert_tokens_to_ids("a")
    out = cache.state_async(so, [a])
    with pytest.raises(
        StructuredOutputError,
        match="response_format: the resumed output's replay could not start: RuntimeError: can't start new thread",
    ):
        out.result(timeout=1)
    assert not [t for *_, t in cache._timers._heap if not t.cancelled]  # only the compile's own (cancelled) timer
    cache.close()
