from __future__ import annotations

import argparse
import sys

from frugalserve import config as cfg


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="config file (default: $FRUGALSERVE_CONFIG or the built-in demo)")
    p.add_argument("--host", help="listen address (overrides gateway.host)")
    p.add_argument("--port", type=int, help="listen port (overrides gateway.port)")


def run(args: argparse.Namespace) -> int:
    try:
        config = cfg.load(args.config)
    except cfg.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from frugalserve.server import serve

    return serve(config, host=args.host, port=args.port)
