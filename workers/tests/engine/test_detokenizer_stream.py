"""The detokenizer's faster paths (tokenizers' DecodeStream, no stop-string bookkeeping without stop strings, the
tail scan of stop_prefix_len) give exactly the deltas of the code before them (detokenizer_reference.py), call by
call: random token streams with split and invalid UTF-8, special tokens, stop strings that hit and that do not,
min_tokens, several tokens per add, on byte-level BPE, Llama-style SentencePiece (byte fallback, a decoder that
strips the first space) and WordPiece tokenizers."""

from __future__ import annotations

import random
from functools import lru_cache
from typing import Any

import pytest
from detokenizer_reference import ReferenceDetokenizer
from detokenizer_reference import find_stop as reference_find_stop
from detokenizer_reference import stop_prefix_len as reference_stop_prefix_len
from factories import make_tokenizer
from inlaid_worker.engine.detokenizer import IncrementalDetokenizer, decode, find_stop, stop_prefix_len
from test_detokenizer import sentencepiece_tokenizer
from test_detokenizer_fast_decode import Stub, word_tokenizer

REPLACEMENT = "\ufffd"
TEXTS = [
    "Unicode: café, naïve, 日本語, emoji 🙂 and more",
    "🙂🙂 日本 语言 — ünïcödé ✓ 👩‍👩‍👧 end",
    "The capital of France is Paris. Hello, world! def add(a, b):\n    return a + b\n",
]


@lru_cache(maxsize=1)
def tokenizers() -> dict[str, Any]:
    return {"bpe": make_tokenizer(320), "sp": sentencepiece_tokenizer(), "word": word_tokenizer(300), "stub": Stub()}


def random_ids(tok: Any, rng: random.Random) -> list[int]:
    """Encoded text with random ids (specials, lone bytes of a multi-byte character) spliced in."""
    vocab = 26 if isinstance(tok, Stub) else tok.vocab_size
    if isinstance(tok, Stub):
        ids = [rng.randrange(vocab) for _ in range(40)]
    else:
        text = rng.choice(TEXTS) + " " + rng.choice(TEXTS)
        ids = tok(text, add_special_tokens=False)["input_ids"]
    for _ in range(rng.randint(0, 6)):
        ids.insert(rng.randrange(len(ids) + 1), rng.randrange(vocab))
    return ids


def stops_for(tok: Any, ids: list[int], rng: random.Random) -> tuple[str, ...]:
    full = decode(tok, ids)
    stops: list[str] = []
    for _ in range(rng.randint(0, 3)):
        if full and rng.random() < 0.6:  # a piece of the text: it hits (unless min_tokens holds it off)
            a = rng.randrange(len(full))
            stops.append(full[a : a + rng.randint(1, 8)])
        else:
            stops.append(rng.choice(["never!", "日本語?", "🙂🙂🙂", "a + c", "\n\n\n"]))
    return tuple(s for s in stops if s)


def feed(d: Any, ids: list[int], rng: random.Random) -> tuple[list[tuple[str, bool]], bool]:
    """Every delta (add in groups of 1-3 tokens, then flush) with the stopped flag after it; whether d still had a
    DecodeStream before the flush (the reference has none)."""
    out: list[tuple[str, bool]] = []
    i = 0
    while i < len(ids):
        n = 1 if rng.random() < 0.8 else rng.randint(2, 3)
        out.append((d.add(ids[i : i + n]), d.stopped))
        i += n
    streamed = getattr(d, "_stream", None) is not None
    out.append((d.flush(), d.stopped))
    return out, streamed


