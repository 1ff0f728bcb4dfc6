"""Running the gateway: uvicorn (uvloop, httptools) with a two-stage shutdown.

First SIGTERM or SIGINT: stop accepting connections, close idle ones, and let open requests and
streams finish for up to ``gateway.shutdown_grace_s``. A second signal of either kind: exit now.
Connections are bounded by :mod:`frugalserve.listener`; logs go through one format, access lines
(``gateway.access_log``) through :class:`AccessLog`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
import typing
from types import FrameType
from typing import Any

import uvicorn

from frugalserve.accounting.service import warn_if_open
from frugalserve.config import Config
from frugalserve.listener import ListenerLimits, protocol_class

log = logging.getLogger("frugalserve.server")


class GatewayServer(uvicorn.Server):
    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # uvicorn forces only on a second SIGINT; a second SIGTERM (what process managers send) must too.
        if self.should_exit:
            log.warning("second %s: forcing shutdown", signal.Signals(sig).name)
            self.force_exit = True
            # Open requests will not finish and the app's shutdown will not run: accounting writes their
            # records and its queue now. On the loop, not inside this handler, which may have interrupted
            # the accounting code itself.
            gateway = getattr(getattr(self.config.app, "state", None), "gateway", None)
            if gateway is not None:
                try:
                    asyncio.get_running_loop().call_soon_threadsafe(gateway.on_forced_exit)
                except RuntimeError:  # no loop running (yet or any more)
                    gateway.on_forced_exit()
            return
        log.warning(
            "%s: no longer accepting; letting open requests finish (up to %gs). Send it again to force.",
            signal.Signals(sig).name,
            self.config.timeout_graceful_shutdown or 0,
        )
        self.should_exit = True


class AccessLog:
    """ASGI middleware: one line per HTTP request, logged when its response ends (a stream's last byte)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.log = logging.getLogger("frugalserve.access")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 0
        request_id = "-"
        completed = False

        async def logged_send(message: Any) -> None:
            nonlocal status, request_id, completed
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() == b"x-request-id":
                        request_id = value.decode("latin-1")
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                completed = True
            await send(message)

        try:
            await self.app(scope, receive, logged_send)
        finally:
            client = scope.get("client")
            self.log.info(
                "%s %s %s %.1fms request_id=%s client=%s%s",
                scope["method"],
                scope["path"],
                status or "-",
                (time.perf_counter() - start) * 1000,
                request_id,
                f"{client[0]}:{client[1]}" if client else "-",
                "" if completed else " (response not completed)",
            )


class _MigrationSteps(logging.Filter):
    """Keeps alembic's "Running upgrade ..." lines at info; its set-up chatter only at debug."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or record.getMessage().startswith("Running ")


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # libvips says "threadpool completed" per image at info and traces every call at debug: never ours to show.
    logging.getLogger("pyvips").setLevel(logging.WARNING)
    if level != "debug":
        logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
        migration = logging.getLogger("alembic.runtime.migration")
        if not any(isinstance(f, _MigrationSteps) for f in migration.filters):
            migration.addFilter(_MigrationSteps())


def raise_open_files_limit(needed: int) -> None:
    """Each client connection and each backend request hold a file descriptor; the usual soft limit (1024)
    is below what ``max_connections`` allows. Raise it up to the hard limit, as Go's runtime does."""
    try:
        import resource
    except ImportError:  # Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        log.warning(
            "open files limit is %d, below the %d that gateway.max_connections needs; raise it (ulimit -n)",
            target,
            needed,
        )


def uvicorn_config(config: Config, host: str | None = None, port: int | None = None) -> uvicorn.Config:
    from frugalserve.api.app import create_app

    gw = config.gateway
    app = create_app(config)
    loop = "uvloop" if sys.platform != "win32" else "asyncio"
    return uvicorn.Config(
        AccessLog(app) if gw.access_log else app,
        host=host or gw.host,
        port=port or gw.port,
        loop=loop,
        http=protocol_class(ListenerLimits.of(gw)),
        lifespan="on",
        access_log=False,
        log_config=None,  # the root logger's format (serve()) for uvicorn's lines too
        log_level=gw.log_level,
        # uvicorn annotates int but hands the value to asyncio.wait_for, which takes seconds as a float;
        # 0 means no grace at all (None would wait forever).
        timeout_graceful_shutdown=typing.cast(int, gw.shutdown_grace_s),
        timeout_keep_alive=75,
        backlog=4096,
    )


def serve(config: Config, host: str | None = None, port: int | None = None) -> int:
    configure_logging(config.gateway.log_level)
    # A client connection, a backend connection per request in flight, and a margin for the rest.
    raise_open_files_limit(2 * config.gateway.max_connections + 256)
    # The usage writer works in a thread; give the event loop the GIL back within 1 ms instead of Python's
    # default 5 ms, which otherwise shows up as 5 ms stalls in the request path's p99.
    sys.setswitchinterval(0.001)
    server = GatewayServer(uvicorn_config(config, host, port))
    listen_host = host or config.gateway.host
    log.info(
        "frugalserve gateway on http://%s:%d (config: %s)", listen_host, port or config.gateway.port, config.source
    )
    warn_if_open(config, listen_host)
    for pool in config.pools:
        where = ", ".join(pool.backend.static_urls) or f"managed: {pool.backend.command}"
        aliases = f" (aliases {', '.join(pool.aliases)})" if pool.aliases else ""
        log.info("pool %s: model %s%s -> %s", pool.name, pool.model, aliases, where)
    server.run()
    return 0 if server.started else 1
