"""Turn a :class:`Generation`'s events into OpenAI's bodies: ``chat.completion`` (with ``tool_calls``) and
``text_completion``, whole or as SSE chunks exactly as OpenAI and vLLM stream them."""

from __future__ import annotations

import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.responses import Response

from frugalserve.engine.batching import Event, Generation
from frugalserve.engine.tool_calls import ToolCall, ToolCallStream, parse_tool_calls
from frugalserve.errors import APIError


def _sse(body: dict[str, Any] | bytes) -> bytes:
    return b"data: " + (body if isinstance(body, bytes) else orjson.dumps(body)) + b"\n\n"


class Reply(ABC):
    """What both routes share: ids, usage, the event stream, SSE framing and in-band errors."""

    object_name = ""
    chunk_name = ""
    id_prefix = ""

    def __init__(self, gen: Generation, *, model: str, fingerprint: str, include_usage: bool) -> None:
        self.gen = gen
        self.id = f"{self.id_prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.fingerprint = fingerprint
        self.include_usage = include_usage

    def usage(self, completion: int) -> dict[str, int]:
        p = self.gen.prompt_tokens
        return {"prompt_tokens": p, "completion_tokens": completion, "total_tokens": p + completion}

    def base(self, kind: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.fingerprint,
        }

    async def events(self) -> AsyncIterator[Event]:
        while True:
            event = await self.gen.events.get()
            if event.kind == "error":
                assert event.error is not None
                raise event.error
            yield event
            if event.kind == "finish":
                return

    async def collect(self) -> tuple[str, Event]:
        parts: list[str] = []
        finish: Event | None = None
        try:
            async for ev in self.events():
                if ev.kind == "token":
                    parts.append(ev.text)
                else:
                    finish = ev
        finally:
            self.gen.cancel()  # no-op once finished; stops decoding if this handler is torn down
        assert finish is not None
        return "".join(parts), finish

    def chunk(self, choice: dict[str, Any]) -> bytes:
        body = self.base(self.chunk_name) | {"choices": [choice]}
        if self.include_usage:
            body["usage"] = None
        return _sse(body)

    def usage_chunk(self, completion: int) -> bytes:
        return _sse(self.base(self.chunk_name) | {"choices": [], "usage": self.usage(completion)})

    @abstractmethod
    async def whole(self) -> Response:
        """The whole response, once generation has finished."""

    @abstractmethod
    def chunks(self) -> AsyncIterator[bytes]:
        """The SSE chunks, ``[DONE]`` excepted."""

    async def sse(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.chunks():
                yield chunk
            yield b"data: [DONE]\n\n"
        except APIError as exc:  # headers are sent: the error travels as an SSE event, like vLLM's
            yield _sse(exc.to_bytes())
            yield b"data: [DONE]\n\n"
        finally:
            self.gen.cancel()  # a client that went away stops its row at the next step


class ChatReply(Reply):
    object_name = "chat.completion"
    chunk_name = "chat.completion.chunk"
    id_prefix = "chatcmpl"

    def __init__(
        self, gen: Generation, *, model: str, fingerprint: str, include_usage: bool, parse_tool_calls: bool
    ) -> None:
        super().__init__(gen, model=model, fingerprint=fingerprint, include_usage=include_usage)
        self.parse_tool_calls = parse_tool_calls

    async def whole(self) -> Response:
        text, finish = await self.collect()
        message: dict[str, Any] = {"role": "assistant", "content": text}
        reason = finish.reason
        if self.parse_tool_calls:
            parsed = parse_tool_calls(text)
            if parsed.tool_calls:
                message = {
                    "role": "assistant",
                    "content": parsed.content,
                    "tool_calls": [c.to_openai() for c in parsed.tool_calls],
                }
                reason = "tool_calls"
        body = self.base(self.object_name) | {
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": reason}],
            "usage": self.usage(finish.completion_tokens),
        }
        return Response(orjson.dumps(body), media_type="application/json")

    def _delta(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return self.chunk({"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish})

    def _items(self, items: list[str | ToolCall], calls: list[ToolCall]) -> list[bytes]:
        out = []
        for item in items:
            if isinstance(item, str):
                out.append(self._delta({"content": item}))
            else:
                out.append(self._delta({"tool_calls": [item.to_openai(len(calls))]}))
                calls.append(item)
        return out

    async def chunks(self) -> AsyncIterator[bytes]:
        parser = ToolCallStream() if self.parse_tool_calls else None
        calls: list[ToolCall] = []
        yield self._delta({"role": "assistant", "content": ""})
        async for ev in self.events():
            if ev.kind == "token":
                if parser is None:
                    yield self._delta({"content": ev.text})
                else:
                    for chunk in self._items(parser.feed(ev.text), calls):
                        yield chunk
                continue
            if parser is not None:
                for chunk in self._items(parser.finish(), calls):
                    yield chunk
            yield self._delta({}, "tool_calls" if calls else ev.reason)
            if self.include_usage:
                yield self.usage_chunk(ev.completion_tokens)


class CompletionReply(Reply):
    object_name = "text_completion"
    chunk_name = "text_completion"
    id_prefix = "cmpl"

    def _choice(self, text: str, finish: str | None) -> dict[str, Any]:
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}

    async def whole(self) -> Response:
        text, finish = await self.collect()
        body = self.base(self.object_name) | {
            "choices": [self._choice(text, finish.reason)],
            "usage": self.usage(finish.completion_tokens),
        }
        return Response(orjson.dumps(body), media_type="application/json")

    async def chunks(self) -> AsyncIterator[bytes]:
        async for ev in self.events():
            if ev.kind == "token":
                yield self.chunk(self._choice(ev.text, None))
            else:
                yield self.chunk(self._choice("", ev.reason))
                if self.include_usage:
                    yield self.usage_chunk(ev.completion_tokens)
