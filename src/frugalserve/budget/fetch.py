"""Guarded fetching of image URLs: data: URLs, and http(s) with SSRF protection.

An http(s) host must resolve only to public addresses (not loopback, private, link-local, multicast,
reserved, shared or cloud-metadata ones) unless it is on the allow-list. The check happens in the
connector's resolver, so the connection goes to the very address that was checked (no DNS rebinding),
and every redirect is checked again. Size and time are bounded. Failures are :class:`FetchError`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import socket
from typing import Any
from urllib.parse import unquote_to_bytes, urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from frugalserve.budget.limits import FetchLimits

_REDIRECTS = {301, 302, 303, 307, 308}
# Cloud metadata endpoints that are not covered by the ranges above in every Python version.
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("100.100.100.200")}


class FetchError(ValueError):
    """A URL that cannot be fetched; the message is for the client."""


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast and ip not in _METADATA


def host_allowed(host: str, allow_hosts: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    for pattern in allow_hosts:
        pattern = pattern.lower()
        if host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:])):
            return True
    return False


class GuardedResolver(AbstractResolver):
    """Resolves like the default resolver, then refuses any non-public address of a host not allowed."""

    def __init__(self, allow_hosts: tuple[str, ...], inner: AbstractResolver | None = None) -> None:
        self.allow_hosts = allow_hosts
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not host_allowed(host, self.allow_hosts):
            for r in results:
                if not is_public_address(r["host"]):
                    raise FetchError(f"host {host} resolves to a non-public address; refused")
        return results

    async def close(self) -> None:
        await self._inner.close()


def decode_data_url(url: str, max_bytes: int, what: str = "image") -> bytes:
    head, sep, payload = url.partition(",")
    if not sep:
        raise FetchError("malformed data: URL (no comma)")
    if len(payload) * 3 // 4 > max_bytes + 3:
        raise FetchError(f"{what} is larger than {max_bytes} bytes")
    try:
        data = base64.b64decode(payload, validate=False) if head.endswith(";base64") else unquote_to_bytes(payload)
    except (binascii.Error, ValueError):
        raise FetchError("malformed data: URL (bad base64)") from None
    if len(data) > max_bytes:
        raise FetchError(f"{what} is larger than {max_bytes} bytes")
    return data


class Fetcher:
    """Fetches image URLs under one pool's :class:`FetchLimits`. Owns an aiohttp session; close it."""

    def __init__(self, limits: FetchLimits, resolver: AbstractResolver | None = None) -> None:
        self.limits = limits
        self._resolver = GuardedResolver(limits.allow_hosts, resolver)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(resolver=self._resolver, use_dns_cache=False, limit=64)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True, trust_env=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Fetcher:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def fetch(self, url: str, what: str = "image") -> bytes:
        """The bytes at ``url``; ``what`` ("image", "video") names the thing in error messages."""
        if url.startswith("data:"):
            return decode_data_url(url, self.limits.max_bytes, what)
        if not self.limits.allow_http:
            raise FetchError("only data: URLs are accepted")
        try:
            async with asyncio.timeout(self.limits.timeout_s):
                return await self._fetch_http(url, what)
        except TimeoutError:
            raise FetchError(f"fetching the {what} took longer than {self.limits.timeout_s:g} s") from None

    def _check(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchError("only http, https and data: URLs are accepted")
        host = parts.hostname
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return  # a name: checked by the resolver at connect time
        # aiohttp does not resolve IP literals, so they are checked here.
        if not host_allowed(host, self.limits.allow_hosts) and not is_public_address(str(ip)):
            raise FetchError(f"address {host} is not public; refused")

    async def _fetch_http(self, url: str, what: str) -> bytes:
        session = self._client()
        for _ in range(self.limits.max_redirects + 1):
            self._check(url)
            try:
                async with session.get(url, allow_redirects=False) as resp:
                    if resp.status in _REDIRECTS and "Location" in resp.headers:
                        url = urljoin(url, resp.headers["Location"])
                        continue
                    if resp.status != 200:
                        raise FetchError(f"fetching the {what} failed: HTTP {resp.status}")
                    return await self._read(resp, what)
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, FetchError):
                    raise exc.os_error from None
                raise FetchError(f"cannot connect to {urlsplit(url).hostname}") from None
            except aiohttp.ClientError as exc:
                raise FetchError(f"fetching the {what} failed ({type(exc).__name__})") from None
        raise FetchError(f"more than {self.limits.max_redirects} redirects")

    async def _read(self, resp: aiohttp.ClientResponse, what: str) -> bytes:
        limit = self.limits.max_bytes
        if resp.content_length is not None and resp.content_length > limit:
            raise FetchError(f"{what} is larger than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(65536):
            size += len(chunk)
            if size > limit:
                raise FetchError(f"{what} is larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
