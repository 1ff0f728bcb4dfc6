"""The one place an exception becomes a client's answer, and where every response gets its request id.

:class:`Boundary` wraps the whole application (outside Starlette's own middleware). It gives each HTTP
request an id (the client's ``x-request-id`` when it is sane, else a new one), stores it in
``scope["state"]["request_id"]`` for the handlers and records, and adds the ``x-request-id`` header to
every response: OpenAI routes, ``/healthz``, ``/metrics``, admin routes, 404s and 405s alike.

Handlers raise :class:`~frugalserve.errors.APIError`; :func:`answer` turns it (or Starlette's own 404/405,
or any other exception, which is a bug and is logged) into OpenAI's error JSON. Starlette's exception
handlers call :func:`answer`, and :class:`Boundary` calls it for what gets past Starlette: a
``BaseException`` that is not an ``Exception`` (a tokenizer's Rust panic is one). Errors that happen after a
response has started cannot change its status: a stream reports them in-band (``api/sse.py``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from frugalserve.errors import APIError, InvalidRequest, NotFound, error_response

log = logging.getLogger("frugalserve.gateway")

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_BYTES = REQUEST_ID_HEADER.encode()
# Never caught: they are how the server and the event loop stop things.
_PASS_THROUGH = (asyncio.CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit)


def _sane_request_id(value: str | None) -> str:
    if value and len(value) <= 128 and value.isprintable() and value.isascii():
        return value
    return uuid.uuid4().hex


def request_id(request: Request) -> str:
    """The id :class:`Boundary` gave this request (a new one when called outside it, as in unit tests)."""
    state = request.scope.setdefault("state", {})
    rid = state.get("request_id")
    if rid is None:
        rid = state["request_id"] = _sane_request_id(request.headers.get(REQUEST_ID_HEADER))
    return str(rid)


def _known(exc: BaseException) -> APIError | None:
    """What the client is told about an error it may see; None for a bug."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, HTTPException):
        if exc.status_code == 404:
            return NotFound(f"No such route: {exc.detail}." if exc.detail != "Not Found" else "No such route.")
        if exc.status_code == 405:
            return InvalidRequest("This method is not allowed on this route.", status=405, code="method_not_allowed")
        return InvalidRequest(str(exc.detail), status=exc.status_code)
    return None


def answer(exc: BaseException, rid: str) -> Response:
    """The response for ``exc``; unexpected exceptions are logged here, with the request id."""
    error = _known(exc)
    if error is None:
        log.error("request %s failed", rid, exc_info=exc)
        error = APIError(f"internal error (request {rid})")
    return error_response(error, rid)


async def starlette_handler(request: Request, exc: Exception) -> Response:
    """Registered with Starlette for APIError and HTTPException; the rest reaches :class:`Boundary`."""
    return answer(exc, request_id(request))


class Boundary:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = next((v for k, v in scope.get("headers") or () if k == _REQUEST_ID_BYTES), None)
        rid = _sane_request_id(raw.decode("latin-1") if raw is not None else None)
        scope.setdefault("state", {})["request_id"] = rid
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                out = list(message.get("headers") or ())
                if not any(k.lower() == _REQUEST_ID_BYTES for k, _ in out):
                    out.append((_REQUEST_ID_BYTES, rid.encode()))
                message = {**message, "headers": out}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except _PASS_THROUGH:
            raise
        except BaseException as exc:
            if started:  # a response broke off midway: its status cannot change any more
                if not isinstance(exc, APIError):
                    log.error("request %s failed after its response started", rid, exc_info=exc)
                return
            await answer(exc, rid)(scope, receive, send_with_id)
