"""Talking to model servers: one small interface, and the one place its errors are translated.

:class:`Upstream` sends a request and returns an :class:`UpstreamResponse` whose body is read as it
arrives. aiohttp's exceptions never leave this module: a connect failure becomes
:class:`~frugalserve.errors.UpstreamError` (502), a read or connect timeout
:class:`~frugalserve.errors.UpstreamTimeout` (504), and a connection that breaks mid-body
:class:`~frugalserve.errors.UpstreamError`. Their messages say what happened and nothing else (no
address, no backend text), so a caller may show them to a client after naming the pool; the aiohttp
error stays attached as ``__cause__`` for the log. Tests and the simulator can stand in another object with
the same ``send`` method.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from frugalserve.errors import UpstreamError, UpstreamTimeout

# Hop-by-hop headers and those the gateway sets itself are never copied from an upstream response.
_DROP_RESPONSE_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "server", "date"}
)


_PIECE = 1 << 20
# A request body: bytes, or pieces sent one after another (a large body is never joined into one object).
Body = bytes | Sequence[bytes] | None


class UpstreamResponse(Protocol):
    status: int
    headers: Mapping[str, str]  # names lower-cased
    url: str  # where the request went: for the log, never for a client

    def iter_chunks(self) -> AsyncIterator[bytes]: ...

    async def read(self, limit: int) -> bytes: ...

    def close(self) -> None: ...


class Upstream(Protocol):
    async def send(self, method: str, url: str, body: Body, headers: Mapping[str, str]) -> UpstreamResponse: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class Timeouts:
    connect_s: float
    # The longest the upstream may stay silent: before its headers, and between two body chunks.
    read_s: float


class _AiohttpResponse:
    def __init__(self, resp: aiohttp.ClientResponse, url: str, timeouts: Timeouts) -> None:
        self._resp = resp
        self._timeouts = timeouts
        self.url = url
        self.status = resp.status
        self.headers: Mapping[str, str] = {
            k.lower(): v for k, v in resp.headers.items() if k.lower() not in _DROP_RESPONSE_HEADERS
        }

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except TimeoutError as exc:
            raise UpstreamTimeout(f"the backend sent nothing for {self._timeouts.read_s:g} s") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError("the backend broke off its answer") from exc
        finally:
            self._resp.release()

    async def read(self, limit: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        async for chunk in self.iter_chunks():
            size += len(chunk)
            if size > limit:
                self.close()
                raise UpstreamError(f"the backend's answer is larger than {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    def close(self) -> None:
        # Closing (not releasing) drops the connection, which is how an upstream learns to stop generating.
        self._resp.close()


async def _pieces(body: Sequence[bytes]) -> AsyncIterator[bytes | memoryview]:
    """A body in pieces of at most :data:`_PIECE` bytes (aiohttp writes one large bytes object in one call)."""
    for piece in body:
        view = memoryview(piece)
        for start in range(0, len(view), _PIECE):
            yield view[start : start + _PIECE]


class HttpUpstream:
    """The aiohttp client shared by every pool of a gateway; create it inside the running event loop."""

    def __init__(self, timeouts: Timeouts) -> None:
        self._timeouts = timeouts
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect_s, sock_read=timeouts.read_s),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )

    async def send(self, method: str, url: str, body: Body, headers: Mapping[str, str]) -> UpstreamResponse:
        t = self._timeouts
        data: bytes | AsyncIterator[bytes | memoryview] | None = None
        if body is not None:
            pieces = (body,) if isinstance(body, bytes) else body
            if len(pieces) == 1 and len(pieces[0]) <= _PIECE:
                data = pieces[0]
            else:  # streamed in pieces with their total length: the backend sees an ordinary body
                data = _pieces(pieces)
                headers = {**headers, "content-length": str(sum(map(len, pieces)))}
        try:
            resp = await self._session.request(method, url, data=data, headers=headers, allow_redirects=False)
        except aiohttp.ConnectionTimeoutError as exc:
            raise UpstreamTimeout(f"the backend did not accept the connection within {t.connect_s:g} s") from exc
        except TimeoutError as exc:
            raise UpstreamTimeout(f"the backend did not answer within {t.read_s:g} s") from exc
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, ConnectionRefusedError):
                raise UpstreamError("the backend refused the connection") from exc
            raise UpstreamError("the backend could not be reached") from exc
        except aiohttp.ServerDisconnectedError as exc:
            raise UpstreamError("the backend closed the connection without answering") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError("the backend's answer could not be read") from exc
        return _AiohttpResponse(resp, url, t)

    async def aclose(self) -> None:
        await self._session.close()
