from __future__ import annotations

import argparse
import atexit
import importlib.util
import os
import sys

from frugalserve.commands import gateway_database_problem, load_config


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="listen address (overrides gateway.host)")
    p.add_argument("--port", type=int, help="listen port (overrides gateway.port)")


def run(args: argparse.Namespace) -> int:
    if args.port is not None and not 0 < args.port < 65536:
        print("error: --port must be between 1 and 65535", file=sys.stderr)
        return 2
    config = load_config(args.config)
    if config is None:
        return 2
    if not config.pools:
        print(f"error: pools: {config.source} declares no pool, so the gateway would serve nothing", file=sys.stderr)
        return 2
    problem = gateway_database_problem(config)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if config.tracing.enabled:
        from frugalserve.tracing import otel_problem

        missing = otel_problem()
        if missing is not None:
            print(f"error: tracing.enabled: {missing}", file=sys.stderr)
            return 2
    ray_pools = [i for i, p in enumerate(config.pools) if p.backend.ray is not None]
    if ray_pools and importlib.util.find_spec("ray") is None:
        from frugalserve.lifecycle.provisioners.ray import INSTALL_HINT

        print(f"error: pools[{ray_pools[0]}].{INSTALL_HINT}", file=sys.stderr)
        return 2
    from frugalserve.server import serve

    code = serve(config, host=args.host, port=args.port)
    # The gateway has stopped: requests answered or cancelled, records written, connections closed. Tearing
    # the interpreter's objects down one by one would still take about a second, which a process manager
    # counts against the shutdown grace; run the atexit handlers (logging's flush among them) and go.
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
