"""Incremental detokenization: no broken UTF-8 in deltas, deltas add up to the full decode, stop strings."""

from functools import lru_cache
from typing import Any

from factories import make_tokenizer
from inlaid_worker.engine.detokenizer import REPLACEMENT_CHAR, IncrementalDetokenizer, decode, stop_prefix_len

TEXTS = [
    "Unicode: café, naïve, 日本語, emoji 🙂 and more",
    "🙂🙂 日本 语言 — ünïcödé ✓ 👩‍👩‍👧 end",
    "The capital of France is Paris. Hello, world!",
]


@lru_cache(maxsize=1)
def tokenizer() -> Any:
    return make_tokenizer(320)


def stream(ids: list[int], stop: tuple[str, ...] = ()) -> tuple[list[str], IncrementalDetokenizer]:
    d = IncrementalDetokenizer(tokenizer(), stop)
    deltas = [d.add([t]) for t in ids]
    deltas.append(d.flush())
    return deltas, d


def test_multibyte_characters_split_across_tokens_are_held_back() -> None:
    tok = tokenizer()
    split_somewhere = False
    for text in TEXTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        split_somewhere |= any(REPLACEMENT_CHAR in decode(tok, [t]) for t in ids)
        deltas, d = stream(ids)
        assert all(REPLACEMENT_CHAR not in x for x in deltas)
        assert "".join(deltas) == decode(tok, ids) == text == d.text
    assert split_somewhere  # the test exercises partial characters


def test_special_tokens_are_not_emitted() -> None:
    tok = tokenizer()
    ids = tok("Hello", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert "".join(stream(ids)[0]) == "Hello"


def test_stop_string_across_token_boundaries_cuts_the_text() -> None:
    tok = tokenizer()
    text = "The capital of France is Paris. Hello, world! More"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    for stop in ["Paris.", "s Par", "world!", "🙂"]:
        deltas, d = stream(ids, (stop, "never-matches"))
        out = "".join(deltas)
        expected = text.split(stop)[0] if stop in text else text
        assert out == expected and d.stopped == (stop in text)
        # Nothing after the cut, and no emitted prefix of text ever contained the stop string's beginning
        # beyond what the final output has.
        emitted = ""
        for x in deltas:
            emitted += x
            assert expected.startswith(emitted)


def test_a_possible_stop_prefix_is_held_until_resolved() -> None:
    tok = tokenizer()
    d = IncrementalDetokenizer(tok, ("world!!",))
    pieces = [d.add(tok(p, add_special_tokens=False)["input_ids"]) for p in ["Hello, ", "wor", "ld!", " ok"]]
    assert pieces[0] == "Hello, " and pieces[1] == "" and pieces[2] == ""
    assert pieces[3] == "world! ok" and not d.stopped


def test_stop_prefix_len() -> None:
    assert stop_prefix_len("abc", ("cde",)) == 1
    assert stop_prefix_len("abcd", ("bcdx", "d")) == 3
    assert stop_prefix_len("abc", ("xyz",)) == 0


def test_token_texts_give_each_tokens_exact_bytes() -> None:
    from inlaid_worker.engine.detokenizer import TokenTexts

    tok = tokenizer()
    texts = TokenTexts(tok)
    partial = 0
    for text in TEXTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        pieces = [texts.get(i) for i in ids]
        # the tokens' bytes spell the text exactly, also where a token holds only part of a character
        assert b"".join(raw for _, raw in pieces) == text.encode("utf-8")
        for i, (token, raw) in zip(ids, pieces, strict=True):
            assert token == tok.decode([i])
            partial += REPLACEMENT_CHAR in token
            if REPLACEMENT_CHAR not in token:
                assert raw == token.encode("utf-8")
    assert partial > 0  # the texts do split characters across tokens
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    assert texts.get(eos) == ("<|im_end|>", b"<|im_end|>")  # special tokens keep their text
    assert texts.get(eos) is texts.get(eos)  # cached


@lru_cache(maxsize=1)
def sentencepiece_tokenizer() -> Any:
    """A Llama-2-style fast tokenizer: Metaspace pieces ("▁word"), byte fallback (<0xNN>) and Llama's decoder,
    which strips the leading space of a decode (so decode([id]) of "▁world" alone is "world")."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    pieces += ["▁", "▁Hello", "▁world", "Hello", "!", "▁caf", "é"]
    vocab = {p: i for i, p in enumerate(pieces)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def test_token_texts_keep_the_leading_space_of_sentencepiece_tokens() -> None:
    # Llama-2's decoder strips the first space of every decode: a token decoded alone loses its "▁" space, so
    # logprob tokens would not add up to the text (completions' text_offset drifts by one per word) and chat
    # logprobs' bytes would miss the 0x20. Each token's text must be its text inside a longer decode.
    from inlaid_worker.engine.detokenizer import TokenTexts

    tok = sentencepiece_tokenizer()
    texts = TokenTexts(tok)
    ids = [tok.convert_tokens_to_ids(p) for p in ["▁Hello", "▁world", "!", "▁", "<0x0A>", "▁caf", "<0xC3>", "<0xA9>"]]
    full = tok.decode([1] + ids, skip_special_tokens=True)  # after BOS: the first space is stripped
    assert full == "Hello world! \n caf\u00e9"
    got = [texts.get(i) for i in ids]
    assert [t for t, _ in got[:6]] == [" Hello", " world", "!", " ", "\n", " caf"]
    assert b"".join(raw for _, raw in got) == b" Hello world! \n caf\xc3\xa9"
    assert texts.get(tok.convert_tokens_to_ids("Hello")) == ("Hello", b"Hello")  # no "▁": no space
    assert texts.get(tok.convert_tokens_to_ids("<0x20>")) == (" ", b" ")  # a byte token for a space
