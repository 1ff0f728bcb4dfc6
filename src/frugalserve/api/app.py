"""The gateway's ASGI application: ``create_app(config)`` builds and wires everything.

Request path of an OpenAI call (each stage raises an :class:`~frugalserve.errors.APIError`, which
becomes OpenAI's error JSON in :mod:`frugalserve.api.boundary`, the one place errors are mapped):

    admit:    authenticate → read body (size limit) → parse JSON → validate parameters → find the pool
              → authorize (model, budget, rate) → validate messages for that pool
              → prepare (count exactly, resize images, cap)                               → a Call
    dispatch: hold while cold (api/holding.py) → lease a ready replica
    forward:  send upstream (api/proxy.py) → respond, streaming or whole
    record:   api/recording.py finishes the record once, whatever happened, and hands it to accounting
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
import yaml
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from frugalserve import qwen_vocab
from frugalserve.accounting.auth import bearer_matches
from frugalserve.accounting.keys import ApiKey
from frugalserve.accounting.service import Accounting
from frugalserve.api import admin, admission, requests
from frugalserve.api.admission import AUTO, Counted, Counting
from frugalserve.api.boundary import REQUEST_ID_HEADER, Boundary, request_id, starlette_handler
from frugalserve.api.call import Call, Retarget
from frugalserve.api.holding import HeldStreamResponse
from frugalserve.api.proxy import (
    ClientGone,
    StreamingProxyResponse,
    Usage,
    failure_kind,
    is_event_stream,
    read_answer,
    send_upstream,
    sse_headers,
)
from frugalserve.api.recording import Recorder
from frugalserve.api.router import ROUTE_HEADER, Router, routing_headers
from frugalserve.api.worker import BodyWorkers
from frugalserve.budget.fetch import Fetcher
from frugalserve.budget.images import PreprocessCache
from frugalserve.budget.prepare import Prepared
from frugalserve.clock import Clock, SystemClock
from frugalserve.config import Config
from frugalserve.errors import APIError, AuthenticationFailed, NotFound, PayloadTooLarge, UpstreamError, UpstreamTimeout
from frugalserve.events import Event, EventSink, FanoutEvents, RecentEvents
from frugalserve.lifecycle.metrics import LifecycleMetrics
from frugalserve.lifecycle.pool import build_pools, ray_cluster
from frugalserve.lifecycle.scaler import ScaleSignals
from frugalserve.metrics import GatewayMetrics
from frugalserve.metrics.budgets import BudgetsCollector
from frugalserve.metrics.cost import CostMeter
from frugalserve.metrics.gpu import GpuCollector, GpuReader, GpuTelemetry, NvmlReader
from frugalserve.metrics.pools import PoolsCollector
from frugalserve.metrics.upstream import UpstreamCollector, UpstreamTelemetry
from frugalserve.pools import Lease, Pool, PoolSet
from frugalserve.records import RecentRecords, RecordSink, RequestRecord
from frugalserve.routing import policy
from frugalserve.routing.cascade import escalation_reason
from frugalserve.routing.features import Features
from frugalserve.tracing import Tracing
from frugalserve.upstream import Body, HttpUpstream, Timeouts, Upstream, UpstreamResponse

log = logging.getLogger("frugalserve.gateway")

POOL_HEADER = "x-frugalserve-pool"
# What the gateway changed in the request (e.g. "max_tokens clamped from 4096 to 512").
NOTES_HEADER = "x-frugalserve-notes"
# Non-streaming upstream bodies are read whole to capture usage; bound them.
MAX_UPSTREAM_BODY = 256 * 1024 * 1024
_OPENAPI = Path(__file__).parent / "openapi.yaml"


class Gateway:
    """Everything one gateway process owns; built by :func:`create_app`, no globals."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        pools: list[Pool] | None = None,
        upstream_factory: Callable[[], Upstream] | None = None,
        sink: RecordSink | None = None,
        events: EventSink | None = None,
        span_exporter: Any = None,  # an opentelemetry SpanExporter instead of OTLP/HTTP (tests)
        gpu_reader: GpuReader | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.metrics = GatewayMetrics()
        self.records = RecentRecords()
        # Usage records, replica events, API keys, budgets, rates.
        self.accounting = Accounting(config, self.clock, self.metrics.registry, self.records)
        # Replica transitions go to the database (accounting) and stay in memory for the admin API.
        self.recent_events = RecentEvents()
        self.events: EventSink = FanoutEvents(
            [self.recent_events, self.accounting.events, *([events] if events is not None else [])]
        )
        self.lifecycle_metrics = LifecycleMetrics(self.metrics.registry, CostMeter(self.clock))
        # What the autoscalers read (the telemetry below); Ray, when a pool runs its replicas there.
        self.scale_signals = ScaleSignals()
        self.ray = ray_cluster(config)
        if pools is None:
            arrivals = self.accounting.arrivals_reader()  # predictive prewarm learns from the usage records
            pools = build_pools(
                config, self.clock, self.events, self.lifecycle_metrics, self.scale_signals, arrivals, self.ray
            )
        self.pools = PoolSet(pools)
        # Each ready replica's own /metrics, scraped on an interval: re-exported, and read by routing.
        self.telemetry = UpstreamTelemetry(self.pools, config.gateway.upstream_metrics_interval_s, self.clock)
        self.scale_signals.upstream = self.telemetry
        if self.telemetry.enabled:
            self.metrics.registry.register(UpstreamCollector(self.telemetry))
        self.router = Router(config, self.pools, self.clock, self.metrics.registry, self.telemetry)
        self.metrics.registry.register(PoolsCollector(config, self.pools, self.clock))
        self.metrics.registry.register(BudgetsCollector(self.accounting.gate))
        # NVML read on an interval off the event loop; the latest samples exported at scrape time.
        self.gpus = GpuTelemetry(
            gpu_reader or NvmlReader(), config.pools, config.gateway.gpu_metrics_interval_s, self.clock
        )
        self.metrics.registry.register(GpuCollector(self.gpus))
        self.scale_signals.gpus = self.gpus
        self.sink: RecordSink = sink or self.accounting
        self.recorder = Recorder(self.clock, self.metrics, self.sink)
        # None when off: the request path then checks ``record.trace is None`` and nothing else (tracing.py).
        self.tracing = Tracing(config.tracing, self.clock, span_exporter) if config.tracing.enabled else None
        gw = config.gateway
        self._upstream_factory = upstream_factory or (
            lambda: HttpUpstream(Timeouts(connect_s=gw.connect_timeout_s, read_s=gw.request_timeout_s))
        )
        self.upstream: Upstream | None = None
        self.max_body = int(gw.max_body_mb * 1024 * 1024)
        self.image_cache = PreprocessCache(gw.image_cache_mb)
        self.fetchers: dict[str, Fetcher] = {}
        # Bodies larger than this are parsed, counted and encoded in a worker process (api/worker.py).
        self.large_body = int(gw.large_body_mb * 1024 * 1024)
        self.body_workers: BodyWorkers | None = None
        self._openapi: bytes | None = None  # rendered on first request

    # -- lifespan ------------------------------------------------------------------------------------

    async def startup(self) -> None:
        if any(p.config.tokenizer != "none" for p in self.pools):
            # ~0.3-0.4 s with the GIL held: before the first request, not in the middle of serving one
            await asyncio.to_thread(qwen_vocab.encoding)
        self.upstream = self._upstream_factory()
        self.fetchers = {p.name: Fetcher(p.config.limits.fetch) for p in self.pools}
        gw = self.config.gateway
        if gw.large_body_workers:
            counts = any(p.config.tokenizer != "none" for p in self.pools)
            self.body_workers = BodyWorkers(gw.large_body_workers, gw.image_cache_mb, counts)
        await self.accounting.start()
        for pool in self.pools:
            await pool.start()
        self.gpus.start()
        self.telemetry.start()

    async def shutdown(self) -> None:
        await self.gpus.stop()
        await self.telemetry.stop()
        for pool in self.pools:
            await pool.stop()
        if self.ray is not None:
            await self.ray.shutdown()
        if self.upstream is not None:
            await self.upstream.aclose()
        for fetcher in self.fetchers.values():
            await fetcher.close()
        if self.body_workers is not None:
            await self.body_workers.aclose()
        await self.accounting.stop()  # after the pools: their last events and every record are written
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)  # flushes the last batch (a blocking export)

    def on_forced_exit(self) -> None:
        """A second SIGTERM: open requests will not finish and shutdown will not run; write what is in memory."""
        self.accounting.on_forced_exit()

    # -- the OpenAI endpoints ----------------------------------------------------------------------

    def endpoint(self, kind: str, path: str) -> _Endpoint:
        """An ASGI endpoint for one OpenAI route."""
        return _Endpoint(self, kind, path)

    async def serve(self, kind: str, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one OpenAI request. Its record is finished exactly once, whatever happens; errors are
        re-raised for :mod:`~frugalserve.api.boundary` to answer."""
        request = Request(scope, receive)
        record = RequestRecord(request_id(request), kind, "", self.clock.wall(), self.clock.monotonic())
        if self.tracing is not None:
            record.trace = self.tracing.begin(record, request.headers)
        try:
            call = await self._admit(request, kind, path, record)
            response = await self._dispatch(call)
        except ClientGone:
            self.recorder.gone(record)
            return
        except APIError as exc:
            self.recorder.finish(record, exc.status, None, exc)
            if record.pool:
                exc.headers.setdefault(POOL_HEADER, record.pool)
            raise
        except BaseException:  # a bug, or a panic in a native library: still one record, counters released
            self.recorder.finish(record, 500, None, None)
            raise
        await response(scope, receive, send)

    # -- the stages, in order ----------------------------------------------------------------------

    async def _read_body(self, request: Request) -> list[bytes]:
        """The body in the pieces it arrived in (a large one goes to a worker without being joined here)."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise PayloadTooLarge(self._too_large_message())
        parts: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > self.max_body:
                    raise PayloadTooLarge(self._too_large_message())
                parts.append(chunk)
        except ClientDisconnect:
            raise ClientGone() from None
        return parts

    def _too_large_message(self) -> str:
        return f"The request body is larger than the limit of {self.config.gateway.max_body_mb:g} MB."

    async def _admit(self, request: Request, kind: str, path: str, record: RequestRecord) -> Call:
        """Authenticate, read and check the body, authorize the key, count and cap the prompt, route ``auto``."""
        if record.trace is not None:
            record.trace.stage("budget")
        # Who is asking comes first: without a valid key, a caller learns nothing (not even which models exist).
        key = await self.accounting.gate.authenticate(request.headers.get("authorization"))
        pieces = await self._read_body(request)
        default = key.default_model if key is not None else None
        prepared: Prepared | None
        retarget: Retarget | None = None
        if self.body_workers is not None and sum(map(len, pieces)) > self.large_body:
            async with self.body_workers.exchange() as worker:
                model = await worker.parse(kind, pieces, default)
                del pieces
                pinned, how = self._authorize(record, key, model, request.headers)
                counted = await worker.count(how)
                pool, route = self._route(record, key, pinned, counted)
                prepared, body = await worker.encode(pool.config, pinned is None)
        else:
            data, model = admission.parse(kind, b"".join(pieces), default)
            if record.trace is not None:
                record.trace.request(data)
            pinned, how = self._authorize(record, key, model, request.headers)
            fetcher = self.fetchers[pinned.name if pinned is not None else self.router.fetch_pool or ""]
            counted = await admission.count(kind, data, how, fetcher, self.image_cache)
            pool, route = self._route(record, key, pinned, counted)
            if pinned is None:
                retarget = admission.Retargeting(kind, data, counted.prepared)
            prepared, body = admission.encode_for(kind, data, pool.config, counted.prepared, pinned is None)
        record.stream = counted.stream
        if prepared is not None:
            self._count(pool, prepared, record)
        call = Call(request, record, pool, path, body, counted.stream, counted.client_wants_usage, prepared, route)
        call.affinity = counted.affinity
        if pinned is None:
            call.key, call.features, call.retarget = key, counted.features, retarget
        return call

    def _authorize(
        self, record: RequestRecord, key: ApiKey | None, model: str, headers: Mapping[str, str]
    ) -> tuple[Pool | None, Counting]:
        """The pool a named model pins (None for ``auto``), once the key may use it; and how to count."""
        record.model = model
        if model == AUTO:
            how = self.router.counting(headers)
            self.accounting.authorize(key, record)
            return None, how
        pool = self.pools.resolve(model)
        self._enter(record, pool)
        self.accounting.authorize(key, record)
        several = routing_headers(headers) if len(pool.config.backend.urls) > 1 else None
        return pool, Counting(pool.config.limits, pool.config.tokenizer != "none", affinity_headers=several)

    def _enter(self, record: RequestRecord, pool: Pool) -> None:
        record.pool = pool.name
        self.recorder.admitted(record)
        self.accounting.enter(record)

    def _route(
        self, record: RequestRecord, key: ApiKey | None, pinned: Pool | None, counted: Counted
    ) -> tuple[Pool, policy.Route]:
        """The pinned pool explained, or the router's choice for ``auto`` (now in flight on it)."""
        if record.trace is not None:
            record.trace.stage("routing")
        if pinned is None:
            assert counted.features is not None, "auto is counted with features"
            route = self.router.route(counted.features, key, counted.stream)
            pool = self.pools.pools[route.pool]
            self._enter(record, pool)
        else:
            pool, route = pinned, self.router.pinned(pinned)
        record.tier = route.tier if pool.config.tier is not None else None
        record.routing_reason = route.detail
        return pool, route

    async def _dispatch(self, call: Call) -> ASGIApp:
        """Hold while the pool is cold (streams get their headers and keep-alives at once), then forward."""
        if call.record.trace is not None:
            call.record.trace.stage("holding")
        if call.stream and not call.pool.is_ready():
            return HeldStreamResponse(call, self._forward, self.recorder, self.clock, _answer_headers(call))
        return await self._forward(call, await call.pool.acquire(call.affinity))

    def _count(self, pool: Pool, prepared: Prepared, record: RequestRecord) -> None:
        """What the budget stage counted, into the record and /metrics."""
        prepared.fill(record)  # the record's counts feed /metrics when the request ends (api/recording.py)
        m = self.metrics
        if prepared.max_tokens_clamped:
            m.max_tokens_clamped.labels(pool.name).inc()

    async def _forward(self, call: Call, lease: Lease) -> ASGIApp:
        """Send the call to the leased replica; the lease is released when the response ends.

        A call whose replica cannot be reached, or times out before answering, is tried once more on another
        replica of its pool, and an ``auto`` call then goes to the next eligible pool (routing/retry.py);
        nothing has reached the client yet, so nothing is sent twice."""
        failed: list[str] = []  # pools
        failed_replicas: list[str] = []
        retried = False  # on another replica of the same pool, once
        while True:
            record = call.record
            try:
                target = lease.target
                record.replica = target.replica
                if lease.waited_s:
                    record.cold_start_wait_s = lease.waited_s
                headers = {"content-type": "application/json", REQUEST_ID_HEADER: record.request_id, **target.headers}
                if record.trace is not None:
                    record.trace.upstream(call, target, headers)
                upstream = await self._send(call, target.base_url + call.path, call.body, headers)
            except (UpstreamError, UpstreamTimeout) as exc:
                lease.release()
                failed_replicas.append(target.replica)
                if not retried and call.pool.replicas_besides(failed_replicas):
                    retried = True
                    _note(call, f"{target.replica} failed before answering ({exc.code}): retried on another replica")
                    lease = await call.pool.acquire(call.affinity, exclude=failed_replicas)
                    continue
                failed.append(call.pool.name)
                features = _reroutable(call)
                route = self.router.fallback(features, call.key, failed) if features is not None else None
                if route is None:
                    raise
                self._reroute(call, route, f"{failed[-1]} failed before answering ({exc.code}): sent to {route.pool}")
                retried = False
                lease = await call.pool.acquire(call.affinity)
                continue
            except BaseException:
                lease.release()
                raise
            return await self._respond(call, lease, upstream)

    def _reroute(self, call: Call, route: policy.Route, note: str) -> None:
        """Move ``call`` to ``route``'s pool: its body encoded for that pool, its record and counters moved."""
        assert call.retarget is not None
        pool = self.pools.pools[route.pool]
        prepared, call.body = call.retarget(pool)
        record = call.record
        self.accounting.move(record, pool.name)
        self.recorder.moved(record, call.pool.name)
        call.pool, call.prepared, call.route = pool, prepared, route
        record.tier, record.routing_reason = route.tier, route.detail
        record.replica = record.cold_start_wait_s = None
        if prepared is not None:
            prepared.fill(record)
        _note(call, note)

    async def _escalate(self, call: Call, payload: bytes, usage: Usage | None) -> ASGIApp | None:
        """The cascade: a flagged answer goes to the next tier up, whose answer the client gets; the tokens
        of both calls are recorded together. None: the answer stands (not flagged, or no tier above)."""
        try:
            answer = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        features = _reroutable(call)
        if features is None or not isinstance(answer, dict):
            return None
        flagged = escalation_reason(answer, self.config.routing.cascade)
        if flagged is None:
            return None
        route = self.router.escalate(features, call.key, call.route.tier)
        if route is None:
            return None
        call.carried = _plus(call.carried, usage)
        self._reroute(
            call, route, f"cascade: the answer of {call.pool.name} was flagged ({flagged}): asked {route.pool}"
        )
        return await self._forward(call, await call.pool.acquire(call.affinity))

    async def _send(self, call: Call, url: str, body: Body, headers: dict[str, str]) -> UpstreamResponse:
        assert self.upstream is not None, "gateway not started"
        pool = call.pool.name
        try:
            return await send_upstream(self.upstream, call.request.receive, pool, url, body, headers)
        except UpstreamTimeout:
            self.metrics.upstream_errors.labels(pool, "timeout").inc()
            raise
        except UpstreamError:
            self.metrics.upstream_errors.labels(pool, "connect").inc()
            raise

    async def _respond(self, call: Call, lease: Lease, upstream: UpstreamResponse) -> ASGIApp:
        record, pool, prepared = call.record, call.pool, call.prepared
        out_headers = _answer_headers(call)
        details = prepared.usage_details() if prepared is not None else None
        if lease.waited_s:
            out_headers["x-frugalserve-cold-start-ms"] = str(round(lease.waited_s * 1000))
        if not is_event_stream(upstream, call.stream):
            try:
                payload, usage = await read_answer(
                    call.request.receive, upstream, pool.name, record.request_id, MAX_UPSTREAM_BODY, details
                )
            except APIError as exc:
                kind = failure_kind(exc, upstream.status)
                if kind is not None:
                    self.metrics.upstream_errors.labels(pool.name, kind).inc()
                raise
            finally:
                lease.release()
            if upstream.status == 200 and self.config.routing.cascade.enabled:
                escalated = await self._escalate(call, payload, usage)
                if escalated is not None:
                    return escalated
            self.recorder.first_byte(record)
            self.recorder.finish(record, upstream.status, _plus(call.carried, usage), None)
            return Response(payload, status_code=upstream.status, headers=out_headers, media_type="application/json")
        return StreamingProxyResponse(
            upstream,
            lease,
            sse_headers(out_headers),
            call.client_wants_usage,
            usage_details=details,
            on_first_byte=lambda: self.recorder.first_byte(record),
            on_finish=lambda st, usage, err, gone: self.recorder.finish_stream(record, st, usage, err, gone),
            pool=pool.name,
            request_id=record.request_id,
        )

    # -- plain endpoints ---------------------------------------------------------------------------

    async def _models_for(self, request: Request) -> list[dict[str, Any]]:
        """The models this caller may use (with auth on, a key is needed, as on OpenAI's API)."""
        key = await self.accounting.gate.authenticate(request.headers.get("authorization"))
        models = [
            {"id": name, "object": "model", "created": 0, "owned_by": "frugalserve", "pool": pool.name}
            for pool in self.pools
            for name in (pool.config.model, *pool.config.aliases)
            if key is None or key.allows(name)
        ]
        if self.router.tiered and (key is None or key.allows(AUTO)):
            tiers = [t for t in self.config.routing.tiers if key is None or key.tiers is None or t in key.tiers]
            models.append({"id": AUTO, "object": "model", "created": 0, "owned_by": "frugalserve", "tiers": tiers})
        return models

    async def models(self, request: Request) -> Response:
        data = await self._models_for(request)
        return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")

    async def model(self, request: Request) -> Response:
        name = request.path_params["model"]
        for entry in await self._models_for(request):
            if entry["id"] == name:
                return Response(orjson.dumps(entry), media_type="application/json")
        raise NotFound(f"The model {name!r} does not exist.", param="model", code="model_not_found")

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "pools": [p.name for p in self.pools], "pid": os.getpid()})

    async def openapi(self, request: Request) -> Response:
        if self._openapi is None:
            self._openapi = orjson.dumps(yaml.safe_load(_OPENAPI.read_text()))
        return Response(self._openapi, media_type="application/json")

    async def metrics_endpoint(self, request: Request) -> Response:
        token = self.config.gateway.metrics_token
        if token is not None and not bearer_matches(request.headers.get("authorization"), token):
            raise AuthenticationFailed(
                "/metrics needs 'Authorization: Bearer <gateway.metrics_token>'.",
                code=None if request.headers.get("authorization") else "missing_api_key",
            )
        return Response(await self.metrics.render_off_loop(), media_type=self.metrics.content_type)

    async def admin_usage(self, request: Request) -> Response:
        body = await self.accounting.usage_report(request.query_params)
        return Response(orjson.dumps(body), media_type="application/json")

    async def admin_events(self, pool: str | None, limit: int) -> list[Event]:
        return await self.accounting.newest_events(self.recent_events, pool, limit)


