from __future__ import annotations

import argparse

from frugalserve.commands import load_config


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="config file (default: $FRUGALSERVE_CONFIG or the built-in demo)")
    p.add_argument("--host", help="listen address (overrides gateway.host)")
    p.add_argument("--port", type=int, help="listen port (overrides gateway.port)")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if config is None:
        return 2
    from frugalserve.server import serve

    return serve(config, host=args.host, port=args.port)
