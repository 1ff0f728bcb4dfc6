"""Qwen's (Hermes-style) tool calls in generated text, turned into OpenAI ``tool_calls``.

Qwen3 and Qwen3-VL call a tool by writing ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``
(``<tool_call>`` and ``</tool_call>`` are tokens of their own that ``decode`` keeps). Like vLLM's hermes
parser: each well-formed block becomes a call (arguments re-serialised as a JSON string) and leaves the
content; the finish reason becomes ``tool_calls``. Unlike it, a malformed block (bad JSON, no name) is kept
verbatim in the content while the well-formed blocks around it still become calls, rather than turning the
whole answer back into plain text. Whitespace right before a call, and at the end of an answer that made
calls, is dropped (``"Let me look.\\n<tool_call>..."`` has content ``"Let me look."``).

Streaming and whole responses use the same :class:`ToolCallStream`, so they cannot disagree.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

START, END = "<tool_call>", "</tool_call>"


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # a JSON object, as text (OpenAI's format)

    def to_openai(self, index: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {} if index is None else {"index": index}
        return out | {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


def parse_call(body: str) -> ToolCall | None:
    """The call in the text between the tags, or None when it is not a well-formed call."""
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return None
    args = obj.get("arguments", {})
    if isinstance(args, str):  # some models write the arguments as a JSON string
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return ToolCall(f"call_{uuid.uuid4().hex[:24]}", obj["name"], json.dumps(args, ensure_ascii=False))


def _partial_start(text: str) -> int:
    """Length of the longest end of ``text`` that could begin a ``<tool_call>`` tag."""
    for n in range(min(len(START) - 1, len(text)), 0, -1):
        if START.startswith(text[-n:]):
            return n
    return 0


class ToolCallStream:
    """Splits streamed text into content pieces (str) and :class:`ToolCall` objects, in order.

    Text is held only while it may still be part of a tag or a call, or is whitespace that is dropped if
    a call follows.
    """

    def __init__(self) -> None:
        self._buf = ""
        self._in_call = False
        self._scanned = 0  # characters of a call's body already searched for the end tag
        self._space = ""  # whitespace held: dropped before a call, emitted before more content
        self.calls = 0

    def feed(self, text: str) -> list[str | ToolCall]:
        self._buf += text
        out: list[str | ToolCall] = []
        while True:
            if not self._in_call:
                at = self._buf.find(START)
                if at < 0:
                    keep = _partial_start(self._buf)
                    self._content(self._buf[: len(self._buf) - keep], out)
                    self._buf = self._buf[len(self._buf) - keep :]
                    return out
                self._content(self._buf[:at], out)
                self._buf, self._in_call, self._scanned = self._buf[at + len(START) :], True, 0
            else:
                end = self._buf.find(END, max(0, self._scanned - len(END) + 1))
                if end < 0:
                    self._scanned = len(self._buf)
                    return out
                body, self._buf, self._in_call = self._buf[:end], self._buf[end + len(END) :], False
                self._call(body, START + body + END, out)

    def finish(self) -> list[str | ToolCall]:
        """The rest at the end of generation: an unclosed call counts if its JSON is complete."""
        out: list[str | ToolCall] = []
        if self._in_call:
            self._call(self._buf, START + self._buf, out)
        else:
            self._content(self._buf, out)
        self._buf = ""
        if self._space and not self.calls:
            out.append(self._space)
        self._space = ""
        return out

    def _call(self, body: str, raw: str, out: list[str | ToolCall]) -> None:
        call = parse_call(body)
        if call is None:
            self._content(raw, out)
        else:
            self._space = ""  # whitespace right before a call is dropped
            self.calls += 1
            out.append(call)

    def _content(self, text: str, out: list[str | ToolCall]) -> None:
        if not text:
            return
        text = self._space + text
        body = text.rstrip()
        self._space = text[len(body) :]
        if body:
            out.append(body)


@dataclass(frozen=True)
class ParsedOutput:
    content: str | None
    tool_calls: tuple[ToolCall, ...]


def parse_tool_calls(text: str) -> ParsedOutput:
    """A whole answer: its content (None when it is only calls) and its calls."""
    stream = ToolCallStream()
    items = stream.feed(text) + stream.finish()
    calls = tuple(i for i in items if isinstance(i, ToolCall))
    content = "".join(i for i in items if isinstance(i, str))
    return ParsedOutput(content if content or not calls else None, calls)
