"""The gateway's HTTP/1.1 connections: uvicorn's httptools protocol, bounded against slow and big clients.

uvicorn with httptools bounds none of these by itself: a client may take forever to send its headers, send
headers of any size (httptools keeps a partial header whole in memory, so 100 unfinished 2 MB headers
hold 200 MB), trickle a body, and open connections without limit. :class:`GuardedHttpProtocol` adds:

- header size: bytes from a request's first byte to the end of its headers, counted as they arrive and
  exactly once complete; over ``max_header_bytes`` the client gets 431 and the connection closes.
- header time: from connect, or from a request's first byte on a kept-alive connection, to the end of its
  headers; past ``header_timeout_s``, 408 (or a silent close when nothing came) and the connection closes.
  An idle kept-alive connection stays uvicorn's business (``timeout_keep_alive``).
- body time: from the end of the headers to the end of the body; past ``body_timeout_s``, 408 unless the
  application already answered, and the connection closes.
- connections: a connection accepted while ``max_connections`` are open answers its request 503 and
  closes; the connections already open, and their ``/healthz``, carry on.

Each refusal is OpenAI's error JSON with a fresh ``x-request-id``.
"""

from __future__ import annotations

import asyncio
import http
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from frugalserve.errors import APIError, InvalidRequest, ServiceUnavailable

if TYPE_CHECKING:
    from frugalserve.config import GatewayConfig


@dataclass(frozen=True)
class ListenerLimits:
    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int

    @classmethod
    def of(cls, gateway: GatewayConfig) -> ListenerLimits:
        return cls(
            max_header_bytes=int(gateway.max_header_kb * 1024),
            header_timeout_s=gateway.header_timeout_s,
            body_timeout_s=gateway.body_timeout_s,
            max_connections=gateway.max_connections,
        )


def header_too_large(limits: ListenerLimits) -> APIError:
    return InvalidRequest(
        f"request headers larger than {limits.max_header_bytes} bytes",
        status=431,
        code="request_header_fields_too_large",
    )


def request_timeout(what: str, seconds: float) -> APIError:
    message = f"the request's {what} did not arrive within {seconds:g}s"
    return InvalidRequest(message, status=408, code="request_timeout")


def too_many_connections(limits: ListenerLimits) -> APIError:
    return ServiceUnavailable(
        f"the gateway has {limits.max_connections} open connections, its limit; retry shortly",
        code="too_many_connections",
        headers={"retry-after": "1"},
    )


def _headers_of(error: APIError, body: bytes) -> list[tuple[bytes, bytes]]:
    headers = {
        **error.headers,
        "content-type": "application/json",
        "content-length": str(len(body)),
        "connection": "close",
        "x-request-id": uuid.uuid4().hex,
    }
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


def refusal_app(error: APIError) -> Any:
    """An ASGI app answering every request with ``error`` and closing the connection."""
    body = error.to_bytes()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": error.status, "headers": _headers_of(error, body)})
        await send({"type": "http.response.body", "body": body})

    return app


class GuardedHttpProtocol(HttpToolsProtocol):
    """One client connection. Build a subclass bound to limits with :func:`protocol_class`."""

    limits: ClassVar[ListenerLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_headers = True  # between the end of a request (or connect) and the end of the next headers
        self._in_message = False  # a request's first byte has arrived and the request is not complete
        self._header_bytes = 0
        self._fresh = True  # no request has begun on this connection yet
        self._close_after_response = False  # the server is stopping: this connection's request is its last
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self.app = refusal_app(too_many_connections(self.limits))  # this connection only
        self._header_timer = self.loop.call_later(self.limits.header_timeout_s, self._header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._reading_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        if not self._reading_headers or self.transport.is_closing():
            return
        # Counted before parsing, so at most one read past the limit is ever buffered. The count starts
        # with the read after the previous request's end: it can fall short by that read, never exceed.
        if self._header_bytes > self.limits.max_header_bytes:
            self._reply_and_close(header_too_large(self.limits))
        elif self._in_message and self._header_timer is None:
            self._header_timer = self.loop.call_later(self.limits.header_timeout_s, self._header_timeout)

    def shutdown(self) -> None:
        """The server stops: uvicorn closes every connection without a request in flight, which resets a
        client whose request is still arriving, or was sent but not read yet while the event loop was busy.
        Such a connection (a request begun, or none yet on a fresh connection) gets its request answered,
        then closes; one that never sends closes at its header timeout. Kept-alive idle ones close now."""
        if self._in_message or self._fresh:
            self._close_after_response = True
            if self.cycle is not None and not self.cycle.response_complete:
                self.cycle.keep_alive = False
            return
        super().shutdown()

    def handle_websocket_upgrade(self) -> None:
        self._cancel_timers()  # the connection now belongs to the websocket protocol
        super().handle_websocket_upgrade()

    # httptools parser callbacks

    def on_message_begin(self) -> None:
        self._in_message = True
        self._fresh = False
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        self._cancel(self._header_timer)
        self._header_timer = None
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        app = self.app
        if size > self.limits.max_header_bytes:
            self.app = refusal_app(header_too_large(self.limits))  # this request only; it closes the connection
        super().on_headers_complete()
        self.app = app
        if self._close_after_response:
            self.cycle.keep_alive = False
        self._body_timer = self.loop.call_later(self.limits.body_timeout_s, self._body_timeout)

    def on_message_complete(self) -> None:
        self._cancel(self._body_timer)
        self._body_timer = None
        self._reading_headers = True
        self._in_message = False
        self._header_bytes = 0
        super().on_message_complete()

    # Timers

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self._in_message:
            self._reply_and_close(request_timeout("headers", self.limits.header_timeout_s))
        else:
            self.transport.close()  # nothing came at all: no one to answer

    def _body_timeout(self) -> None:
        self._body_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_started:
            # The application, woken by the disconnect that follows the close, writes nothing more.
            self._reply_and_close(request_timeout("body", self.limits.body_timeout_s))
        else:
            self.transport.close()

    def _reply_and_close(self, error: APIError) -> None:
        body = error.to_bytes()
        phrase = http.HTTPStatus(error.status).phrase
        head = [f"HTTP/1.1 {error.status} {phrase}\r\n".encode()]
        head += [name + b": " + value + b"\r\n" for name, value in _headers_of(error, body)]
        self.transport.write(b"".join([*head, b"\r\n", body]))
        self.transport.close()

    def _cancel_timers(self) -> None:
        self._cancel(self._header_timer)
        self._cancel(self._body_timer)
        self._header_timer = self._body_timer = None

    @staticmethod
    def _cancel(timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()


def protocol_class(limits: ListenerLimits) -> type[GuardedHttpProtocol]:
    """uvicorn builds one protocol object per connection from a class; this one carries ``limits``."""
    return type("GuardedHttpProtocol", (GuardedHttpProtocol,), {"limits": limits})
