"""The incremental detokenizer as it was before session 10 (engine/detokenizer.py at a43e3e1), kept verbatim as the
reference that the differential tests (test_detokenizer_stream.py) compare today's code with, delta by delta."""

from __future__ import annotations

from inlaid_worker.engine.detokenizer import REPLACEMENT_CHAR, Decoder, decoder_for


def find_stop(text: str, stops: tuple[str, ...], start: int) -> int:
    """Index of the earliest stop string occurrence in text[start:], or -1."""
    hits = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(hits) if hits else -1


def stop_prefix_len(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of some stop string."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


class ReferenceDetokenizer:
    def __init__(self, tokenizer: Decoder, stop: tuple[str, ...] = (), min_tokens: int = 0) -> None:
        self._tokenizer = tokenizer
        self._decode = decoder_for(tokenizer)
        self._stop = stop
        self._max_stop = max((len(s) for s in stop), default=0)
        # min_tokens: stop strings end nothing until more tokens than this came; the text before is never cut
        self._min_tokens = min_tokens
        self._stop_from = 0  # stop strings are looked for from this character of _text on
        self._ids: list[int] = []
        self._prefix_offset = 0  # window start: tokens before it are fully emitted as text
        self._read_offset = 0  # tokens before it have been turned into text
        self._text = ""  # all complete text decoded so far (up to a stop string, if one matched)
        self._emitted = 0  # characters of _text already returned
        self.stopped = False

    @property
    def text(self) -> str:
        return self._text[: self._emitted]

    def add(self, token_ids: list[int]) -> str:
        """Feeds new output tokens; returns the text that became final (possibly empty)."""
        if self.stopped:
            return ""
        self._ids.extend(token_ids)
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        window = self._decode(self._ids[self._prefix_offset :])
        if len(window) > len(prefix) and not window.endswith(REPLACEMENT_CHAR):
            self._text += window[len(prefix) :]
            self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        return self._release(final=False)

    def flush(self) -> str:
        """At the end of the request: everything still held back (a partial character or stop prefix)."""
        if self.stopped:
            return ""
        if self._read_offset < len(self._ids):
            prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
            window = self._decode(self._ids[self._prefix_offset :])
            self._text += window[len(prefix) :]
            self._prefix_offset = self._read_offset = len(self._ids)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        if self._stop and len(self._ids) <= self._min_tokens:
            self._stop_from = len(self._text)
            return self._take(len(self._text))
        if self._stop:
            hit = find_stop(self._text, self._stop, max(self._stop_from, self._emitted - self._max_stop + 1))
            if hit >= 0:
                self._text = self._text[:hit]
                self.stopped = True
                return self._take(len(self._text))
        if final or not self._stop:
            return self._take(len(self._text))
        hold = min(stop_prefix_len(self._text, self._stop), len(self._text) - self._emitted)
        return self._take(len(self._text) - hold)

    def _take(self, upto: int) -> str:
        delta = self._text[self._emitted : upto]
        self._emitted = max(self._emitted, upto)
        return delta
