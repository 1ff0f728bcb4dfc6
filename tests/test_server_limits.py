"""Slow and oversized clients against a real gateway process on loopback (frugalserve.listener), and the
shutdown grace. Every loop is bounded in count and time."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from PIL import Image

from . import procs

pytestmark = pytest.mark.integration

POOL = "pools:\n  - {name: a, model: m, backend: {url: 'http://127.0.0.1:9'}}\n"
HEAD = b"GET /healthz HTTP/1.1\r\nHost: gw\r\n"


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


class Client(asyncio.Protocol):
    """A raw HTTP/1.1 client connection that keeps all the server sent, even when a reset follows it."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False
        self.changed = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.changed.set()

    def eof_received(self) -> None:
        self.closed = True
        self.changed.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.changed.set()
        self.writable.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    async def send(self, data: bytes) -> None:
        assert self.transport is not None
        if not self.closed and not self.transport.is_closing():
            self.transport.write(data)
            await asyncio.wait_for(self.writable.wait(), 10)

    async def until(self, done: Callable[[], bool], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not done():
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), max(deadline - time.monotonic(), 0.001))

    async def closed_within(self, seconds: float) -> bytes:
        """Everything the server sent; fails if the connection stays open past ``seconds``."""
        await self.until(lambda: self.closed, seconds)
        return bytes(self.data)

    async def response(self, seconds: float) -> tuple[int, dict[str, str], bytes]:
        """The next response (with a content-length) from the server."""

        def complete() -> bool:
            head, sep, rest = self.data.partition(b"\r\n\r\n")
            return bool(sep) and len(rest) >= int(_headers(head).get("content-length", "0"))

        await self.until(lambda: complete() or self.closed, seconds)
        assert complete(), bytes(self.data[:200])
        head, _, rest = bytes(self.data).partition(b"\r\n\r\n")
        headers = _headers(head)
        size = int(headers.get("content-length", "0"))
        del self.data[: len(head) + 4 + size]
        return int(head.split()[1]), headers, rest[:size]


def _headers(head: bytes | bytearray) -> dict[str, str]:
    lines = bytes(head).decode("latin-1").split("\r\n")[1:]
    return dict(line.lower().split(": ", 1) for line in lines if ": " in line)


@contextlib.asynccontextmanager
async def connection(port: int) -> AsyncIterator[Client]:
    _, client = await asyncio.get_running_loop().create_connection(Client, "127.0.0.1", port)
    try:
        yield client
    finally:
        assert client.transport is not None
        client.transport.close()


async def healthz(url: str) -> int:
    async with httpx.AsyncClient(timeout=5) as client:
        return (await client.get(f"{url}/healthz")).status_code


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_trickled_headers_get_408_and_silent_connections_close_after_header_timeout(tmp_path: Path) -> None:
    with procs.gateway(tmp_path, "gateway: {header_timeout_s: 1}\n" + POOL) as (url, _):
        port = port_of(url)

        async def trickle() -> tuple[float, bytes]:
            async with connection(port) as client:
                start = time.monotonic()

                async def feed() -> None:
                    await client.send(HEAD)
                    for i in range(40):  # 8 s of trickling at most, far past the 1 s timeout
                        await asyncio.sleep(0.2)
                        await client.send(b"x-trickle-%d: y\r\n" % i)

                feeder = asyncio.ensure_future(feed())
                try:
                    data = await client.closed_within(3.0)
                finally:
                    feeder.cancel()
                return time.monotonic() - start, data

        async def silent() -> float:
            async with connection(port) as client:
                start = time.monotonic()
                assert await client.closed_within(3.0) == b""
                return time.monotonic() - start

        *trickled, quiet = await asyncio.gather(*(trickle() for _ in range(50)), silent())
        for took, data in trickled:  # type: ignore[misc]
            assert data.startswith(b"HTTP/1.1 408 "), data[:100]
            assert b'"code":"request_timeout"' in data
            assert took < 2.5, took
        assert 0.9 < quiet < 2.5  # type: ignore[operator]
        assert await healthz(url) == 200


async def test_kept_alive_connection_idle_past_header_timeout_still_serves_next_request(tmp_path: Path) -> None:
    with procs.gateway(tmp_path, "gateway: {header_timeout_s: 0.5}\n" + POOL) as (url, _):
        async with connection(port_of(url)) as client:
            for _ in range(2):
                await client.send(HEAD + b"\r\n")
                assert (await client.response(5))[0] == 200
                await asyncio.sleep(1.0)  # idle between requests is the keep-alive timeout's business
            assert not client.closed


