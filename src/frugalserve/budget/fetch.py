"""Guarded fetching of image and video URLs: data: URLs, and http(s) with SSRF protection.

An http(s) host must resolve only to public addresses (not loopback, private, link-local, multicast,
reserved, shared or cloud-metadata ones, nor an IPv6 form that embeds such an IPv4 address) unless it is
on the allow-list. The check happens in the connector's resolver, so the connection goes to the very
address that was checked (no DNS rebinding), and every redirect is checked again. Size and time are
bounded. Failures are :class:`FetchError`.

:func:`decode_data_url` is the one data: URL decoder of the gateway and the built-in engine.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes, urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from frugalserve.budget import offload
from frugalserve.budget.limits import FetchLimits

_REDIRECTS = {301, 302, 303, 307, 308}
# Cloud metadata endpoints that are not covered by the ranges above in every Python version.
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("100.100.100.200")}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix: the IPv4 is the last 32 bits
_SIIT = ipaddress.ip_network("::ffff:0:0:0/96")  # RFC 2765 IPv4-translated
_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated IPv4-compatible, ::a.b.c.d (and :: and ::1)
# Not global, whatever the Python version's ipaddress says: local-use NAT64 (RFC 8215; the IPv4's place
# depends on a prefix length only its operator knows), site-local, documentation, discard, SRv6.
_NOT_GLOBAL_V6 = tuple(
    ipaddress.ip_network(n)
    for n in ("64:ff9b:1::/48", "fec0::/10", "2001:db8::/32", "3fff::/20", "100::/64", "5f00::/16")
)


class FetchError(ValueError):
    """A URL that cannot be fetched; the message is for the client."""


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...] | None:
    """The IPv4 addresses an IPv6 address stands for, or None when it embeds none.

    IPv4-mapped ``::ffff:a.b.c.d``, IPv4-translated ``::ffff:0:a.b.c.d``, IPv4-compatible ``::a.b.c.d``,
    NAT64 ``64:ff9b::a.b.c.d``, 6to4 ``2002:AABB:CCDD::/48`` and Teredo ``2001:0:SERVER:flags:port:~CLIENT``
    (both the server and the client, whose bits are inverted).
    """
    if ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped,)
    if ip.teredo is not None:
        return ip.teredo
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip in _NAT64 or ip in _SIIT or ip in _COMPATIBLE:
        return (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF),)
    return None


def is_public_address(address: str) -> bool:
    """Whether an IP address (``fe80::1%eth0`` zones allowed) may be connected to without an allow-list."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in net for net in _NOT_GLOBAL_V6):
            return False
        inner = embedded_ipv4(ip)
        if inner is not None:
            return all(_is_public(v4) for v4 in inner)
    return _is_public(ip)


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip.is_global and not ip.is_multicast and ip not in _METADATA


def host_allowed(host: str, allow_hosts: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    for pattern in allow_hosts:
        pattern = pattern.lower()
        if host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:])):
            return True
    return False


class HostResolver(Protocol):
    """Name resolution for the fetcher: every address ``host`` resolves to (a fake one in tests)."""

    async def resolve(self, host: str) -> list[str]: ...


class SystemResolver:
    """The system's resolver (getaddrinfo in the loop's default executor)."""

    async def resolve(self, host: str) -> list[str]:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            raise FetchError(f"cannot resolve host {host}") from None
        return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver: resolves with a :class:`HostResolver`, then refuses a host not allowed that has
    any non-public address."""

    def __init__(self, allow_hosts: tuple[str, ...], hosts: HostResolver | None = None) -> None:
        self.allow_hosts = allow_hosts
        self._hosts = hosts or SystemResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await self._hosts.resolve(host)
        if not addresses:
            raise FetchError(f"cannot resolve host {host}")
        results: list[ResolveResult] = []
        for address in addresses:
            try:
                ip = ipaddress.ip_address(address.split("%", 1)[0])
            except ValueError:
                raise FetchError(f"host {host} resolves to {address!r}, not an address") from None
            if not host_allowed(host, self.allow_hosts) and not is_public_address(address):
                raise FetchError(f"host {host} resolves to a non-public address; refused")
            af = socket.AF_INET if ip.version == 4 else socket.AF_INET6
            if family in (socket.AF_UNSPEC, af):
                flags = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
                results.append(ResolveResult(hostname=host, host=address, port=port, family=af, proto=0, flags=flags))
        if not results:
            raise FetchError(f"host {host} has no address of the requested family")
        return results

    async def close(self) -> None:
        return None


def decode_data_url(url: str, max_bytes: int, what: str = "image") -> bytes:
    """The bytes of a ``data:[<media type>][;base64],<data>`` URL of at most ``max_bytes`` bytes.

    Base64 may be wrapped in lines; anything else that is not base64 is refused. Large payloads are decoded
    in pieces (:func:`offload.b64decode`) so that a caller in a worker thread does not hold the GIL for long.
    Raises :class:`FetchError` with a message for the client; ``what`` names the thing ("image", "video").
    """
    if not url[:5].lower() == "data:":
        raise FetchError(f"the {what} URL is not a data: URL")
    comma = url.find(",")
    if comma < 0:
        raise FetchError(f"the {what} data URL has no ',' before its data")
    is_base64 = url[:comma].lower().endswith(";base64")
    size = len(url) - comma - 1  # the payload is not copied out of the URL: it may be 27 MB
    if (size * 3 // 4 if is_base64 else size // 3) > max_bytes + 3:
        raise FetchError(f"the {what} is larger than the limit of {max_bytes} bytes")
    if is_base64:
        try:
            data = offload.b64decode(url, comma + 1)
        except ValueError:
            raise FetchError(f"the {what} data URL is not valid base64") from None
    else:
        data = unquote_to_bytes(url[comma + 1 :])
    if len(data) > max_bytes:
        raise FetchError(f"the {what} is larger than the limit of {max_bytes} bytes")
    return data


class Fetcher:
    """Fetches image and video URLs under one pool's :class:`FetchLimits`. Owns an aiohttp session; close it.

    ``resolver`` resolves host names (default: the system's); every address it gives is checked.
    """

    def __init__(self, limits: FetchLimits, resolver: HostResolver | None = None) -> None:
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
        if url[:5].lower() == "data:":
            return await offload.run(len(url), decode_data_url, url, self.limits.max_bytes, what)
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
            raise FetchError(f"the {what} is larger than the limit of {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(65536):
            size += len(chunk)
            if size > limit:
                raise FetchError(f"the {what} is larger than the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
