"""Streaming requests for a cold pool: the SSE response starts at once and is kept alive while held.

A client (or a proxy between) that sees nothing for a minute while a backend starts may give up.
So a streaming request that must wait gets its 200 and SSE headers immediately, then an SSE comment
``: waiting for a replica`` every ``lifecycle.keepalive_s`` (comments are ignored by SSE parsers and
OpenAI's SDKs), then ``: x-frugalserve-cold-start-ms: N`` when a replica is ready, then the stream.
An error after the headers went out is sent in-band as ``data: {"error": ...}``, like a mid-stream error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from frugalserve.api.proxy import CLIENT_CLOSED, ClientGone, wait_disconnect
from frugalserve.errors import APIError
from frugalserve.pools import Lease, Pool
from frugalserve.records import RequestRecord

log = logging.getLogger("frugalserve.gateway")

KEEPALIVE = b": waiting for a replica\n\n"


class HeldStreamResponse:
    def __init__(
        self,
        gateway: Any,  # frugalserve.api.app.Gateway (not imported: it imports this module)
        request: Request,
        pool: Pool,
        record: RequestRecord,
        data: dict[str, Any],
        path: str,
        client_wants_usage: bool,
        headers: dict[str, str],
        prepared: Any = None,  # frugalserve.budget.prepare.Prepared | None
    ) -> None:
        self.gateway = gateway
        self.prepared = prepared
        self.request = request
        self.pool = pool
        self.record = record
        self.data = data
        self.path = path
        self.client_wants_usage = client_wants_usage
        self.headers = headers
        self.started = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        record = self.record
        try:
            lease = await self._hold(send, receive)
            if self.started:
                await self._body(send, f": x-frugalserve-cold-start-ms: {round(lease.waited_s * 1000)}\n\n".encode())
            response = await self.gateway._forward(
                self.request,
                self.pool,
                lease,
                self.path,
                self.data,
                record,
                True,
                self.client_wants_usage,
                self.prepared,
            )
        except ClientGone:
            record.client_disconnected = True
            self.gateway._finish(record, CLIENT_CLOSED, None, None)
            return
        except APIError as exc:
            self.gateway._finish(record, exc.status, None, exc)
            await self._error(send, exc)
            return
        except Exception as exc:
            if self.started:  # otherwise the boundary logs it when it answers
                log.exception("request %s failed", record.request_id)
            self.gateway._finish(record, 500, None, None)
            await self._error(send, exc)
            return
        await response(scope, receive, self._after_start(send) if self.started else send)

    async def _hold(self, send: Send, receive: Receive) -> Lease:
        clock = self.gateway.clock
        keepalive_s = self.pool.config.lifecycle.keepalive_s
        acquire = asyncio.ensure_future(self.pool.acquire())
        gone = asyncio.ensure_future(wait_disconnect(receive))
        try:
            await self._start(send)
            while True:
                tick = asyncio.ensure_future(clock.sleep(keepalive_s))
                try:
                    await asyncio.wait((acquire, gone, tick), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    tick.cancel()
                if acquire.done():
                    return acquire.result()
                if gone.done():
                    raise ClientGone()
                await self._body(send, KEEPALIVE)
        finally:
            gone.cancel()
            if not acquire.done():
                acquire.cancel()
                with contextlib.suppress(BaseException):
                    await acquire
                if acquire.done() and not acquire.cancelled() and acquire.exception() is None:
                    acquire.result().release()

    async def _start(self, send: Send) -> None:
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
            (b"x-frugalserve-cold-start", b"waiting"),
            *((k.encode(), v.encode()) for k, v in self.headers.items()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        self.started = True
        await self._body(send, KEEPALIVE)

    @staticmethod
    async def _body(send: Send, data: bytes, more: bool = True) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": more})

    async def _error(self, send: Send, exc: BaseException) -> None:
        """Before the headers went out, the boundary answers; after, the stream carries the error in-band."""
        if not self.started:
            if isinstance(exc, APIError):
                exc.headers.update(self.headers)
            raise exc
        if not isinstance(exc, APIError):
            exc = APIError(f"internal error (request {self.record.request_id})")
        with contextlib.suppress(Exception):
            await self._body(send, b"data: " + exc.to_bytes() + b"\n\n", more=False)

    @staticmethod
    def _after_start(send: Send) -> Send:
        """The proxied response's own start message is dropped: ours went out already."""

        async def wrapped(message: Message) -> None:
            if message["type"] != "http.response.start":
                await send(message)

        return wrapped
