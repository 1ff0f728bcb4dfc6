from __future__ import annotations

import argparse
import sys

from frugalserve import config as cfg


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", help="config file (default: $FRUGALSERVE_CONFIG or the built-in demo)")


def run(args: argparse.Namespace) -> int:
    try:
        config = cfg.load(args.file)
    except cfg.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{config.source}: ok, {len(config.pools)} pool(s): {', '.join(p.name for p in config.pools)}")
    return 0
