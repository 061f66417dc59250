"""decoder_for: the Rust backend's decode, called directly for a plain transformers fast tokenizer, gives what
decode() (transformers' decode with the engine's arguments) gives, on any ids; other tokenizers keep decode()."""

from __future__ import annotations

import random
from functools import lru_cache
from typing import Any

from factories import make_tokenizer
from inlaid_worker.engine.detokenizer import IncrementalDetokenizer, decode, decoder_for


@lru_cache(maxsize=1)
def tokenizer() -> Any:
    return make_tokenizer(320)


def word_tokenizer(vocab: int) -> Any:  # the served benchmarks' tokenizer (WordLevel, WordPiece decoder)
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0", bos_token="w1", eos_token="w2")


def test_the_fast_path_decodes_like_decode() -> None:
    rng = random.Random(0)
    for tok in (tokenizer(), word_tokenizer(500)):
        fast = decoder_for(tok)
        assert getattr(fast, "func", None) is not decode  # the backend path is taken for these
        for _ in range(300):  # specials, split UTF-8 characters, empty lists
            ids = [rng.randrange(tok.vocab_size) for _ in range(rng.randint(0, 12))]
            assert fast(ids) == decode(tok, ids)


class Stub:
    """A tokenizer that is not a transformers fast tokenizer (as test doubles and slow tokenizers are)."""

    def decode(self, token_ids: list[int], **kwargs: Any) -> str:
        assert kwargs == {"skip_special_tokens": True, "clean_up_tokenization_spaces": False}
        return "".join(chr(97 + t % 26) for t in token_ids)


def test_other_tokenizers_keep_decode() -> None:
    assert decoder_for(Stub())([0, 1, 2]) == "abc"
    d = IncrementalDetokenizer(Stub(), ("cd",))
    assert d.add([0, 1]) == "ab" and d.add([2]) == "" and d.add([3, 4]) == "" and d.stopped
    assert d.text == "ab"


def test_a_subclass_that_overrides_decode_keeps_it() -> None:
    tok = tokenizer()

    class Shouting(type(tok)):  # type: ignore[misc]
        def _decode(self, token_ids: Any, **kwargs: Any) -> str:
            return super()._decode(token_ids, **kwargs).upper()

    tok.__class__ = Shouting
    try:
        ids = tok("Hello there", add_special_tokens=False)["input_ids"]
        assert decoder_for(tok)(ids) == "HELLO THERE" == decode(tok, ids)
    finally:
        tok.__class__ = Shouting.__mro__[1]
