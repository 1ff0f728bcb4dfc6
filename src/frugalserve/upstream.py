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

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from frugalserve.errors import UpstreamError, UpstreamTimeout

# Hop-by-hop headers and those the gateway sets itself are never copied from an upstream response.
_DROP_RESPONSE_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "server", "date"}
)


class UpstreamResponse(Protocol):
    status: int
    headers: Mapping[str, str]  # names lower-cased
    url: str  # where the request went: for the log, never for a client

    def iter_chunks(self) -> AsyncIterator[bytes]: ...

    async def read(self, limit: int) -> bytes: ...

    def close(self) -> None: ...


class Upstream(Protocol):
    async def send(self, method: str, url: str, body: bytes | None, headers: Mapping[str, str]) -> UpstreamResponse: ...

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

    async def send(self, method: str, url: str, body: bytes | None, headers: Mapping[str, str]) -> UpstreamResponse:
        t = self._timeouts
        try:
            resp = await self._session.request(method, url, data=body, headers=headers, allow_redirects=False)
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
