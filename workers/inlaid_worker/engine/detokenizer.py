"""Incremental detokenization with stop strings.

Text is emitted only when it is final:
- a token that ends in the middle of a UTF-8 character decodes to U+FFFD; such text is held back until the
  next tokens complete the character (decoding a small window of recent tokens, as vLLM does);
- text that could be the start of a stop string is held back until it is resolved; when a stop string
  appears, the text is cut right before it and the request stops.
The concatenation of all deltas (with `flush()` at the end) equals the decode of all output tokens, cut at
the first stop string.

Special tokens are dropped from the text; a request that keeps its tool format's markers (`drop`: the special ids
still dropped) decodes with them kept and the other special tokens left out of the ids it decodes, which is what
skipping them gives (the backend's skip_special_tokens leaves out exactly the special ids before decoding).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Protocol


class Decoder(Protocol):
    def decode(self, token_ids: list[int], **kwargs: Any) -> str: ...


REPLACEMENT_CHAR = "\ufffd"


def decode(tokenizer: Decoder, token_ids: list[int], skip_special_tokens: bool = True) -> str:
    """The one decode used everywhere, so incremental and full decodes agree."""
    return tokenizer.decode(token_ids, skip_special_tokens=skip_special_tokens, clean_up_tokenization_spaces=False)


def special_ids(tokenizer: Any) -> frozenset[int]:
    """The ids decode(skip_special_tokens=True) leaves out: added tokens marked special, and the named special
    tokens (a slow tokenizer skips those)."""
    added = getattr(tokenizer, "added_tokens_decoder", {})
    ids = {int(i) for i, tok in added.items() if getattr(tok, "special", False)}
    ids.update(int(i) for i in getattr(tokenizer, "all_special_ids", ()))
    return frozenset(ids)


def decoder_for(tokenizer: Decoder, skip_special_tokens: bool = True) -> Callable[[list[int]], str]:
    """decode(tokenizer, ids, skip_special_tokens) as one callable. For a transformers fast tokenizer whose class
    overrides neither decode nor _decode, that is the Rust backend's decode(ids, skip_special_tokens) (what transformers ends
    in with these arguments: clean-up is off), called directly: ~3x less host time per call, two calls a token."""
    backend = _plain_backend(tokenizer)
    if backend is None:
        return partial(decode, tokenizer, skip_special_tokens=skip_special_tokens)
    return partial(backend.decode, skip_special_tokens=skip_special_tokens)


def _plain_backend(tokenizer: Any) -> Any:
    try:
        from tokenizers import Tokenizer
        from transformers.tokenization_utils_base import PreTrainedTokenizerBase
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError:
        return None
    cls = type(tokenizer)
    if not isinstance(tokenizer, TokenizersBackend) or cls.decode is not PreTrainedTokenizerBase.decode:
        return None
    if cls._decode is not TokenizersBackend._decode:
        return None
    backend = getattr(tokenizer, "_tokenizer", None)
    return backend if isinstance(backend, Tokenizer) else None


def find_stop(text: str, stops: tuple[str, ...], start: int) -> int:
    """Index of the earliest stop string occurrence in text[start:], or -1."""
    best = -1
    for s in stops:
        i = text.find(s, start)
        if i >= 0 and (best < 0 or i < best):
            best = i
    return best


def stop_prefix_len(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of some stop string.

    Such a suffix starts with its stop string's first character: only the places of that character in the last
    len(s) - 1 characters are tried, leftmost (longest) first; most tokens have none (one str.find a stop)."""
    best = 0
    for s in stops:
        k = min(len(s) - 1, len(text))
        if k <= best:
            continue
        tail = text[len(text) - k :]
        first = s[0]
        i = tail.find(first)
        while 0 <= i < k - best:  # a suffix starting at i has k - i characters: only longer ones than best count
            if s.startswith(tail[i:]):
                best = k - i
                break
            i = tail.find(first, i + 1)
    return best


