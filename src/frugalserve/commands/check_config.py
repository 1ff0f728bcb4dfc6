from __future__ import annotations

import argparse

from frugalserve.commands import load_config


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", help="config file (default: $FRUGALSERVE_CONFIG or the built-in demo)")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    if config is None:
        return 2
    print(f"{config.source}: ok, {len(config.pools)} pool(s): {', '.join(p.name for p in config.pools)}")
    return 0
