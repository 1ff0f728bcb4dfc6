"""Forwarding one request to its pool's backend and the response back, streaming as it arrives.

Both response kinds are small ASGI callables rather than framework responses because the gateway
must notice a client that goes away *while the upstream is still working* (ASGI servers only report
it through ``receive()``), and then close the upstream connection so the model stops generating.

What a client may see of a backend (the rest goes to the log with the request id):

- a failure names the pool and what happened (``pool 'vision': the backend refused the connection``),
  never the backend's address or the body of its error page;
- a 4xx the backend explains in OpenAI's error shape (or ``{"message"|"detail": str}``) keeps its
  status and message; any other 4xx body, and every 5xx, becomes ``the backend answered N``;
- a 200 answer to a non-streaming request must be a JSON object, else it is a 502;
- impossible usage counts (negative, non-integer, boolean, above 2**31-1) are taken as unknown, and
  the record's ``usage_note`` says why;
- an SSE event may end with any line end the SSE spec allows, and is at most :data:`MAX_EVENT_BYTES`.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from starlette.types import Receive, Scope, Send

from frugalserve.errors import APIError, UpstreamError, UpstreamTimeout
from frugalserve.pools import Lease
from frugalserve.tasks import First, race
from frugalserve.upstream import Body, Upstream, UpstreamResponse

log = logging.getLogger("frugalserve.proxy")
T = TypeVar("T")

# 499 (nginx's "client closed request") in metrics and records for requests whose client left.
CLIENT_CLOSED = 499
# The longest SSE event the gateway buffers (a chat chunk is a few hundred bytes; a backend that sends
# more without a blank line is broken or hostile).
MAX_EVENT_BYTES = 8 * 1024 * 1024
# Usage counts are stored in 32-bit integer columns; anything above is not a real count.
MAX_TOKEN_COUNT = 2**31 - 1
# Messages a backend gives for its 4xx answers are shown to the client up to this length.
_MAX_MESSAGE = 1000
_MARKUP = re.compile(r"<[A-Za-z!/?]")


class ClientGone(Exception):
    """The client disconnected before its response ended."""


class InvalidAnswer(UpstreamError):
    """The backend answered 200 with a body the client could not use (not a JSON object)."""

    code = "upstream_invalid_response"


async def wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def until_disconnect(receive: Receive, work: Awaitable[T], discard: Callable[[T], object] | None = None) -> T:
    """Await ``work`` unless the client disconnects first; then cancel it and raise :class:`ClientGone`.

    ``discard`` receives a result ``work`` produced that nobody will use (e.g. a lease to release).
    """
    won = await race(work, wait_disconnect(receive), discard=discard)
    if isinstance(won, First):
        return won.value
    raise ClientGone()


# -- usage -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Usage:
    """The backend's token counts as the gateway trusts them; ``note`` says why one is missing."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    note: str | None = None


NO_USAGE = Usage(note="the backend reported no usage")
USAGE_CUT_OFF = Usage(note="the stream ended before the backend reported usage")


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", float: "a number"}
    return names.get(type(value), "null" if value is None else type(value).__name__)


def parse_usage(value: object) -> Usage:
    """The ``usage`` object of a response or chunk, checked: an impossible count makes both unknown."""
    if not isinstance(value, dict):
        return Usage(note=f"usage is {_json_type(value)}, not an object")
    counts: dict[str, int] = {}
    missing = []
    for name in ("prompt_tokens", "completion_tokens"):
        n = value.get(name)
        if n is None:
            missing.append(name)
        elif isinstance(n, bool) or not isinstance(n, int):
            return Usage(note=f"usage.{name} is {_json_type(n)}, not an integer")
        elif n < 0:
            return Usage(note=f"usage.{name} is negative")
        elif n > MAX_TOKEN_COUNT:
            return Usage(note=f"usage.{name} is above 2**31-1")
        else:
            counts[name] = n
    note = f"usage has no {' and no '.join(missing)}" if missing else None
    return Usage(counts.get("prompt_tokens"), counts.get("completion_tokens"), note)


