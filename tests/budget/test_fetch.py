"""Real HTTP on 127.0.0.1 only: the guard refuses loopback unless it is allow-listed.

Names other than localhost resolve through a resolver the test injects (a dict), so a "public" name can
stand for the loopback server and a redirect can go to a name that resolves to a private address.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from frugalserve.budget.fetch import Fetcher, FetchError, is_public_address
from frugalserve.budget.limits import FetchLimits

BODY = b"\x89PNG fake image bytes" * 10


class DictResolver:
    """Resolves names from a dict and remembers what it was asked."""

    def __init__(self, hosts: dict[str, list[str]]) -> None:
        self.hosts = hosts
        self.asked: list[str] = []

    async def resolve(self, host: str) -> list[str]:
        self.asked.append(host)
        return self.hosts.get(host, [])


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    async def image(_: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="image/png")

    async def big(_: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()  # chunked: no Content-Length to trust
        await resp.prepare(_)
        for _i in range(100):
            await resp.write(b"x" * 10_000)
        return resp

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(body=BODY)

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    app = web.Application()
    app.router.add_get("/image.png", image)
    app.router.add_get("/big", big)
    app.router.add_get("/slow", slow)
    app.router.add_get("/redirect", redirect)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    yield srv
    await srv.close()


def _url(srv: TestServer, path: str) -> str:
    return f"http://127.0.0.1:{srv.port}{path}"


async def test_loopback_is_refused_by_default(server: TestServer) -> None:
    async with Fetcher(FetchLimits()) as f:
        with pytest.raises(FetchError, match="not public"):
            await f.fetch(_url(server, "/image.png"))


async def test_allow_listed_loopback_host_is_fetched(server: TestServer) -> None:
    async with Fetcher(FetchLimits(allow_hosts=("127.0.0.1",))) as f:
        assert await f.fetch(_url(server, "/image.png")) == BODY


async def test_a_name_resolving_to_loopback_is_refused(server: TestServer) -> None:
    async with Fetcher(FetchLimits(allow_hosts=("127.0.0.1",))) as f:
        with pytest.raises(FetchError, match="non-public"):
            await f.fetch(f"http://localhost:{server.port}/image.png")


@pytest.mark.parametrize("target", ["http://10.1.2.3/x", "http://169.254.169.254/latest/meta-data/", "http://[::1]/x"])
async def test_redirect_to_a_private_address_is_refused(server: TestServer, target: str) -> None:
    async with Fetcher(FetchLimits(allow_hosts=("127.0.0.1",))) as f:
        with pytest.raises(FetchError, match="not public"):
            await f.fetch(_url(server, f"/redirect?to={target}"))


async def test_redirect_to_an_allowed_host_is_followed(server: TestServer) -> None:
    async with Fetcher(FetchLimits(allow_hosts=("127.0.0.1",))) as f:
        assert await f.fetch(_url(server, "/redirect?to=/image.png")) == BODY


async def test_redirect_loops_stop_after_the_limit(server: TestServer) -> None:
    async with Fetcher(FetchLimits(allow_hosts=("127.0.0.1",), max_redirects=2)) as f:
        with pytest.raises(FetchError, match="redirects"):
            await f.fetch(_url(server, "/redirect?to=/redirect%3Fto%3D/redirect%253Fto%253D/image.png"))


async def test_oversize_body_is_cut_off(server: TestServer) -> None:
    async with Fetcher(FetchLimits(allow_hosts=("127.0.0.1",), max_bytes=50_000)) as f:
        with pytest.raises(FetchError, match="larger than"):
            await f.fetch(_url(server, "/big"))


async def test_slow_server_times_out(server: TestServer) -> None:
    async with Fetcher(FetchLimits(allow_hosts=("127.0.0.1",), timeout_s=0.3)) as f:
        with pytest.raises(FetchError, match="longer than"):
            await f.fetch(_url(server, "/slow"))


async def test_http_error_status_is_a_fetch_error(server: TestServer) -> None:
    async with Fetcher(FetchLimits(allow_hosts=("127.0.0.1",))) as f:
        with pytest.raises(FetchError, match="HTTP 404"):
            await f.fetch(_url(server, "/missing"))


@pytest.mark.parametrize("url", ["ftp://example.com/x.png", "file:///etc/passwd", "gopher://x"])
async def test_other_schemes_are_refused(url: str) -> None:
    async with Fetcher(FetchLimits()) as f:
        with pytest.raises(FetchError, match="only http"):
            await f.fetch(url)


async def test_data_urls_are_decoded_with_a_size_limit() -> None:
    url = "data:image/png;base64," + base64.b64encode(BODY).decode()
    async with Fetcher(FetchLimits(max_bytes=len(BODY))) as f:
        assert await f.fetch(url) == BODY
    async with Fetcher(FetchLimits(max_bytes=len(BODY) - 1)) as f:
        with pytest.raises(FetchError, match="larger than"):
            await f.fetch(url)


async def test_http_can_be_switched_off() -> None:
    async with Fetcher(FetchLimits(allow_http=False)) as f:
        with pytest.raises(FetchError, match="only data"):
            await f.fetch("http://example.com/x.png")


async def test_allowed_name_is_connected_to_the_address_the_resolver_gave(server: TestServer) -> None:
    resolver = DictResolver({"images.test": ["127.0.0.1"]})
    async with Fetcher(FetchLimits(allow_hosts=("images.test",)), resolver) as f:
        assert await f.fetch(f"http://images.test:{server.port}/image.png") == BODY
    assert resolver.asked == ["images.test"]


@pytest.mark.parametrize(
    "addresses",
    [
        ["127.0.0.1"],
        ["10.20.30.40"],
        ["169.254.169.254"],
        ["8.8.8.8", "127.0.0.1"],  # one bad address is enough: the connection may pick any
        ["64:ff9b::7f00:1"],
        ["2002:7f00:1::1"],
        ["::ffff:127.0.0.1"],
    ],
)
async def test_redirect_to_a_name_resolving_to_a_private_address_is_refused(
    server: TestServer, addresses: list[str]
) -> None:
    resolver = DictResolver({"images.test": ["127.0.0.1"], "evil.test": addresses})
    target = f"http://evil.test:{server.port}/image.png"
    async with Fetcher(FetchLimits(allow_hosts=("images.test",)), resolver) as f:
        with pytest.raises(FetchError, match=r"evil\.test resolves to a non-public address"):
            await f.fetch(f"http://images.test:{server.port}/redirect?to={target}")
    assert resolver.asked == ["images.test", "evil.test"]


async def test_a_name_that_does_not_resolve_is_a_fetch_error() -> None:
    async with Fetcher(FetchLimits(), DictResolver({})) as f:
        with pytest.raises(FetchError, match=r"cannot resolve host nowhere\.test"):
            await f.fetch("http://nowhere.test/x.png")


async def test_the_system_resolver_is_the_default_and_refuses_localhost(server: TestServer) -> None:
    async with Fetcher(FetchLimits()) as f:
        with pytest.raises(FetchError, match="localhost resolves to a non-public address"):
            await f.fetch(f"http://localhost:{server.port}/image.png")


@pytest.mark.parametrize("literal", ["[64:ff9b::7f00:1]", "[::ffff:7f00:1]", "[2002:a00:1::]", "[::127.0.0.1]"])
async def test_ipv6_literals_embedding_a_private_ipv4_are_refused(literal: str) -> None:
    async with Fetcher(FetchLimits(), DictResolver({})) as f:
        with pytest.raises(FetchError, match="not public"):
            await f.fetch(f"http://{literal}/x.png")


@pytest.mark.parametrize(
    ("address", "public"),
    [
        # NAT64, well-known prefix (RFC 6052): the IPv4 is the last 32 bits.
        ("64:ff9b::7f00:1", False),  # 127.0.0.1
        ("64:ff9b::127.0.0.1", False),
        ("64:ff9b::a00:1", False),  # 10.0.0.1
        ("64:ff9b::a9fe:a9fe", False),  # 169.254.169.254
        ("64:ff9b::", False),  # 0.0.0.0
        ("64:ff9b::808:808", True),  # 8.8.8.8
        # NAT64, local-use prefix (RFC 8215): never public.
        ("64:ff9b:1::7f00:1", False),
        ("64:ff9b:1::808:808", False),
        # 6to4 (RFC 3056): the IPv4 is bits 16-47.
        ("2002:7f00:1::1", False),  # 127.0.0.1
        ("2002:a00:1::", False),  # 10.0.0.1
        ("2002:c0a8:101:5::1", False),  # 192.168.1.1
        ("2002:a9fe:a9fe::", False),  # 169.254.169.254
        ("2002:808:808::1", True),  # 8.8.8.8
        # IPv4-compatible ::a.b.c.d (deprecated), including :: and ::1.
        ("::127.0.0.1", False),
        ("::7f00:1", False),
        ("::a00:1", False),
        ("::", False),
        ("::1", False),
        ("::8.8.8.8", True),
        # IPv4-mapped ::ffff:a.b.c.d and IPv4-translated ::ffff:0:a.b.c.d.
        ("::ffff:127.0.0.1", False),
        ("::ffff:7f00:1", False),
        ("::ffff:a9fe:a9fe", False),
        ("::ffff:8.8.8.8", True),
        ("::ffff:0:7f00:1", False),
        ("::ffff:0:808:808", True),
        # Teredo 2001:0:SERVER:flags:port:CLIENT, the client's bits inverted.
        ("2001:0:808:808:0:0:80ff:fffe", False),  # server 8.8.8.8, client 127.0.0.1 (0x7f000001 ^ ~0)
        ("2001:0:a00:1:0:0:f7f7:f7f7", False),  # server 10.0.0.1, client 8.8.8.8
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # client 192.0.2.45 (documentation)
        ("2001:0:808:808:0:0:fefe:fefe", True),  # server 8.8.8.8, client 1.1.1.1
        # Other IPv6 that is not global in every Python version.
        ("fec0::1", False),
        ("2001:db8::1", False),
        ("100::1", False),
        ("ff02::1", False),
        ("fe80::1%eth0", False),
        ("8.8.8.8", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("224.0.0.1", False),
        ("0.0.0.0", False),
        ("::1", False),
        ("fe80::1", False),
        ("fd00:ec2::254", False),
        ("::ffff:10.0.0.1", False),
        ("2606:4700:4700::1111", True),
    ],
)
def test_address_classification(address: str, public: bool) -> None:
    assert is_public_address(address) is public
