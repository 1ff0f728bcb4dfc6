"""The admin API, behind one gate.

    GET  /admin/pools                    every pool: replicas' state, since when, in flight, queue, last cold start
    POST /admin/pools/{name}/wake        start or wake it now (?wait=true: answer once it is ready)
    POST /admin/pools/{name}/sleep       drain, then sleep it (?stop=true: stop the process instead)
    GET  /admin/usage                    the cost report as JSON (see docs/accounting.md)
    GET  /admin/events                   replica and autoscaler events, newest first (?pool=NAME&limit=N)

Every route lives under one :class:`~starlette.routing.Mount` whose app is :class:`AdminGate`, so a route
added here cannot be reached without the admin key (when auth is on): the gate runs before routing, for
unknown admin paths too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Protocol

import orjson
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.types import Receive, Scope, Send

from frugalserve.errors import InvalidRequest, NotFound
from frugalserve.events import Event, ScaleEvent
from frugalserve.pools import Pool, PoolSet

Handler = Callable[[Request], Awaitable[Response]]
# The newest events (of one pool, or of all when None), at most ``limit``: Accounting.newest_events.
EventSource = Callable[[str | None, int], Awaitable[list[Event]]]
EVENTS_LIMIT = 50  # by default
EVENTS_LIMIT_MAX = 1000


class AdminCheck(Protocol):
    def check_admin(self, authorization: str | None) -> None:
        """Raise AuthenticationFailed unless ``authorization`` carries the admin key (or auth is off)."""


class AdminGate:
    """ASGI app in front of every admin route."""

    def __init__(self, app: Router, check: AdminCheck) -> None:
        self.app = app
        self.check = check

    @property
    def routes(self) -> list[BaseRoute]:
        """What Starlette's Mount lists (url_for, route walks in tests)."""
        return self.app.routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.check.check_admin(Headers(scope=scope).get("authorization"))
        await self.app(scope, receive, send)


def _json(obj: object, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in ("1", "true", "yes")


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return EVENTS_LIMIT
    if not (len(raw) <= 4 and raw.isascii() and raw.isdigit() and 1 <= int(raw) <= EVENTS_LIMIT_MAX):
        raise InvalidRequest(f"limit must be an integer from 1 to {EVENTS_LIMIT_MAX}.", param="limit")
    return int(raw)


def event_json(event: Event) -> dict[str, object]:
    return {"type": "scale" if isinstance(event, ScaleEvent) else "replica", **dataclasses.asdict(event)}


def mount(check: AdminCheck, pools: PoolSet, usage: Handler, events: EventSource) -> Mount:
    def pool_named(request: Request) -> Pool:
        name = request.path_params["name"]
        pool = pools.pools.get(name)
        if pool is None:
            raise NotFound(f"No pool named {name!r}.", param="name", code="pool_not_found")
        return pool

    async def list_pools(request: Request) -> Response:
        return _json({"object": "list", "data": [p.describe() for p in pools]})

    async def wake(request: Request) -> Response:
        pool = pool_named(request)
        wait = _flag(request, "wait")
        await pool.wake("admin", wait=wait)
        return _json(pool.describe(), 200 if wait else 202)

    async def sleep(request: Request) -> Response:
        pool = pool_named(request)
        result = await pool.sleep("admin", stop=_flag(request, "stop"))
        return _json({**pool.describe(), "result": result})

    async def list_events(request: Request) -> Response:
        pool = request.query_params.get("pool")
        if pool is not None and pool not in pools.pools:
            raise NotFound(f"No pool named {pool!r}.", param="pool", code="pool_not_found")
        found = await events(pool, _limit(request))
        return _json({"object": "list", "data": [event_json(e) for e in found]})

    router = Router(
        [
            Route("/pools", list_pools, methods=["GET"]),
            Route("/pools/{name}/wake", wake, methods=["POST"]),
            Route("/pools/{name}/sleep", sleep, methods=["POST"]),
            Route("/usage", usage, methods=["GET"]),
            Route("/events", list_events, methods=["GET"]),
        ]
    )
    return Mount("/admin", app=AdminGate(router, check), name="admin")
