"""Image URLs in the engine go through the gateway's guarded Fetcher, against real aiohttp servers on loopback.

Off by default (a model server behind the gateway gets images inline); when switched on, loopback and
private addresses are refused after DNS, redirects are checked again, and an oversized body is cut off while
it streams. Decoding runs in a worker thread, not on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from frugalserve.budget.fetch import Fetcher
from frugalserve.engine import images
from frugalserve.engine.requests import parse_chat_request
from frugalserve.engine.server import EngineSettings
from frugalserve.errors import InvalidRequest

from .conftest import EngineProcess, image_message, png_data_url

PNG = base64.b64decode(png_data_url(64, 48).split(",", 1)[1])
PARAM = "messages[0].content[1].image_url"


@dataclass
class Server:
    url: str
    hits: list[str] = field(default_factory=list)
    sent: list[int] = field(default_factory=lambda: [0])
    gone: asyncio.Event = field(default_factory=asyncio.Event)


Handler = Callable[[web.Request, Server], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[Server]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> Server:
        server = Server(url="")

        async def route(request: web.Request) -> web.StreamResponse:
            server.hits.append(request.path)
            return await handler(request, server)

        app = web.Application()
        app.router.add_get("/{name}", route)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        server.url = f"http://127.0.0.1:{port}"
        runners.append(runner)
        return server

    yield start
    for runner in runners:
        await runner.cleanup()


async def png(request: web.Request, server: Server) -> web.StreamResponse:
    return web.Response(body=PNG, content_type="image/png")


def settings(**kw) -> EngineSettings:
    return EngineSettings(model=Path("unused"), **kw)


async def load(url: str, s: EngineSettings) -> list:
    req = parse_chat_request({"messages": image_message(url)}, default_max_tokens=8, vision=True)
    async with Fetcher(s.fetch_limits()) as fetcher:
        await images.load_images(req, fetcher)
    return req.images


async def refused(url: str, s: EngineSettings) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as err:
        await load(url, s)
    assert err.value.param == PARAM and err.value.code == "invalid_image_url" and err.value.status == 400
    return err.value


async def test_remote_urls_are_refused_by_default_without_a_request(serve) -> None:
    server = await serve(png)
    err = await refused(server.url + "/cat.png", settings())
    assert "--allow-remote-images" in err.message
    assert server.hits == []


async def test_an_allowed_host_is_fetched_and_decoded(serve) -> None:
    server = await serve(png)
    (picture,) = await load(
        server.url + "/cat.png", settings(allow_remote_images=True, image_fetch_allow_hosts=("127.0.0.1",))
    )
    assert picture.size == (64, 48) and server.hits == ["/cat.png"]


async def test_a_loopback_url_is_refused_when_remote_images_are_on(serve) -> None:
    server = await serve(png)
    await refused(server.url + "/cat.png", settings(allow_remote_images=True))
    assert server.hits == []


async def test_a_redirect_to_a_name_resolving_to_loopback_is_refused(serve) -> None:
    target = await serve(png)
    port = target.url.rsplit(":", 1)[1]

    async def redirect(request: web.Request, server: Server) -> web.StreamResponse:
        raise web.HTTPFound(f"http://localhost:{port}/secret.png")

    origin = await serve(redirect)
    # The origin is allowed; the redirect's host is a name (checked after DNS), and it is not.
    await refused(origin.url + "/start.png", settings(allow_remote_images=True, image_fetch_allow_hosts=("127.0.0.1",)))
    assert origin.hits == ["/start.png"] and target.hits == []


async def test_an_oversized_image_is_cut_off_while_streaming(serve) -> None:
    chunk = b"\0" * 65536
    total = 50 * 1024 * 1024

    async def endless(request: web.Request, server: Server) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})  # chunked: no length to check first
        await response.prepare(request)
        try:
            while server.sent[0] < total:
                await response.write(chunk)
                server.sent[0] += len(chunk)
        except (ConnectionError, RuntimeError):  # the client hung up
            server.gone.set()
        return response

    server = await serve(endless)
    s = settings(allow_remote_images=True, image_fetch_allow_hosts=("127.0.0.1",), max_image_mb=1)
    await refused(server.url + "/big.png", s)
    await asyncio.wait_for(server.gone.wait(), 10)
    assert server.sent[0] < 16 * 1024 * 1024  # stopped early, far from the 50 MB on offer


async def test_a_slow_server_hits_the_fetch_time_limit(serve) -> None:
    async def slow(request: web.Request, server: Server) -> web.StreamResponse:
        await asyncio.sleep(5)
        return web.Response(body=PNG)

    server = await serve(slow)
    s = settings(allow_remote_images=True, image_fetch_allow_hosts=("127.0.0.1",), image_fetch_timeout_s=0.3)
    started = time.monotonic()
    await refused(server.url + "/slow.png", s)
    assert time.monotonic() - started < 3  # the server would answer after 5 s


async def test_an_oversized_data_url_is_refused_before_decoding() -> None:
    big = "data:image/png;base64," + base64.b64encode(b"\0" * (2 * 1024 * 1024)).decode()
    await refused(big, settings(max_image_mb=1))


async def test_image_decoding_runs_off_the_event_loop(monkeypatch) -> None:
    threads: list[threading.Thread] = []
    real = images.decode_image

    def spy(data: bytes, param: str):
        threads.append(threading.current_thread())
        return real(data, param)

    monkeypatch.setattr(images, "decode_image", spy)
    (picture,) = await load(png_data_url(32, 32), settings())
    assert picture.size == (32, 32)
    assert threads and threading.main_thread() not in threads  # the loop runs in the main thread here


@pytest.mark.engine
@pytest.mark.integration
def test_the_engine_process_refuses_an_image_url_by_default(engine: EngineProcess) -> None:
    r = httpx.post(
        engine.url + "/v1/chat/completions",
        json={"messages": image_message("http://127.0.0.1:9/cat.png"), "max_tokens": 2},
        timeout=30,
    )
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == PARAM and error["code"] == "invalid_image_url"
    assert "--allow-remote-images" in error["message"]


def test_png_fixture_is_a_real_png() -> None:
    from PIL import Image

    assert Image.open(io.BytesIO(PNG)).size == (64, 48)


@pytest.mark.engine
@pytest.mark.integration
async def test_an_engine_started_with_remote_images_fetches_only_what_its_flags_allow(serve, demo_model_dir) -> None:
    target = await serve(png)
    port = target.url.rsplit(":", 1)[1]

    async def redirect(request: web.Request, server: Server) -> web.StreamResponse:
        raise web.HTTPFound(f"http://localhost:{port}/secret.png")

    origin = await serve(redirect)
    proc = await asyncio.to_thread(
        EngineProcess, demo_model_dir, "--allow-remote-images", "--image-fetch-allow-host", "127.0.0.1"
    )
    try:
        async with httpx.AsyncClient(base_url=proc.url, timeout=60) as client:
            ok = await client.post(
                "/v1/chat/completions", json={"messages": image_message(target.url + "/cat.png"), "max_tokens": 2}
            )
            assert ok.status_code == 200, ok.text
            assert target.hits == ["/cat.png"]
            bounced = await client.post(
                "/v1/chat/completions", json={"messages": image_message(origin.url + "/go.png"), "max_tokens": 2}
            )
            assert bounced.status_code == 400 and bounced.json()["error"]["param"] == PARAM
            assert origin.hits == ["/go.png"] and target.hits == ["/cat.png"]  # the redirect was not followed
    finally:
        await asyncio.to_thread(proc.stop)
