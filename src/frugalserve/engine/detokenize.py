"""Incremental detokenisation and stop-string search: constant work per generated token.

Decoding all generated ids at every step, and searching all of the text for stop strings, costs time
proportional to the output so far, so a long answer costs quadratic time. Here each step decodes only a
small window of the newest ids (as vLLM's incremental detokenizer does) and searches only the new text plus
``max(len(stop)) - 1`` characters held back from before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """The text of a growing id sequence, returned piece by piece.

    What ``push`` and ``flush`` return, concatenated, equals ``decode(all ids)``; no piece is ever taken
    back. The window holds the ids whose text may still change, plus one step of ids before them as
    context (tokenizers that strip a leading space need it). A window whose text ends in U+FFFD may end in
    an incomplete UTF-8 character that the next byte tokens complete, so that last character is held.
    """

    # A window this long (in ids) whose text still ends in U+FFFD (garbage bytes) is split, so that the work
    # per step stays bounded. A cut is safe when decoding the two sides apart gives the text decoding them
    # together gives: no character (or replaced invalid sequence) then spans the cut, now or later.
    MAX_WINDOW = 16

    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self._decode = decode
        self.ids: list[int] = []
        self._ctx = 0  # first id of the context
        self._start = 0  # first id whose text is not final
        self._ctx_len = 0  # characters of decode(ids[ctx:start])
        self._emitted = 0  # characters of the window's text (ids[start:]) already returned

    def push(self, token: int) -> str:
        """Add one id; return the new text that is final."""
        self.ids.append(token)
        text = self._decode(self.ids[self._ctx :])
        body = text[self._ctx_len :]
        if not body.endswith(REPLACEMENT):
            delta = body[self._emitted :]
            # The window's text is final: it becomes the next step's context.
            self._ctx, self._start = self._start, len(self.ids)
            self._ctx_len, self._emitted = len(body), 0
            return delta
        stable = len(body) - 1
        delta = body[self._emitted : stable] if stable > self._emitted else ""
        self._emitted = max(self._emitted, stable)
        if len(self.ids) - self._start > self.MAX_WINDOW:
            delta += self._split(text)
        return delta

    def _split(self, text: str) -> str:
        cut = len(self.ids) - 4
        head = self._decode(self.ids[self._ctx : cut])
        if head + self._decode(self.ids[cut:]) != text:
            return ""  # the cut falls inside a character or sequence: try again at the next step
        done = len(head) - self._ctx_len  # characters of ids[start:cut]
        extra = text[self._ctx_len + self._emitted : self._ctx_len + done] if done > self._emitted else ""
        self._emitted = max(0, self._emitted - done)
        self._ctx, self._start, self._ctx_len = self._start, cut, done
        return extra

    def flush(self) -> str:
        """The text still held (an incomplete character at the very end becomes U+FFFD, as decode does)."""
        body = self._decode(self.ids[self._ctx :])[self._ctx_len :]
        delta = body[self._emitted :]
        self._emitted = len(body)
        return delta


class StopMatcher:
    """Finds the first stop string in a stream of text pieces, searching each piece once.

    Text that could be the start of a stop string (the last ``max(len(stop)) - 1`` characters) is held
    back until the next piece shows whether it is one, so a stop split across steps is found and cut.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self._pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Return (text safe to emit, whether a stop string was found); after a stop, nothing more."""
        if not self.stops:
            return text, False
        buf = self._pending + text
        hits = [at for s in self.stops if (at := buf.find(s)) >= 0]
        if hits:
            self._pending = ""
            return buf[: min(hits)], True
        cut = max(0, len(buf) - self.hold)
        self._pending = buf[cut:]
        return buf[:cut], False

    def flush(self) -> str:
        out, self._pending = self._pending, ""
        return out
