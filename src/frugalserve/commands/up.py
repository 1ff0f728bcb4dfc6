from __future__ import annotations

import argparse
import sys

from frugalserve.commands import load_config


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
    from frugalserve.server import serve

    return serve(config, host=args.host, port=args.port)