def _note(call: Call, note: str) -> None:
    """Say what the gateway did to the request: in x-frugalserve-notes and the record's notes."""
    if call.prepared is not None:
        call.prepared.notes.append(note)
        call.record.notes = "; ".join(call.prepared.notes)
    else:
        call.record.notes = f"{call.record.notes}; {note}" if call.record.notes else note


def _reroutable(call: Call) -> Features | None:
    """The features of an ``auto`` call whose body can be encoded again for another pool; None otherwise."""
    return call.features if call.retarget is not None else None


def _plus(a: Usage | None, b: Usage | None) -> Usage | None:
    """Token counts of two calls that served one request (the cascade), as one usage."""
    if a is None or b is None:
        return b if a is None else a
    return Usage(
        _add(a.prompt_tokens, b.prompt_tokens), _add(a.completion_tokens, b.completion_tokens), a.note or b.note
    )


def _add(x: int | None, y: int | None) -> int | None:
    return None if x is None or y is None else x + y


def _answer_headers(call: Call) -> dict[str, str]:
    """What every answer from a pool says about itself: the pool, the request id, what the gateway changed."""
    headers = {POOL_HEADER: call.pool.name, REQUEST_ID_HEADER: call.record.request_id, ROUTE_HEADER: call.route.detail}
    if call.prepared is not None and call.prepared.notes:
        headers[NOTES_HEADER] = "; ".join(call.prepared.notes)
    return headers