async def test_oversized_header_gets_431_and_unfinished_2mb_headers_leave_memory_bounded(tmp_path: Path) -> None:
    with procs.gateway(tmp_path, "gateway: {max_header_kb: 64}\n" + POOL) as (url, proc):
        port = port_of(url)
        async with connection(port) as client:  # complete but too large: an answer, then close
            await client.send(HEAD + b"x-big: " + b"a" * 70_000 + b"\r\n\r\n")
            status, headers, body = await client.response(5)
            assert status == 431 and headers["connection"] == "close"
            assert json.loads(body)["error"]["code"] == "request_header_fields_too_large"

        before = rss_mb(proc.pid)

        async def unfinished(client: Client) -> None:
            await client.send(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nx-big: ")
            for _ in range(32):  # 2 MB in 64 KiB writes, never ending the header
                await client.send(b"a" * 65536)

        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(connection(port)) for _ in range(100)]
            await asyncio.gather(*(unfinished(c) for c in clients))
            await asyncio.sleep(0.5)  # the last writes reach the gateway
            after = rss_mb(proc.pid)  # while the connections are still open (or were closed by the gateway)
            print(f"gateway RSS before {before:.1f} MB, with 100 unfinished 2 MB headers {after:.1f} MB")
            assert after - before < 50, (before, after)
            assert all(c.closed for c in clients), "each is refused with 431 and closed at once"
        assert await healthz(url) == 200


async def test_connections_beyond_the_limit_get_503_while_open_ones_keep_serving(tmp_path: Path) -> None:
    with procs.gateway(tmp_path, "gateway: {max_connections: 20, header_timeout_s: 30}\n" + POOL) as (url, _):
        port = port_of(url)
        async with contextlib.AsyncExitStack() as stack:
            kept = await stack.enter_async_context(connection(port))  # a kept-alive client
            await kept.send(HEAD + b"\r\n")
            assert (await kept.response(5))[0] == 200
            slow = [await stack.enter_async_context(connection(port)) for _ in range(19)]
            for client in slow:
                await client.send(b"GET /healthz HTTP/1.1\r\n")  # slow clients holding the other 19 places
            for _ in range(3):
                async with connection(port) as extra:
                    await extra.send(HEAD + b"\r\n")
                    status, headers, body = await extra.response(5)
                    assert status == 503, status
                    assert headers["retry-after"] == "1" and headers["connection"] == "close"
                    assert json.loads(body)["error"]["code"] == "too_many_connections"
                    await extra.closed_within(5)
            start = time.monotonic()
            await kept.send(HEAD + b"\r\n")
            assert (await kept.response(5))[0] == 200
            assert time.monotonic() - start < 1.0
        deadline = time.monotonic() + 10
        while await healthz(url) != 200:  # places free as the closes arrive
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)


async def test_trickled_body_gets_408_after_body_timeout(tmp_path: Path) -> None:
    with procs.gateway(tmp_path, "gateway: {body_timeout_s: 1}\n" + POOL) as (url, _):
        async with connection(port_of(url)) as client:
            start = time.monotonic()
            await client.send(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\ncontent-type: application/json\r\n"
                b"content-length: 1000\r\n\r\n{"
            )
            for _ in range(4):  # a byte now and then, never the whole body
                await asyncio.sleep(0.2)
                await client.send(b" ")
            data = await client.closed_within(3.0)
            assert data.startswith(b"HTTP/1.1 408 "), data[:100]
            assert b'"code":"request_timeout"' in data
            assert 0.9 < time.monotonic() - start < 2.5


