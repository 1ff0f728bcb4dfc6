"""Forwarding one request to its pool's backend and the response back, streaming as it arrives.

Both response kinds are small ASGI callables rather than framework responses because the gateway
must notice a client that goes away *while the upstream is still working* (ASGI servers only report
it through ``receive()``), and then close the upstream connection so the model stops generating.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from starlette.types import Receive, Scope, Send

from frugalserve.errors import APIError, UpstreamError, UpstreamStatus
from frugalserve.pools import Lease
from frugalserve.upstream import UpstreamResponse

# An SSE event ends with a blank line. vLLM and OpenAI use "\n\n".
_EVENT_END = b"\n\n"
T = TypeVar("T")


# 499 (nginx's "client closed request") in metrics and records for requests whose client left.
CLIENT_CLOSED = 499


class ClientGone(Exception):
    """The client disconnected before its response ended."""


async def wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def until_disconnect(receive: Receive, work: Awaitable[T]) -> T:
    """Await ``work`` unless the client disconnects first; then cancel it and raise :class:`ClientGone`."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(wait_disconnect(receive))
    try:
        done, _ = await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):
        pass
    raise ClientGone()


def merge_usage_details(usage: dict[str, Any], details: dict[str, int]) -> None:
    """Add the gateway's own prompt breakdown (text, image, video tokens; tokens saved) to a usage object."""
    existing = usage.get("prompt_tokens_details")
    usage["prompt_tokens_details"] = {**existing, **details} if isinstance(existing, dict) else dict(details)


def parse_usage(obj: Any) -> dict[str, Any] | None:
    usage = obj.get("usage") if isinstance(obj, dict) else None
    return usage if isinstance(usage, dict) else None


class SSEUsageFilter:
    """Passes SSE bytes through event by event, capturing the ``usage`` the upstream reports.

    The gateway always asks a streaming upstream for usage; when the client did not ask for it, the
    usage-only chunk (empty ``choices``) is dropped so that the client sees what it asked for.
    """

    __slots__ = ("_buf", "_details", "_drop_usage_only", "usage")

    def __init__(self, drop_usage_only: bool, details: dict[str, int] | None = None) -> None:
        self._buf = b""
        self._drop_usage_only = drop_usage_only
        self._details = details
        self.usage: dict[str, Any] | None = None

    def feed(self, chunk: bytes) -> bytes:
        buf = self._buf + chunk if self._buf else chunk
        end = buf.rfind(_EVENT_END)
        if end < 0:
            self._buf = buf
            return b""
        end += len(_EVENT_END)
        complete, self._buf = buf[:end], buf[end:]
        if b'"usage"' not in complete:
            return complete
        return b"".join(self._filter(e) for e in complete.split(_EVENT_END) if e) if complete else b""

    def flush(self) -> bytes:
        rest, self._buf = self._buf, b""
        return rest

    def _filter(self, event: bytes) -> bytes:
        out = event + _EVENT_END
        if b'"usage":null' in event or b'"usage": null' in event or b'"usage"' not in event:
            return out
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            try:
                obj = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                return out
            usage = parse_usage(obj)
            if usage is None:
                return out
            self.usage = usage
            if self._drop_usage_only and not obj.get("choices"):
                return b""
            if self._details is not None:
                merge_usage_details(usage, self._details)
                return b"data: " + orjson.dumps(obj) + _EVENT_END
        return out


def _sse_error(exc: APIError) -> bytes:
    return b"data: " + exc.to_bytes() + _EVENT_END


Finish = Callable[[int, dict[str, Any] | None, APIError | None, bool], None]
FirstByte = Callable[[], None]


class StreamingProxyResponse:
    """Streams an upstream SSE response to the client; the lease is held until the last byte."""

    def __init__(
        self,
        upstream: UpstreamResponse,
        lease: Lease,
        headers: list[tuple[bytes, bytes]],
        client_wants_usage: bool,
        usage_details: dict[str, int] | None,
        on_first_byte: FirstByte,
        on_finish: Finish,
    ) -> None:
        self._upstream = upstream
        self._lease = lease
        self._headers = headers
        self._filter = SSEUsageFilter(drop_usage_only=not client_wants_usage, details=usage_details)
        self._on_first_byte = on_first_byte
        self._on_finish = on_finish

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        error: APIError | None = None
        gone = False
        try:
            await until_disconnect(receive, self._pump(send))
        except ClientGone:
            gone = True
        except APIError as exc:  # the upstream broke off mid-stream: tell the client in-band
            error = exc
            await self._send_error(send, exc)
        finally:
            self._upstream.close()
            self._lease.release()
            self._on_finish(200, self._filter.usage, error, gone)

    async def _pump(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self._upstream.status, "headers": self._headers})
        first = True
        async for chunk in self._upstream.iter_chunks():
            data = self._filter.feed(chunk)
            if data:
                await send({"type": "http.response.body", "body": data, "more_body": True})
                if first:
                    self._on_first_byte()
                    first = False
        await send({"type": "http.response.body", "body": self._filter.flush(), "more_body": False})

    async def _send_error(self, send: Send, exc: APIError) -> None:
        try:
            await send({"type": "http.response.body", "body": _sse_error(exc), "more_body": False})
        except Exception:
            pass


async def read_whole(receive: Receive, upstream: UpstreamResponse, limit: int) -> bytes:
    """Read a non-streaming upstream body, cancelling it if the client leaves meanwhile."""
    try:
        return await until_disconnect(receive, upstream.read(limit))
    finally:
        upstream.close()


def upstream_status_error(status: int, body: bytes, content_type: str | None) -> APIError:
    """An upstream error answer: passed through when it is JSON, wrapped when it is not."""
    if body[:1] == b"{":
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and "error" in obj:
            return UpstreamStatus(status, body, content_type)
        if isinstance(obj, dict):  # vLLM / FastAPI style {"detail": ...} or {"message": ...}
            message = obj.get("message") or obj.get("detail") or body.decode("utf-8", "replace")[:500]
            err_type = "invalid_request_error" if status < 500 else "upstream_error"
            wrapped = APIError(str(message), status=status)
            wrapped.type = err_type
            return wrapped
    text = body.decode("utf-8", "replace").strip()[:500] or f"HTTP {status}"
    if status >= 500:
        return UpstreamError(f"The backend failed: {text}")
    wrapped = APIError(text, status=status)
    wrapped.type = "invalid_request_error"
    return wrapped