def merge_usage_details(usage: dict[str, Any], details: dict[str, int]) -> None:
    """Add the gateway's own prompt breakdown (text, image, video tokens; tokens saved) to a usage object."""
    existing = usage.get("prompt_tokens_details")
    usage["prompt_tokens_details"] = {**existing, **details} if isinstance(existing, dict) else dict(details)


# -- SSE -------------------------------------------------------------------------------------------

# A line ends with CRLF, LF or CR; an event ends at a blank line: two line ends in a row, a CRLF always
# counting as one (so "\r\n" alone is never a line end followed by a blank line). Written out per first
# line end so that the regex engine can skip to the next CR or LF quickly.
_EVENT_END = re.compile(rb"\r\n(?:\r\n?|\n)|\r\r\n?|\n(?:\r\n?|\n)")
_LINE_END = re.compile(rb"\r\n|\r|\n")
# Endings that certainly end an event, whatever comes next.
_COMMON_ENDS = (b"\n\n", b"\r\n\r\n", b"\r\r")
# A blank line is at most 4 bytes: the next scan starts this far back so one split across chunks is found.
_RESCAN = 3


def sse_error_event(exc: APIError) -> bytes:
    """An error sent in-band, after the stream's 200 went out: ``data: {"error": {...}}`` and a blank line."""
    return b"data: " + exc.to_bytes() + b"\n\n"


class SSEUsageFilter:
    """Passes SSE bytes through event by event, capturing the ``usage`` the upstream reports.

    The gateway always asks a streaming upstream for usage; when the client did not ask for it, the
    usage-only chunk (empty ``choices``) is dropped so that the client sees what it asked for. Only
    whole events are passed on, unchanged unless their usage is rewritten. Each byte is scanned once,
    and an event longer than ``max_event`` raises :class:`~frugalserve.errors.UpstreamError`.
    """

    __slots__ = ("_buf", "_details", "_drop_usage_only", "_max_event", "_scan", "usage")

    def __init__(
        self, drop_usage_only: bool, details: dict[str, int] | None = None, max_event: int = MAX_EVENT_BYTES
    ) -> None:
        self._buf = bytearray()
        self._scan = 0  # where the search for the next event end resumes
        self._drop_usage_only = drop_usage_only
        self._details = details
        self._max_event = max_event
        self.usage: Usage | None = None

    def feed(self, chunk: bytes) -> bytes:
        if not self._buf and len(chunk) <= self._max_event and chunk.endswith(_COMMON_ENDS):
            # The usual case: the chunk is whole events (a backend writes one or more per send).
            if not _real_usage(chunk):
                return chunk
            ends = [0, *(m.end() for m in _EVENT_END.finditer(chunk))]
            return b"".join(self._filter(chunk[a:b]) for a, b in itertools.pairwise(ends))
        buf = self._buf
        buf += chunk
        ends = [0]
        for m in _EVENT_END.finditer(buf, self._scan):
            if m.end() - ends[-1] > self._max_event:
                break
            ends.append(m.end())
        end = ends[-1]
        if len(buf) - end > self._max_event:
            raise UpstreamError(f"the backend sent an SSE event larger than {self._max_event // 1024 // 1024} MiB")
        complete = bytes(buf[:end])
        del buf[:end]
        self._scan = max(0, len(buf) - _RESCAN)
        if not _real_usage(complete):
            return complete
        return b"".join(self._filter(complete[a:b]) for a, b in itertools.pairwise(ends))

    def flush(self) -> bytes:
        """What is left when the stream ends normally (an event without its blank line)."""
        rest = bytes(self._buf)
        self._buf.clear()
        self._scan = 0
        return rest

    def _filter(self, event: bytes) -> bytes:
        if not _real_usage(event):
            return event
        lines = _LINE_END.split(event)
        data = [line[6:] if line[5:6] == b" " else line[5:] for line in lines if line.startswith(b"data:")]
        if not data:
            return event
        try:
            obj = orjson.loads(b"\n".join(data))
        except orjson.JSONDecodeError:
            return event
        if not isinstance(obj, dict) or obj.get("usage") is None:
            return event
        self.usage = parse_usage(obj["usage"])
        if self._drop_usage_only and not obj.get("choices"):
            return b""
        if self._details is None or not isinstance(obj["usage"], dict):
            return event
        merge_usage_details(obj["usage"], self._details)
        others = b"".join(line + b"\n" for line in lines if line and not line.startswith(b"data:"))
        return others + b"data: " + orjson.dumps(obj) + b"\n\n"


