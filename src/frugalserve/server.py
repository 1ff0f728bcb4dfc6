"""Running the gateway: uvicorn (uvloop, httptools) with a two-stage shutdown.

First SIGTERM or SIGINT: stop accepting connections, close idle ones, and let open requests and
streams finish for up to ``gateway.shutdown_grace_s``. A second signal of either kind: exit now.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from types import FrameType

import uvicorn

from frugalserve.config import Config

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
                    asyncio.get_running_loop().call_soon_threadsafe(gateway.accounting.on_forced_exit)
                except RuntimeError:  # no loop running (yet or any more)
                    gateway.accounting.on_forced_exit()
            return
        log.warning(
            "%s: no longer accepting; letting open requests finish (up to %gs). Send it again to force.",
            signal.Signals(sig).name,
            self.config.timeout_graceful_shutdown or 0,
        )
        self.should_exit = True


def uvicorn_config(config: Config, host: str | None = None, port: int | None = None) -> uvicorn.Config:
    from frugalserve.api.app import create_app

    gw = config.gateway
    loop = "uvloop" if sys.platform != "win32" else "asyncio"
    return uvicorn.Config(
        create_app(config),
        host=host or gw.host,
        port=port or gw.port,
        loop=loop,
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level=gw.log_level,
        timeout_graceful_shutdown=int(gw.shutdown_grace_s) if gw.shutdown_grace_s else None,
        timeout_keep_alive=75,
        backlog=4096,
    )


def serve(config: Config, host: str | None = None, port: int | None = None) -> int:
    logging.basicConfig(
        level=config.gateway.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The usage writer works in a thread; give the event loop the GIL back within 1 ms instead of Python's
    # default 5 ms, which otherwise shows up as 5 ms stalls in the request path's p99.
    sys.setswitchinterval(0.001)
    server = GatewayServer(uvicorn_config(config, host, port))
    listen_host = host or config.gateway.host
    log.info(
        "frugalserve gateway on http://%s:%d (config: %s)", listen_host, port or config.gateway.port, config.source
    )
    for pool in config.pools:
        where = pool.backend.url or f"managed: {pool.backend.command}"
        aliases = f" (aliases {', '.join(pool.aliases)})" if pool.aliases else ""
        log.info("pool %s: model %s%s -> %s", pool.name, pool.model, aliases, where)
    server.run()
    return 0 if server.started else 1
