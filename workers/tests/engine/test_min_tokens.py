"""min_tokens end to end in the engine (a tiny random Llama, greedy): EOS and stop token ids are banned, and stop
strings end nothing, until the output (a resumed run's earlier tokens included) has that many tokens."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import pytest
from engine_helpers import drain, engine_for, text, tokens
from factories import make_tiny_llama, make_tokenizer
from inlaid_worker.engine.detokenizer import IncrementalDetokenizer, decode
from inlaid_worker.engine.engine import LLMEngine
from inlaid_worker.engine.sampling_params import SamplingParams
from inlaid_worker.engine.sequence import FinishReason

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> LLMEngine:
    return engine_for(make_tiny_llama(tmp_path_factory.mktemp("mt") / "model"), kv_cache_bytes=1 << 20)


def greedy(engine: LLMEngine, prompt: list[int], resumed: int = 0, **kw: Any) -> tuple[list[int], Any]:
    params = SamplingParams(temperature=0, **{"max_tokens": 8, "ignore_eos": True, **kw})
    engine.add_request("r", prompt, params, resumed_output_tokens=resumed)
    outs = drain(engine)["r"]
    return tokens(outs), outs


def test_stop_token_ids_wait_for_min_tokens(engine: LLMEngine) -> None:
    prompt = engine.tokenizer.encode_prompt(PROMPT)
    ref, _ = greedy(engine, prompt)
    stop = (ref[0],)
    assert greedy(engine, prompt, stop_token_ids=stop)[0] == [ref[0]]  # without min_tokens: stops at once
    out, outs = greedy(engine, prompt, stop_token_ids=stop, min_tokens=4)
    assert ref[0] not in out[:4] and len(out) >= 5
    if ref[0] in out:  # allowed again from the 5th token on, where it ends the request
        assert out[-1] == ref[0] and outs[-1].finish_reason is FinishReason.STOP


def test_eos_waits_for_min_tokens_unless_ignored(engine: LLMEngine) -> None:
    prompt = engine.tokenizer.encode_prompt(PROMPT)
    ref, _ = greedy(engine, prompt)
    saved = engine.eos_token_ids
    engine.eos_token_ids = {ref[0]}  # the model's first greedy token plays EOS
    try:
        assert greedy(engine, prompt, ignore_eos=False)[0] == [ref[0]]
        out, _ = greedy(engine, prompt, ignore_eos=False, min_tokens=3)
        assert ref[0] not in out[:3] and len(out) >= 4
        assert greedy(engine, prompt, ignore_eos=True, min_tokens=3)[0] == ref  # EOS is no stop: not banned
    finally:
        engine.eos_token_ids = saved


def test_a_resumed_run_counts_its_earlier_output(engine: LLMEngine) -> None:
    prompt = engine.tokenizer.encode_prompt(PROMPT)
    ref, _ = greedy(engine, prompt)
    resumed = prompt + ref[:2]  # 2 tokens generated before a preemption
    nxt = greedy(engine, resumed, resumed=2)[0][0]
    assert greedy(engine, resumed, resumed=2, stop_token_ids=(nxt,), min_tokens=2)[0] == [nxt]  # 2 already
    out, _ = greedy(engine, resumed, resumed=2, stop_token_ids=(nxt,), min_tokens=3)  # one more first
    assert out[0] != nxt and len(out) >= 2


def test_stop_strings_wait_for_min_tokens_in_the_engine(engine: LLMEngine) -> None:
    prompt = engine.tokenizer.encode_prompt(PROMPT)
    ref, _ = greedy(engine, prompt)
    free = engine.tokenizer.decode(ref)
    first = engine.tokenizer.decode(ref[:1])
    if not first:
        pytest.skip("the first token decodes to nothing")
    stop = first[:1]  # occurs at once
    assert text(greedy(engine, prompt, stop=(stop,))[1]) == ""
    out, outs = greedy(engine, prompt, stop=(stop,), min_tokens=8)
    assert out == ref and text(outs) == free and outs[-1].finish_reason is FinishReason.LENGTH


@lru_cache(maxsize=1)
def tokenizer() -> Any:
    return make_tokenizer(320)


def stream(ids: list[int], stop: tuple[str, ...], min_tokens: int) -> str:
    d = IncrementalDetokenizer(tokenizer(), stop, min_tokens)
    return "".join([d.add([t]) for t in ids] + [d.flush()])


def test_the_detokenizer_ignores_stop_strings_in_the_first_min_tokens() -> None:
    tok = tokenizer()
    full = "ab. cd. ef. gh."
    ids = tok(full, add_special_tokens=False)["input_ids"]
    assert decode(tok, ids) == full
    assert stream(ids, (".",), 0) == "ab"
    assert stream(ids, (".",), len(ids)) == full  # never reached: no stop at all
    # min_tokens past the first ".": the text of those tokens stays; the next "." after it ends the output
    m = next(k for k in range(1, len(ids)) if decode(tok, ids[:k]).count(".") == 1)
    prefix = decode(tok, ids[:m])
    assert stream(ids, (".",), m) == full[: full.index(".", len(prefix))]
    assert stream(ids, (".",), m) != "ab"


class Chars:
    """A decoder whose token i is the character chr(i)."""

    def decode(self, token_ids: list[int], **kwargs: Any) -> str:
        return "".join(map(chr, token_ids))


def test_a_stop_string_begun_in_the_first_min_tokens_does_not_cut_their_text() -> None:
    ids = [ord(c) for c in "abXYcdXYe"]
    d = IncrementalDetokenizer(Chars(), ("XY",), 3)  # "abX" stays: the "XY" over it and the 4th token is no stop
    assert "".join([d.add([t]) for t in ids] + [d.flush()]) == "abXYcd" and d.stopped
    d = IncrementalDetokenizer(Chars(), ("XY",), 0)
    assert "".join([d.add([t]) for t in ids] + [d.flush()]) == "ab"


def test_a_grammar_that_can_only_end_still_ends_under_min_tokens(engine: LLMEngine) -> None:
    pytest.importorskip("xgrammar")
    from inlaid_worker.engine.structured import StructuredOutput

    prompt = engine.tokenizer.encode_prompt(PROMPT)
    choice = StructuredOutput("choice", choices=("yes", "no"))
    plain = greedy(engine, prompt, structured=choice, max_tokens=20)
    held = greedy(engine, prompt, structured=choice, max_tokens=20, min_tokens=15)
    # EOS is banned while the grammar can go on; once "yes" / "no" is complete only EOS is left, and it ends
    for out, outs in (plain, held):
        assert text(outs) in ("yes", "no") and outs[-1].finish_reason is FinishReason.STOP and len(out) < 15
        assert out[-1] in engine.eos_token_ids  # the row kept its EOS (not an arbitrary token of an all -inf row)