@pytest.mark.parametrize("name", ["bpe", "sp", "word", "stub"])
def test_deltas_equal_the_reference_call_by_call(name: str) -> None:
    tok = tokenizers()[name]
    rng = random.Random(name)
    streamed = 0
    for case in range(250):
        ids = random_ids(tok, rng)
        stops = stops_for(tok, ids, rng) if case % 3 else ()
        min_tokens = rng.choice([0, 0, 3, 10])
        seed = rng.randrange(1 << 30)
        new = IncrementalDetokenizer(tok, stops, min_tokens)
        ref = ReferenceDetokenizer(tok, stops, min_tokens)
        got, stream_kept = feed(new, ids, random.Random(seed))
        assert got == feed(ref, ids, random.Random(seed))[0], (ids, stops, min_tokens)
        assert new.text == ref.text
        streamed += stream_kept
    if name == "stub":
        assert streamed == 0  # not a transformers fast tokenizer: no stream
    else:  # many cases ran on the stream from the first token to the last (an invalid UTF-8 byte may drop it)
        assert streamed > 80


def test_the_stream_path_alone_gives_the_reference_deltas() -> None:
    # every token of these texts goes through the stream (it never drops it): the stream's own text is compared
    tok = tokenizers()["sp"]
    for text in ("Hello world! café Hello", " caf\u00e9 world!\n\U0001f642 Hello"):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        new, ref = IncrementalDetokenizer(tok), ReferenceDetokenizer(tok)
        got = [new.add([t]) for t in ids]
        assert new._stream is not None
        assert got == [ref.add([t]) for t in ids]
        assert "".join(got) + new.flush() == decode(tok, ids)


def test_invalid_utf8_after_a_stripped_prefix_equals_the_reference() -> None:
    # Llama's Strip decoder turns a lone "▁" into "": the stream then moves its window start on its own, and a piece
    # with an invalid byte decoded there held one U+FFFD too many (review, session 10)
    tok = tokenizers()["sp"]
    ids = tok.convert_tokens_to_ids(["\u2581", "<0x20>", "<0xC3>", "\u2581"])
    assert tok.unk_token_id not in ids
    new, ref = IncrementalDetokenizer(tok), ReferenceDetokenizer(tok)
    got = [new.add([t]) for t in ids] + [new.flush()]
    assert got == [ref.add([t]) for t in ids] + [ref.flush()]
    assert "".join(got).count(REPLACEMENT) == 1


def test_multibyte_and_special_tokens_stream_like_the_reference() -> None:
    tok = tokenizers()["bpe"]
    eos = tok.eos_token_id
    for text in TEXTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        ids = ids[:3] + [eos] + ids[3:] + [eos]  # a special token mid-stream and at the end decodes to nothing
        new, ref = IncrementalDetokenizer(tok), ReferenceDetokenizer(tok)
        got = [new.add([t]) for t in ids] + [new.flush()]
        assert got == [ref.add([t]) for t in ids] + [ref.flush()]
        assert "".join(got) == text and all("\ufffd" not in x for x in got)


def _random_text(rng: random.Random, shortest: int, longest: int) -> str:
    return "".join(rng.choice("ab日🙂 ") for _ in range(rng.randint(shortest, longest)))


def _random_stops(rng: random.Random, longest: int) -> tuple[str, ...]:
    """One to three stop strings of 1..longest characters."""
    return tuple(_random_text(rng, 1, longest) for _ in range(rng.randint(1, 3)))


def test_stop_prefix_len_equals_the_reference() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        text, stops = _random_text(rng, 0, 12), _random_stops(rng, 6)
        assert stop_prefix_len(text, stops) == reference_stop_prefix_len(text, stops), (text, stops)
    assert stop_prefix_len("xx ab", ("abc", "b")) == 2 and stop_prefix_len("aaa", ("aab",)) == 2


def test_find_stop_equals_the_reference() -> None:
    rng = random.Random(8)
    for _ in range(3000):
        text, stops = _random_text(rng, 0, 14), _random_stops(rng, 4)
        start = rng.randint(0, len(text))
        assert find_stop(text, stops, start) == reference_find_stop(text, stops, start), (text, stops, start)
    assert find_stop("xxabyab", ("yab", "ab"), 3) == 4 and find_stop("abc", ("d",), 0) == -1
