"""Keeping the event loop free: large work goes to a thread, in pieces that let the loop run.

A thread hop costs about 50 us, so work on fewer than :data:`INLINE_MAX_BYTES` bytes stays on the loop
(it takes well under a millisecond). Above it the work runs in a thread. A thread only helps if the
work releases the GIL or yields it between Python steps: hashlib releases it for large buffers, and
Pillow and libvips release it while they decode and resize, but ``binascii`` holds it for a whole call
(80 ms for 20 MB). So base64 is done here in :data:`B64_CHUNK` pieces (about 3 ms each), between which
the interpreter hands the GIL to the event loop's thread.
"""

from __future__ import annotations

import asyncio
import binascii
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# Work on more bytes than this runs in a worker thread (about 1 ms of base64 or hashing).
INLINE_MAX_BYTES = 256 * 1024
# Base64 characters decoded per call (a multiple of 4), and bytes encoded per call (a multiple of 3).
B64_CHUNK = 1024 * 1024
B64_ENCODE_CHUNK = 3 * 256 * 1024

_WHITESPACE = " \t\r\n"
_DROP_WHITESPACE = str.maketrans("", "", _WHITESPACE)


async def run(size: int, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on the loop when ``size`` is small, else in a worker thread."""
    if size <= INLINE_MAX_BYTES:
        return fn(*args, **kwargs)
    return await asyncio.to_thread(fn, *args, **kwargs)


def b64decode(text: str, start: int = 0) -> bytes:
    """Standard base64 from ``text[start:]`` (line breaks and spaces allowed, as ``base64`` tools wrap it),
    decoded in pieces without copying the whole text first.

    Raises :class:`ValueError` for any other character, misplaced padding or a truncated last group.
    """
    if not text.isascii():
        raise ValueError("non-ASCII character")
    end = max(start, len(text.rstrip(_WHITESPACE)))  # so that the padding is in the last piece
    out: list[bytes] = []
    carry = ""
    for pos in range(start, end, B64_CHUNK):
        piece = carry + text[pos : min(pos + B64_CHUNK, end)]
        last = pos + B64_CHUNK >= end
        if any(c in piece for c in _WHITESPACE):  # a fast scan; the copy only when needed
            piece = piece.translate(_DROP_WHITESPACE)
        cut = len(piece) if last else len(piece) - len(piece) % 4
        carry = piece[cut:]
        group = piece[:cut]
        if not last and "=" in group:
            raise ValueError("padding before the end")
        try:
            out.append(binascii.a2b_base64(group, strict_mode=True))
        except binascii.Error as exc:
            raise ValueError(str(exc)) from None
    return b"".join(out)


def b64encode(data: bytes, prefix: str = "") -> str:
    """``prefix`` and the standard base64 of ``data``, encoded in pieces and joined once."""
    parts = [prefix]
    for i in range(0, len(data), B64_ENCODE_CHUNK):
        parts.append(binascii.b2a_base64(data[i : i + B64_ENCODE_CHUNK], newline=False).decode("ascii"))
    return "".join(parts)


def estimate(*values: object, limit: int = INLINE_MAX_BYTES) -> int:
    """A JSON value's size in bytes, roughly (16 per item plus string lengths), or ``limit + 1`` as soon as
    it is over ``limit``: at most ``limit / 16`` items are visited, so it is cheap on the loop."""
    size = 0
    stack = list(values)
    while stack:
        value = stack.pop()
        size += 16
        if isinstance(value, str):
            size += len(value)
        elif isinstance(value, dict | list):
            if size + 16 * len(value) > limit:  # each item will add at least 16
                return limit + 1
            stack.extend(value.values() if isinstance(value, dict) else value)
        if size > limit:
            return limit + 1
    return size
