"""The engine's HTTP face: vLLM's contract (OpenAI chat and text completions, /health, /v1/models, /metrics
and the sleep-mode routes) over a :class:`Scheduler`.

``create_engine_app(EngineSettings(...))`` builds everything; the model loads during the app's startup,
so ``/health`` answers only once the engine can serve. Every error leaves through ``error_response``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from collections.abc import AsyncIterator, Callable
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

from frugalserve.budget.fetch import Fetcher
from frugalserve.budget.limits import FetchLimits
from frugalserve.engine.batching import Generation, Scheduler
from frugalserve.engine.images import load_images
from frugalserve.engine.metrics import EngineMetrics
from frugalserve.engine.model import Prepared
from frugalserve.engine.requests import Sampling, parse_chat_request, parse_completion_request
from frugalserve.engine.responses import ChatReply, CompletionReply, Reply
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
    # Image URLs: off by default (the gateway sends images inline); when on, the gateway's guards apply.
    allow_remote_images: bool = False
    image_fetch_allow_hosts: tuple[str, ...] = ()
    max_image_mb: float = 20.0
    image_fetch_timeout_s: float = 10.0
    image_max_redirects: int = 3

    @property
    def name(self) -> str:
        return self.served_model_name or self.model.name

    def fetch_limits(self) -> FetchLimits:
        return FetchLimits(
            timeout_s=self.image_fetch_timeout_s,
            max_bytes=int(self.max_image_mb * 1024 * 1024),
            max_redirects=self.image_max_redirects,
            allow_hosts=self.image_fetch_allow_hosts,
            allow_http=self.allow_remote_images,
        )


# Builds the model runner (in the model thread); tests pass one that forces the model's output.
RunnerFactory = Callable[..., Any]


class Engine:
    """What the routes share: the runner, the scheduler and the image fetcher."""

    def __init__(self, settings: EngineSettings, runner_factory: RunnerFactory | None = None) -> None:
        self.settings = settings
        self.metrics = EngineMetrics(settings.name)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self.runner: Any = None
        self.scheduler: Scheduler | None = None
        self._fetcher: Fetcher | None = None  # its resolver needs the running loop: made in start()
        self.runner_factory = runner_factory
        self.created = int(time.time())

    async def start(self) -> None:
        from frugalserve.engine.model import ModelRunner

        self._fetcher = Fetcher(self.settings.fetch_limits())
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download: the model is a local directory
        s = self.settings
        factory = self.runner_factory or ModelRunner
        loop = asyncio.get_running_loop()
        self.runner = await loop.run_in_executor(
            self.executor,
            lambda: factory(
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

    async def stop(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self._fetcher is not None:
            await self._fetcher.close()
        self.executor.shutdown(wait=False, cancel_futures=True)

    @property
    def sched(self) -> Scheduler:
        assert self.scheduler is not None
        return self.scheduler

    @property
    def fetcher(self) -> Fetcher:
        assert self._fetcher is not None
        return self._fetcher


def create_engine_app(settings: EngineSettings, runner_factory: RunnerFactory | None = None) -> Starlette:
    engine = Engine(settings, runner_factory)

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
        Route("/v1/completions", functools.partial(completions, engine), methods=["POST"]),
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


# -- chat and text completions ----------------------------------------------------------------------------
async def _json(request: Request) -> Any:
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise InvalidRequest("the request body is not valid JSON") from None


def _check_model(engine: Engine, model: str | None) -> None:
    if model is not None and model != engine.settings.name:
        raise NotFound(
            f"the model '{model}' does not exist; this engine serves '{engine.settings.name}'",
            param="model",
            code="model_not_found",
        )


async def chat(engine: Engine, request: Request) -> Response:
    body = await _json(request)
    runner = engine.runner
    req = parse_chat_request(body, default_max_tokens=engine.settings.default_max_tokens, vision=runner.is_vision)
    _check_model(engine, req.model)
    engine.sched.ensure_accepting()  # fail fast, before the image work, when asleep
    await load_images(req, engine.fetcher)
    prepared = await asyncio.to_thread(runner.prepare, req.messages, req.images, req.tools)
    reply = ChatReply(
        _submit(engine, prepared, req.sampling),
        model=engine.settings.name,
        fingerprint=_fingerprint(engine),
        include_usage=req.include_usage,
        parse_tool_calls=req.parse_tool_calls,
    )
    return await _respond(reply, req.stream)


async def completions(engine: Engine, request: Request) -> Response:
    body = await _json(request)
    runner = engine.runner
    req = parse_completion_request(body, vocab_size=runner.vocab_size)
    _check_model(engine, req.model)
    engine.sched.ensure_accepting()
    prepared = await asyncio.to_thread(runner.prepare_prompt, req.prompt)
    reply = CompletionReply(
        _submit(engine, prepared, req.sampling),
        model=engine.settings.name,
        fingerprint=_fingerprint(engine),
        include_usage=req.include_usage,
    )
    return await _respond(reply, req.stream)


def _submit(engine: Engine, prepared: Prepared, sampling: Sampling) -> Generation:
    total = len(prepared.input_ids) + sampling.max_tokens
    limit = engine.runner.max_context
    if total > limit:
        raise ContextLengthExceeded(
            f"this model's maximum context length is {limit} tokens; the prompt has "
            f"{len(prepared.input_ids)} and {sampling.max_tokens_param} asks for {sampling.max_tokens} more",
            param=sampling.max_tokens_param,
        )
    return engine.sched.submit(prepared, sampling)


def _fingerprint(engine: Engine) -> str:
    return "frugalserve-demo" if engine.runner.is_demo else "frugalserve"


async def _respond(reply: Reply, stream: bool) -> Response:
    if stream:
        return StreamingResponse(
            reply.sse(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return await reply.whole()
