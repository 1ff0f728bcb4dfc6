"""The admin API of managed pools.

    GET  /admin/pools                    every pool: replicas' state, since when, in flight, queue, last cold start
    POST /admin/pools/{name}/wake        start or wake it now (?wait=true: answer once it is ready)
    POST /admin/pools/{name}/sleep       drain, then sleep it (?stop=true: stop the process instead)

:func:`authorize` is the single gate in front of every admin route (the admin-key check goes there).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from frugalserve.errors import APIError, NotFound, error_response
from frugalserve.pools import Pool, PoolSet

Handler = Callable[[Request], Awaitable[Response]]


async def authorize(request: Request) -> None:
    """Raise an APIError (401/403) when ``request`` may not use the admin API. Open for now."""


def _json(obj: object, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in ("1", "true", "yes")


def routes(pools: PoolSet) -> list[BaseRoute]:
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

    def guarded(handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                await authorize(request)
                return await handler(request)
            except APIError as exc:
                return error_response(exc)

        return endpoint

    return [
        Route("/admin/pools", guarded(list_pools), methods=["GET"]),
        Route("/admin/pools/{name}/wake", guarded(wake), methods=["POST"]),
        Route("/admin/pools/{name}/sleep", guarded(sleep), methods=["POST"]),
    ]