async def test_requests_arriving_on_open_connections_during_shutdown_are_answered(tmp_path: Path) -> None:
    with procs.gateway(tmp_path, "gateway: {shutdown_grace_s: 10}\n" + POOL) as (url, proc):
        port = port_of(url)
        async with contextlib.AsyncExitStack() as stack:
            kept = await stack.enter_async_context(connection(port))
            await kept.send(HEAD + b"\r\n")
            assert (await kept.response(5))[0] == 200
            fresh = await stack.enter_async_context(connection(port))  # accepted, nothing sent yet
            partial = await stack.enter_async_context(connection(port))
            await partial.send(b"GET /healthz HTTP/1.1\r\n")  # a request still arriving
            await asyncio.sleep(0.2)  # the gateway has accepted both
            proc.send_signal(signal.SIGTERM)
            await kept.closed_within(5)  # an idle kept-alive connection closes at once
            for client, rest in ((fresh, HEAD + b"\r\n"), (partial, b"Host: gw\r\n\r\n")):
                await client.send(rest)
                status, headers, _ = await client.response(5)
                assert (status, headers["connection"]) == (200, "close")
                await client.closed_within(5)
        assert await asyncio.to_thread(proc.wait, 10) == 0


def test_shutdown_grace_below_one_second_is_honoured_with_a_stream_open(tmp_path: Path) -> None:
    with procs.fake_upstream(tmp_path) as upstream:
        config = (
            f"gateway: {{shutdown_grace_s: 0.5}}\npools:\n  - {{name: a, model: m, backend: {{url: '{upstream}'}}}}\n"
        )
        with procs.gateway(tmp_path, config) as (url, proc):
            body = {
                "model": "m",
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
                "x_fake": {"tokens": 200, "interval_s": 0.2},  # a 40 s stream
            }
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as response:
                assert response.status_code == 200
                chunks = response.iter_bytes()
                next(chunks)  # the stream is flowing
                start = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(httpx.HTTPError):
                    for _ in chunks:
                        pass
                proc.wait(10)
                took = time.monotonic() - start
            print(f"gateway exited {took:.2f}s after SIGTERM with a stream open (shutdown_grace_s 0.5)")
            assert took < 1.5, took
            assert "Cancel 1 running task(s)" in (tmp_path / f"gateway-{port_of(url)}.log").read_text()


def test_access_log_off_by_default_and_one_line_per_request_when_on(tmp_path: Path) -> None:
    with procs.fake_upstream(tmp_path) as upstream:
        pools = f"pools:\n  - {{name: a, model: m, backend: {{url: '{upstream}'}}}}\n"
        chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        for on in (False, True):
            with procs.gateway(tmp_path, f"gateway: {{access_log: {str(on).lower()}}}\n" + pools) as (url, proc):
                r = httpx.post(f"{url}/v1/chat/completions", json=chat, headers={"x-request-id": "req-42"}, timeout=10)
                assert r.status_code == 200
                assert httpx.get(f"{url}/nope", timeout=5).status_code == 404
                procs.stop(proc)
            log = (tmp_path / f"gateway-{port_of(url)}.log").read_text()
            access = [line for line in log.splitlines() if "frugalserve.access" in line]
            if not on:
                assert access == []
                continue
            assert " GET /healthz 200 " in access[0]  # procs.gateway's readiness polls
            access = [line for line in access if "/healthz" not in line]
            assert len(access) == 2, access
            assert " POST /v1/chat/completions 200 " in access[0] and "request_id=req-42" in access[0]
            assert "ms request_id=" in access[0] and "client=127.0.0.1:" in access[0]
            assert " GET /nope 404 " in access[1]


def test_logs_carry_no_alembic_or_libvips_chatter(tmp_path: Path) -> None:
    picture = io.BytesIO()
    Image.new("RGB", (1920, 1080), "teal").save(picture, "PNG")
    data_url = "data:image/png;base64," + base64.b64encode(picture.getvalue()).decode()
    chat = {
        "model": "m",
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url}}]}],
    }
    with (
        procs.fake_upstream(tmp_path) as upstream,
        procs.gateway(tmp_path, f"pools:\n  - {{name: a, model: m, backend: {{url: '{upstream}'}}}}\n") as (url, proc),
    ):
        r = httpx.post(f"{url}/v1/chat/completions", json=chat, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["prompt_tokens_details"]["image_tokens_saved"] > 0  # libvips did resize it
        procs.stop(proc)
    log = (tmp_path / f"gateway-{port_of(url)}.log").read_text()
    assert "Running upgrade" in log  # what changed in the database is still said
    for chatter in ("Context impl", "Will assume", "setup plugin", "VIPS", "pyvips"):
        assert chatter not in log, chatter
    assert "INFO:     " not in log, "uvicorn's own log format instead of the gateway's"


if sys.platform != "linux":
    pytestmark = [pytestmark, pytest.mark.skip(reason="reads /proc for RSS")]