class _Endpoint:
    """A raw ASGI endpoint (Starlette would wrap a plain function as request -> response)."""

    __slots__ = ("gateway", "kind", "path")

    def __init__(self, gateway: Gateway, kind: str, path: str) -> None:
        self.gateway, self.kind, self.path = gateway, kind, path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.gateway.serve(self.kind, self.path, scope, receive, send)


def create_app(config: Config, **kwargs: Any) -> Starlette:
    """Build the gateway for ``config``. Keyword arguments are handed to :class:`Gateway` (tests)."""
    gateway = Gateway(config, **kwargs)
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.startup()
        try:
            yield
        finally:
            await gateway.shutdown()

    routes = [
        Route("/v1/chat/completions", gateway.endpoint("chat", "/v1/chat/completions"), methods=["POST"]),
        Route("/v1/completions", gateway.endpoint("completions", "/v1/completions"), methods=["POST"]),
        Route("/v1/models", gateway.models, methods=["GET"]),
        Route("/v1/models/{model:path}", gateway.model, methods=["GET"]),
        Route(requests.PATH, requests.endpoint(gateway.accounting), methods=["GET"]),
        Route("/healthz", gateway.healthz, methods=["GET"]),
        Route("/metrics", gateway.metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", gateway.openapi, methods=["GET"]),
        admin.mount(gateway.accounting.gate, gateway.pools, usage=gateway.admin_usage, events=gateway.admin_events),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(Boundary)],
        exception_handlers={APIError: starlette_handler, HTTPException: starlette_handler},
    )
    app.state.gateway = gateway
    if config.ui.enabled:
        from frugalserve import ui  # Gradio loads only here: a gateway with the UI off never pays for it

        ui.mount(app, config)
    return app