def _real_usage(data: bytes) -> bool:
    """Whether some event in ``data`` may report usage; most chunks carry ``"usage": null`` or none."""
    n = data.count(b'"usage"')
    return n > 0 and n > data.count(b'"usage":null') + data.count(b'"usage": null')


# -- errors ----------------------------------------------------------------------------------------


def _for_pool(exc: APIError, pool: str, request_id: str, url: str) -> APIError:
    """The client's copy of a backend failure names the pool; the log gets the address and the cause."""
    cause = f" ({exc.__cause__!r})" if exc.__cause__ else ""
    log.warning("request %s: pool %r, backend %s: %s%s", request_id, pool, url, exc.message, cause)
    named = type(exc)(f"pool '{pool}': {exc.message}", code=exc.code, status=exc.status)
    named.type = exc.type
    return named


def failure_kind(exc: APIError, status: int | None = None) -> str | None:
    """The ``kind`` label of ``frugalserve_upstream_errors`` for a failure while reading an answer; None for
    a 4xx the backend explains, which is the client's error, not the backend's."""
    if status is not None and status >= 400:
        return "status" if status >= 500 else None
    if isinstance(exc, UpstreamTimeout):
        return "timeout"
    return "invalid" if isinstance(exc, InvalidAnswer) else "broken"


def upstream_status_error(pool: str, status: int, body: bytes) -> APIError:
    """A backend's error answer as the client sees it (the body itself is logged by the caller)."""
    if status < 500:
        message, err_type, param, code = _explained(body)
        if message is not None:
            err = APIError(message, status=status, param=param, code=code)
            err.type = err_type or "invalid_request_error"
            return err
        err = APIError(f"pool '{pool}': the backend answered {status}", status=status, code="upstream_client_error")
        err.type = "invalid_request_error"
        return err
    return UpstreamError(f"pool '{pool}': the backend answered {status}", code="upstream_status")


def _explained(body: bytes) -> tuple[str | None, str | None, str | None, str | None]:
    """Message, type, param and code of a JSON error body a backend wrote for the client, if any."""
    obj = _json_object(body)
    if obj is None:
        return None, None, None, None
    nested = obj.get("error")
    err: dict[str, Any] = nested if isinstance(nested, dict) else obj  # OpenAI's shape, or vLLM's flat one
    message = err.get("message") if isinstance(err.get("message"), str) else err.get("detail")
    if not isinstance(message, str) or not message.strip() or _MARKUP.search(message):
        return None, None, None, None

    def text(value: object) -> str | None:
        if isinstance(value, bool) or not isinstance(value, str | int):
            return None
        return str(value)[:100]

    return message[:_MAX_MESSAGE], text(err.get("type")), text(err.get("param")), text(err.get("code"))


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


# -- sending and reading ---------------------------------------------------------------------------


async def send_upstream(
    upstream: Upstream, receive: Receive, pool: str, url: str, body: Body, headers: Mapping[str, str]
) -> UpstreamResponse:
    """Send the request; a client leaving meanwhile cancels it (:class:`ClientGone`)."""
    request_id = headers.get("x-request-id", "-")
    try:
        return await until_disconnect(receive, upstream.send("POST", url, body, headers), discard=_close)
    except (UpstreamError, UpstreamTimeout) as exc:
        raise _for_pool(exc, pool, request_id, url) from exc.__cause__


