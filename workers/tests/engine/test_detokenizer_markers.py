"""Requests that keep their tool format's markers (SamplingParams.keep_tool_markers): the detokenizer decodes with
special tokens kept and the other special ids left out (`drop`). Without a kept marker in the output its deltas are
today's, call by call; with markers, the text is the decode of the output with them kept and every other special
token (EOS included) absent; PromptTokenizer.marker_drop picks the markers of its tool format that are special."""

from __future__ import annotations

import random
from typing import Any

import pytest
from factories import make_tokenizer
from inlaid_worker.engine.detokenizer import IncrementalDetokenizer, decode, special_ids
from inlaid_worker.engine.tokenizer import PromptTokenizer
from inlaid_worker.engine.tool_template import ToolSupport
from test_detokenizer import sentencepiece_tokenizer
from test_detokenizer_stream import feed, random_ids, stops_for

MARKERS = ["[TOOL_CALLS]", "[ARGS]"]


def with_markers(tok: Any) -> Any:
    tok.add_special_tokens({"additional_special_tokens": MARKERS})
    return tok


TOKENIZERS = {"bpe": with_markers(make_tokenizer(320)), "sp": with_markers(sentencepiece_tokenizer())}


def ids_of(tok: Any, marker: str) -> int:
    return int(tok.convert_tokens_to_ids(marker))


@pytest.mark.parametrize("name", ["bpe", "sp"])
def test_without_a_kept_marker_the_deltas_are_todays(name: str) -> None:
    tok = TOKENIZERS[name]
    drop = special_ids(tok) - {ids_of(tok, "[TOOL_CALLS]")}
    rng = random.Random(name)
    for case in range(200):
        ids = random_ids(tok, rng)  # ids below vocab_size: specials (EOS, BOS, ...) spliced in, never a marker
        stops = stops_for(tok, ids, rng) if case % 3 else ()
        min_tokens = rng.choice([0, 0, 3, 10])
        seed = rng.randrange(1 << 30)
        kept = IncrementalDetokenizer(tok, stops, min_tokens, drop)
        today = IncrementalDetokenizer(tok, stops, min_tokens)
        assert feed(kept, ids, random.Random(seed))[0] == feed(today, ids, random.Random(seed))[0], (ids, stops)
        assert kept.text == today.text


@pytest.mark.parametrize("name", ["bpe", "sp"])
def test_kept_markers_show_after_prose_and_other_specials_do_not(name: str) -> None:
    tok = TOKENIZERS[name]
    call, args = ids_of(tok, "[TOOL_CALLS]"), ids_of(tok, "[ARGS]")
    drop = special_ids(tok) - {call, args}
    eos = int(tok.eos_token_id)
    assert eos in drop and call not in drop
    words = tok("Hello world!", add_special_tokens=False)["input_ids"]
    ids = [*words, call, *words, args, eos, *words, eos]
    expected = decode(tok, [*words, call, *words, args, *words], skip_special_tokens=False)
    assert expected.count("[TOOL_CALLS]") == 1 and expected.count("[ARGS]") == 1
    for step in (1, 2, 3):
        d = IncrementalDetokenizer(tok, (), 0, drop)
        text = "".join(d.add(ids[i : i + step]) for i in range(0, len(ids), step)) + d.flush()
        assert text == expected
        assert tok.eos_token not in text
    today = IncrementalDetokenizer(tok)
    plain = "".join(today.add([t]) for t in ids) + today.flush()
    assert "[TOOL_CALLS]" not in plain and plain == decode(tok, ids)


def test_dropped_tokens_count_for_min_tokens() -> None:
    tok = TOKENIZERS["bpe"]
    drop = special_ids(tok)
    eos = int(tok.eos_token_id)
    words = tok("Hello world!", add_special_tokens=False)["input_ids"]
    stop = decode(tok, words[:1])
    for keep in (True, False):
        # a stop string is ignored while min_tokens holds: the two dropped EOS count, so the second stop ends it
        d = IncrementalDetokenizer(tok, (stop,), 3, drop if keep else None)
        d.add([eos])
        d.add([eos])
        assert d.add(words[:1]) == stop and not d.stopped
        d.add(words[:1])
        assert d.stopped


def test_marker_drop_keeps_the_tool_formats_special_markers() -> None:
    tok = TOKENIZERS["bpe"]
    prompt = PromptTokenizer(tok)
    prompt.tool_support = ToolSupport("mistral", native=True)
    drop = prompt.marker_drop()
    assert drop == special_ids(tok) - {ids_of(tok, "[TOOL_CALLS]"), ids_of(tok, "[ARGS]")}
    prompt.tool_support = ToolSupport("pythonic", native=True)  # <|python_start|> is no token here
    assert prompt.marker_drop() is None
    prompt.tool_support = ToolSupport("hermes", native=True)
    assert prompt.marker_drop() is None
