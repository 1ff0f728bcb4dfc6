"""The engine's HTTP face: vLLM's contract (OpenAI chat completions, /health, /v1/models, /metrics and the
sleep-mode routes) over a :class:`Scheduler`.

``create_engine_app(EngineSettings(...))`` builds everything; the model loads during the app's startup,
so ``/health`` answers only once the engine can serve. Every error leaves through ``error_response``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from frugalserve.engine.batching import Event, Generation, Scheduler
from frugalserve.engine.metrics import EngineMetrics
from frugalserve.engine.requests import ChatRequest, load_images, parse_chat_request
from frugalserve.errors import APIError, ContextLengthExceeded, InvalidRequest, NotFound, error_response

DEMO_NOTE = "demo model: random weights, its answers are meaningless"


@dataclass(frozen=True)
class EngineSettings:
    model: Path
    served_model_name: str | None = None
    device: str = "cpu"
    dtype: str = "auto"
    max_batch: int = 8
    batch_window_ms: float = 20.0
    vision_cache_mb: float = 256.0
    default_max_tokens: int = 256
    image_fetch_timeout_s: float = 10.0

    @property
    def name(self) -> str:
        return self.served_model_name or self.model.name


class Engine:
    """What the routes share: the runner, the scheduler and the HTTP client for image URLs."""

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self.metrics = EngineMetrics(settings.name)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self.runner: Any = None
        self.scheduler: Scheduler | None = None
        self.http: Any = None
        self.created = int(time.time())

    async def start(self) -> None:
        import httpx

        from frugalserve.engine.model import ModelRunner

        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download: the model is a local directory
        s = self.settings
        loop = asyncio.get_running_loop()
        self.runner = await loop.run_in_executor(
            self.executor,
            lambda: ModelRunner(
                s.model,
                device=s.device,
                dtype=s.dtype,
                vision_cache_mb=s.vision_cache_mb,
                on_cache_lookup=self.metrics.on_cache_lookup,
            ),
        )
        self.scheduler = Scheduler(
            self.runner,
            self.metrics,
            self.executor,
            max_batch=s.max_batch,
            batch_window_s=s.batch_window_ms / 1000,
        )
        await self.scheduler.start()
        self.http = httpx.AsyncClient(timeout=s.image_fetch_timeout_s)

    async def stop(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.http is not None:
            await self.http.aclose()
        self.executor.shutdown(wait=False, cancel_futures=True)

    @property
    def sched(self) -> Scheduler:
        assert self.scheduler is not None
        return self.scheduler


def create_engine_app(settings: EngineSettings) -> Starlette:
    engine = Engine(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await engine.start()
        try:
            yield
        finally:
            await engine.stop()

    async def on_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):  # unknown route or method
            exc = APIError(exc.detail, status=exc.status_code)
            exc.type, exc.code = "invalid_request_error", "not_found"
        return error_response(exc)

    routes = [
        Route("/health", functools.partial(health, engine), methods=["GET"]),
        Route("/v1/models", functools.partial(models, engine), methods=["GET"]),
        Route("/metrics", functools.partial(metrics, engine), methods=["GET"]),
        Route("/v1/chat/completions", functools.partial(chat, engine), methods=["POST"]),
        Route("/sleep", functools.partial(sleep, engine), methods=["POST"]),
        Route("/wake_up", functools.partial(wake_up, engine), methods=["POST"]),
        Route("/is_sleeping", functools.partial(is_sleeping, engine), methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={APIError: on_error, Exception: on_error, HTTPException: on_error},
    )
    app.state.engine = engine
    return app


async def health(engine: Engine, request: Request) -> Response:
    # Like vLLM: healthy while asleep too (the process is fine; /is_sleeping tells the rest).
    return Response(status_code=200)


async def models(engine: Engine, request: Request) -> Response:
    runner = engine.runner
    card: dict[str, Any] = {
        "id": engine.settings.name,
        "object": "model",
        "created": engine.created,
        "owned_by": "frugalserve",
        "root": str(engine.settings.model),
        "max_model_len": runner.max_context,
        "frugalserve": {"engine": "frugalserve", "demo": runner.is_demo, "vision": runner.is_vision},
    }
    if runner.is_demo:
        card["frugalserve"]["note"] = DEMO_NOTE
    return JSONResponse({"object": "list", "data": [card]})


async def metrics(engine: Engine, request: Request) -> Response:
    return Response(engine.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


async def sleep(engine: Engine, request: Request) -> Response:
    raw = request.query_params.get("level", "1")
    if raw not in ("1", "2"):
        raise InvalidRequest("'level' must be 1 or 2", param="level")
    await engine.sched.sleep(int(raw))
    return Response(status_code=200)


async def wake_up(engine: Engine, request: Request) -> Response:
    await engine.sched.wake()
    return Response(status_code=200)


async def is_sleeping(engine: Engine, request: Request) -> Response:
    s = engine.sched
    return JSONResponse({"is_sleeping": s.state == "sleeping", "level": s.sleep_level, "state": s.state})


# -- chat completions -----------------------------------------------------------------------------------
async def chat(engine: Engine, request: Request) -> Response:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise InvalidRequest("the request body is not valid JSON") from None
    runner = engine.runner
    req = parse_chat_request(body, default_max_tokens=engine.settings.default_max_tokens, vision=runner.is_vision)
    if req.model is not None and req.model != engine.settings.name:
        raise NotFound(
            f"the model '{req.model}' does not exist; this engine serves '{engine.settings.name}'",
            param="model",
            code="model_not_found",
        )
    engine.sched.ensure_accepting()  # fail fast, before the image work, when asleep
    await load_images(req, engine.http)
    prepared = await asyncio.to_thread(runner.prepare, req.messages, req.images)
    total = len(prepared.input_ids) + req.sampling.max_tokens
    if total > runner.max_context:
        raise ContextLengthExceeded(
            f"this model's maximum context length is {runner.max_context} tokens; the prompt has "
            f"{len(prepared.input_ids)} and max_tokens asks for {req.sampling.max_tokens} more",
            param="max_tokens",
        )
    gen = engine.sched.submit(prepared, req.sampling)
    reply = _Reply(engine, req, gen)
    if req.stream:
        return StreamingResponse(
            reply.sse(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return await reply.whole()


class _Reply:
    """Turns a Generation's events into OpenAI's response or SSE chunks."""

    def __init__(self, engine: Engine, req: ChatRequest, gen: Generation) -> None:
        self.req, self.gen = req, gen
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = engine.settings.name
        self.fingerprint = "frugalserve-demo" if engine.runner.is_demo else "frugalserve"

    def usage(self, completion: int) -> dict[str, int]:
        p = self.gen.prompt_tokens
        return {"prompt_tokens": p, "completion_tokens": completion, "total_tokens": p + completion}

    def _base(self, kind: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.fingerprint,
        }

    async def _events(self) -> AsyncIterator[Event]:
        while True:
            event = await self.gen.events.get()
            if event.kind == "error":
                assert event.error is not None
                raise event.error
            yield event
            if event.kind == "finish":
                return

    async def whole(self) -> Response:
        parts, finish = [], None
        try:
            async for ev in self._events():
                if ev.kind == "token":
                    parts.append(ev.text)
                else:
                    finish = ev
        finally:
            self.gen.cancel()  # no-op once finished; stops decoding if this handler is torn down
        assert finish is not None
        body = self._base("chat.completion") | {
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(parts)},
                    "logprobs": None,
                    "finish_reason": finish.reason,
                }
            ],
            "usage": self.usage(finish.completion_tokens),
        }
        return Response(orjson.dumps(body), media_type="application/json")

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = self._base("chat.completion.chunk") | {
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        }
        if self.req.include_usage:
            body["usage"] = None
        return b"data: " + orjson.dumps(body) + b"\n\n"

    async def sse(self) -> AsyncIterator[bytes]:
        try:
            yield self._chunk({"role": "assistant", "content": ""})
            async for ev in self._events():
                if ev.kind == "token":
                    yield self._chunk({"content": ev.text})
                else:
                    yield self._chunk({}, ev.reason)
                    if self.req.include_usage:
                        tail = self._base("chat.completion.chunk") | {
                            "choices": [],
                            "usage": self.usage(ev.completion_tokens),
                        }
                        yield b"data: " + orjson.dumps(tail) + b"\n\n"
            yield b"data: [DONE]\n\n"
        except APIError as exc:  # headers are sent: the error travels as an SSE event, like vLLM's
            yield b"data: " + exc.to_bytes() + b"\n\n"
            yield b"data: [DONE]\n\n"
        finally:
            self.gen.cancel()  # a client that went away stops its row at the next step