def _close(response: UpstreamResponse) -> None:
    response.close()


def is_event_stream(upstream: UpstreamResponse, stream: bool) -> bool:
    """The answer is streamed through as SSE (a streaming request, answered 2xx with an event stream)."""
    return stream and upstream.status < 400 and "text/event-stream" in upstream.headers.get("content-type", "")


async def read_answer(
    receive: Receive, upstream: UpstreamResponse, pool: str, request_id: str, limit: int, details: dict[str, int] | None
) -> tuple[bytes, Usage]:
    """Read a whole (non-streamed) answer and check it; errors become what the client should see.

    Returns the body to send (with ``details`` merged into its usage) and the usage as trusted.
    """
    try:
        payload = await until_disconnect(receive, upstream.read(limit))
    except (UpstreamError, UpstreamTimeout) as exc:
        raise _for_pool(exc, pool, request_id, upstream.url) from exc.__cause__
    finally:
        upstream.close()
    status = upstream.status
    if status >= 400:
        text = payload[:500].decode("utf-8", "replace")
        # a 4xx is usually the client's own mistake, explained by the backend: worth a line, not a warning
        log.log(
            logging.WARNING if status >= 500 else logging.INFO,
            "request %s: pool %r, backend %s answered %d: %s",
            *(request_id, pool, upstream.url, status, text),
        )
        raise upstream_status_error(pool, status, payload)
    obj = _json_object(payload)
    if obj is None:
        log.warning(
            "request %s: pool %r, backend %s answered %d with a body that is not a JSON object: %s",
            *(request_id, pool, upstream.url, status, payload[:500].decode("utf-8", "replace")),
        )
        raise InvalidAnswer(f"pool '{pool}': the backend's answer is not a JSON object")
    raw_usage = obj.get("usage")
    if raw_usage is None:
        return payload, NO_USAGE
    if details is not None and isinstance(raw_usage, dict):
        merge_usage_details(raw_usage, details)
        payload = orjson.dumps(obj)
    return payload, parse_usage(raw_usage)


Finish = Callable[[int, Usage | None, APIError | None, bool], None]
FirstByte = Callable[[], None]


def sse_headers(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),
        *((k.encode(), v.encode()) for k, v in headers.items()),
    ]


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
        *,
        pool: str,
        request_id: str,
    ) -> None:
        self._upstream = upstream
        self._lease = lease
        self._headers = headers
        self._filter = SSEUsageFilter(drop_usage_only=not client_wants_usage, details=usage_details)
        self._on_first_byte = on_first_byte
        self._on_finish = on_finish
        self._pool = pool
        self._request_id = request_id
        self._ended = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        error: APIError | None = None
        gone = False
        try:
            await until_disconnect(receive, self._pump(send))
        except ClientGone:
            gone = True
        except APIError as exc:  # the upstream broke off mid-stream: tell the client in-band
            error = _for_pool(exc, self._pool, self._request_id, self._upstream.url)
            self._end(error, gone)
            await self._send_error(send, error)
        finally:
            self._end(error, gone)

    def _end(self, error: APIError | None, gone: bool) -> None:
        """Release the replica and finish the record, once. Done before the stream's last bytes are sent, so
        that a client that starts its next request as soon as this one ends never finds it still in flight."""
        if self._ended:
            return
        self._ended = True
        self._upstream.close()
        self._lease.release()
        usage = self._filter.usage or (USAGE_CUT_OFF if gone or error else NO_USAGE)
        self._on_finish(200, usage, error, gone)

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
        last = self._filter.flush()
        self._end(None, False)
        await send({"type": "http.response.body", "body": last, "more_body": False})

    async def _send_error(self, send: Send, exc: APIError) -> None:
        # Only whole events were forwarded, so the client's parser is at an event boundary.
        try:
            await send({"type": "http.response.body", "body": sse_error_event(exc), "more_body": False})
        except Exception:  # the client left too; the record already says what happened
            log.debug("request %s: the client left before the error event", self._request_id)