def decode_stream(tokenizer: Decoder, skip_special_tokens: bool = True) -> Any:
    """A Rust DecodeStream (skip_special_tokens as given) for the tokenizers the fast path of decoder_for serves (its
    step decodes as that path does), else None. Its step(backend, ids) runs the window / prefix test of
    IncrementalDetokenizer.add in one call (one Python to Rust crossing a token instead of two decodes)."""
    backend = _plain_backend(tokenizer)
    if backend is None:
        return None
    try:
        from tokenizers.decoders import DecodeStream
    except ImportError:
        return None
    return backend, DecodeStream(skip_special_tokens=skip_special_tokens)


class IncrementalDetokenizer:
    def __init__(
        self,
        tokenizer: Decoder,
        stop: tuple[str, ...] = (),
        min_tokens: int = 0,
        drop: frozenset[int] | None = None,
    ) -> None:
        self._tokenizer = tokenizer
        # drop: None = every special token is skipped by the decodes; else special tokens are kept by the decodes
        # and these ids (the special ones not kept) never reach them (still counted for min_tokens)
        self._drop = drop
        self._dropped = 0
        skip = drop is None
        self._decode = decoder_for(tokenizer, skip)
        # (backend, DecodeStream) or None; its text is used while it gives valid UTF-8; it is dropped (add() then
        # decodes here) when it refuses a window that does not start with its prefix, when its piece holds U+FFFD
        # (its window start can drift from _prefix_offset there), when it held back text the decodes give, and at
        # flush
        self._stream = decode_stream(tokenizer, skip)
        self._stop = stop
        self._max_stop = max((len(s) for s in stop), default=0)
        # min_tokens: stop strings end nothing until more tokens than this came; the text before is never cut
        self._min_tokens = min_tokens
        self._stop_from = 0  # stop strings are looked for from this character of _text on
        self._ids: list[int] = []
        self._prefix_offset = 0  # window start: tokens before it are fully emitted as text
        self._read_offset = 0  # tokens before it have been turned into text
        self._text = ""  # with stop strings: all complete text decoded so far (up to a stop string, if one matched)
        self._parts: list[str] = []  # without stop strings: the text, piece by piece (all of it emitted)
        self._emitted = 0  # characters of _text already returned
        self.stopped = False

    @property
    def text(self) -> str:
        return self._text[: self._emitted] if self._stop else "".join(self._parts)

    def add(self, token_ids: list[int]) -> str:
        """Feeds new output tokens; returns the text that became final (possibly empty)."""
        if self.stopped:
            return ""
        drop = self._drop
        if drop is not None:
            kept = [t for t in token_ids if t not in drop]
            self._dropped += len(token_ids) - len(kept)
            if not kept:  # nothing to decode; min_tokens may have been reached
                return self._release(final=False) if self._stop else ""
            token_ids = kept
        self._ids.extend(token_ids)
        piece = self._next_piece(token_ids)
        if not self._stop:  # everything decoded is final: no _text, no _release
            if piece:
                self._parts.append(piece)
                return piece
            return ""
        if piece:
            self._text += piece
        return self._release(final=False)

    def _next_piece(self, token_ids: list[int]) -> str | None:
        """The text the tokens completed (None: held back, a partial character or nothing new), offsets advanced.

        The stream's text, when it gives one, is what the decodes below give (its window starts with its prefix
        and is longer). When it gives none, the decodes below decide (they differ only where the window does not
        start with the prefix: the stream compares lengths in bytes); if they do give text, the stream is
        dropped. Either way the deltas are those of the decodes alone."""
        stream = self._stream
        if stream is not None:
            try:
                piece = stream[1].step(stream[0], token_ids)
            except Exception:  # the window does not extend its prefix: decode here from now on (same state)
                self._stream = None
            else:
                if piece is not None and REPLACEMENT_CHAR not in piece:
                    self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
                    return piece
                if piece is not None:
                    # invalid UTF-8 in the piece: the stream's window may have drifted from the offsets (it moves its
                    # own start past a prefix that decodes to "", e.g. a lone "▁" under Llama's Strip decoder), so the
                    # decodes below give this piece (offsets not moved yet) and everything after it
                    self._stream = None
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        window = self._decode(self._ids[self._prefix_offset :])
        if len(window) > len(prefix) and not window.endswith(REPLACEMENT_CHAR):
            self._stream = None  # the stream held this back: its state no longer mirrors the offsets
            self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
            return window[len(prefix) :]
        return None

    def flush(self) -> str:
        """At the end of the request: everything still held back (a partial character or stop prefix)."""
        if self.stopped:
            return ""
        self._stream = None  # its state would miss the tail decoded here
        piece = ""
        if self._read_offset < len(self._ids):
            prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
            window = self._decode(self._ids[self._prefix_offset :])
            piece = window[len(prefix) :]
            self._prefix_offset = self._read_offset = len(self._ids)
        if not self._stop:
            if piece:
                self._parts.append(piece)
            return piece
        self._text += piece
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        if len(self._ids) + self._dropped <= self._min_tokens:
            self._stop_from = len(self._text)
            return self._take(len(self._text))
        hit = find_stop(self._text, self._stop, max(self._stop_from, self._emitted - self._max_stop + 1))
        if hit >= 0:
            self._text = self._text[:hit]
            self.stopped = True
            return self._take(len(self._text))
        if final:
            return self._take(len(self._text))
        hold = min(stop_prefix_len(self._text, self._stop), len(self._text) - self._emitted)
        return self._take(len(self._text) - hold)

    def _take(self, upto: int) -> str:
        delta = self._text[self._emitted : upto]
        self._emitted = max(self._emitted, upto)
        return delta


