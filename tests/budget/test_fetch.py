"""Real HTTP on 127.0.0.1 only: the guard refuses loopback unless it is allow-listed."""

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


@pytest.mark.parametrize(
    ("address", "public"),
    [
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
