"""Fixtures for the gateway tests: a model server on loopback that keeps what it was sent."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import uvicorn
from aiohttp import web

from frugalserve import config as cfg
from frugalserve.api.app import Gateway, create_app
from tests.procs import free_port


class Backend:
    """A model server on loopback that answers every chat and keeps what it was sent."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.lengths: list[str | None] = []
        self.headers: list[dict[str, str]] = []  # of each request (names lower-cased)
        self.url = ""
        self.finish: dict[str, str] = {}  # served model -> finish_reason of its answers (default "stop")

    async def answer(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.bodies.append(body)
        self.lengths.append(request.headers.get("content-length"))
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        data = orjson.loads(body)
        usage = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
        if data.get("stream"):
            chunk = {"id": "c", "object": "chat.completion.chunk", "model": data["model"], "choices": []}
            events = [
                {**chunk, "choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]},
                {**chunk, "usage": usage},
            ]
            text = "".join(f"data: {orjson.dumps(e).decode()}\n\n" for e in events) + "data: [DONE]\n\n"
            return web.Response(text=text, content_type="text/event-stream")
        message = {"role": "assistant", "content": "ok"}
        obj = (
            "text_completion" if request.path.endswith("/completions") and "messages" not in data else "chat.completion"
        )
        return web.json_response(
            {
                "id": "x",
                "object": obj,
                "model": data["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": self.finish.get(data["model"], "stop")}],
                "usage": usage,
            }
        )


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[Backend]:
    """A :class:`Backend` listening on a free loopback port until the block ends."""
    b = Backend()
    app = web.Application(client_max_size=100 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", b.answer)
    app.router.add_post("/v1/completions", b.answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    b.url = f"http://127.0.0.1:{port}"
    try:
        yield b
    finally:
        await runner.cleanup()


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    async with serving() as b:
        yield b


@contextlib.asynccontextmanager
async def gateway_on_loopback(config: cfg.Config, **kwargs: Any) -> AsyncIterator[tuple[str, Gateway]]:
    """The gateway served by uvicorn on a free loopback port (lifespan on: startup and shutdown run); yields
    its root URL."""
    app = create_app(config, **kwargs)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, log_level="warning"))
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started or task.done():
            break
        await asyncio.sleep(0.05)
    assert server.started, "the gateway did not start"
    try:
        yield f"http://127.0.0.1:{port}", app.state.gateway
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