def _byte_level_decoder() -> dict[str, int]:
    """GPT-2's bytes_to_unicode, inverted: the characters byte-level BPE pieces are spelled in -> bytes."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


_BYTE_LEVEL = _byte_level_decoder()


class TokenTexts:
    """Text and bytes of single tokens, for logprobs (cached; safe to share between threads).

    text: decode([id]) with special tokens kept (as vLLM shows logprob tokens); a token that is only part of
    a UTF-8 character decodes to U+FFFD. bytes: the token's exact bytes when it is part of a character and
    the tokenizer spells bytes (byte-level BPE pieces, or SentencePiece byte-fallback pieces <0xNN>);
    otherwise the UTF-8 of its text. A SentencePiece "▁word" piece keeps its leading space (Llama-2's decoder
    strips the first space of a decode, which would drop it for a token decoded alone).
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._cache: dict[int, tuple[str, bytes]] = {}

    def get(self, token_id: int) -> tuple[str, bytes]:
        hit = self._cache.get(token_id)
        if hit is None:
            hit = self._cache[token_id] = self._compute(token_id)
        return hit

    def _compute(self, token_id: int) -> tuple[str, bytes]:
        text = self._tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        piece = None
        to_piece = getattr(self._tokenizer, "convert_ids_to_tokens", None)
        if to_piece is not None:
            piece = to_piece(token_id)
        if isinstance(piece, str):
            if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):  # byte fallback
                try:
                    b = int(piece[3:5], 16)
                except ValueError:
                    pass
                else:  # an ASCII byte is its own text (decode alone strips a space byte to "")
                    return (chr(b) if b < 0x80 else text), bytes([b])
            if piece.startswith("▁"):
                # SentencePiece (Llama-2): the decoder strips the first space of every decode, so a "▁word"
                # piece decoded alone loses the space it has inside a text; give it back.
                spelled = piece.replace("▁", " ")
                if text == spelled[1:]:
                    text = spelled
        if REPLACEMENT_CHAR not in text:
            return text, text.encode("utf-8")
        if isinstance(piece, str) and piece and all(c in _BYTE_LEVEL for c in piece):
            return text, bytes(_BYTE_LEVEL[c] for c in piece)
        return text, text.encode("utf-8")
