"""Streaming requests for a cold pool: the SSE response starts at once and is kept alive while held.

A client (or a proxy between) that sees nothing for a minute while a backend starts may give up.
So a streaming request that must wait gets its 200 and SSE headers immediately, then an SSE comment
every ``lifecycle.keepalive_s`` (comments are ignored by SSE parsers and OpenAI's SDKs), then
``: x-frugalserve-cold-start-ms: N`` when a replica is ready, then the stream. Each keep-alive says how the
wait stands, for a client that wants to show it (the web UI does)::

    : waiting for a replica {"pool": "demo", "state": "starting", "eta_s": 4.2, "waited_s": 3.0}

``state`` and ``eta_s`` are the pool's own view (what the router sees): its best replica's state and the
seconds left of its measured start or wake time.
An error after the headers went out is sent in-band as ``data: {"error": ...}``, like a mid-stream error;
before that (the client left, say), it is raised for the error boundary to answer.
"""

from __future__ import annotations

import contextlib
import logging

import orjson
from starlette.types import Message, Receive, Scope, Send

from frugalserve.api.call import Call, Forward
from frugalserve.api.proxy import ClientGone, sse_error_event, sse_headers, until_disconnect
from frugalserve.api.recording import Recorder
from frugalserve.clock import Clock
from frugalserve.errors import APIError
from frugalserve.pools import Lease
from frugalserve.tasks import Second, race

log = logging.getLogger("frugalserve.gateway")

KEEPALIVE = b": waiting for a replica"


def _release(lease: Lease) -> None:
    lease.release()


class HeldStreamResponse:
    def __init__(self, call: Call, forward: Forward, recorder: Recorder, clock: Clock, headers: dict[str, str]) -> None:
        self.call = call
        self.forward = forward
        self.recorder = recorder
        self.clock = clock
        self.headers = headers
        self.started = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        record = self.call.record
        try:
            lease = await until_disconnect(receive, self._acquire_keeping_alive(send), discard=_release)
            if self.started:  # (a replica that became ready at once leaves nothing to keep alive)
                wait_ms = round(lease.waited_s * 1000)
                await self._body(send, f": x-frugalserve-cold-start-ms: {wait_ms}\n\n".encode())
            response = await self.forward(self.call, lease)
        except ClientGone:
            self.recorder.gone(record)
            return
        except APIError as exc:
            self.recorder.finish(record, exc.status, None, exc)
            await self._error(send, exc)
            return
        except BaseException as exc:
            self.recorder.finish(record, 500, None, None)
            if not isinstance(exc, Exception) or not self.started:
                raise  # the boundary answers (and logs) what has not started
            log.exception("request %s failed", record.request_id)
            await self._error(send, exc)
            return
        await response(scope, receive, self._after_start(send) if self.started else send)

    async def _acquire_keeping_alive(self, send: Send) -> Lease:
        won = await race(self.call.pool.acquire(self.call.affinity), self._keep_alive(send), discard=_release)
        if isinstance(won, Second):
            raise RuntimeError("keep-alives ended before a replica was ready")
        return won.value

    async def _keep_alive(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self._start_headers()})
        self.started = True
        since = self.clock.monotonic()
        while True:
            await self._body(send, self._keepalive(self.clock.monotonic() - since))
            await self.clock.sleep(self.call.pool.config.lifecycle.keepalive_s)

    def _keepalive(self, waited_s: float) -> bytes:
        view = self.call.pool.view(self.clock.monotonic())
        eta = view.eta_s if view.eta_s != float("inf") else None
        status = {
            "pool": view.name,
            "state": view.state,
            "eta_s": None if eta is None else round(eta, 1),
            "waited_s": round(waited_s, 1),
        }
        return KEEPALIVE + b" " + orjson.dumps(status) + b"\n\n"

    def _start_headers(self) -> list[tuple[bytes, bytes]]:
        return [*sse_headers(self.headers), (b"x-frugalserve-cold-start", b"waiting")]

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
            exc = APIError(f"internal error (request {self.call.record.request_id})")
        with contextlib.suppress(Exception):
            await self._body(send, sse_error_event(exc), more=False)

    @staticmethod
    def _after_start(send: Send) -> Send:
        """The proxied response's own start message is dropped: ours went out already."""

        async def wrapped(message: Message) -> None:
            if message["type"] != "http.response.start":
                await send(message)

        return wrapped
