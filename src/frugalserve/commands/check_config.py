from __future__ import annotations

import argparse
import sys

from frugalserve.commands import load_config


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", help="config file (or --config FILE; default: $FRUGALSERVE_CONFIG or the demo)")


def run(args: argparse.Namespace) -> int:
    if args.file and args.config and args.file != args.config:
        print(f"error: two config files given: {args.file} and --config {args.config}", file=sys.stderr)
        return 2
    config = load_config(args.file or args.config)
    if config is None:
        return 2
    print(f"{config.source}: ok, {len(config.pools)} pool(s): {', '.join(p.name for p in config.pools)}")
    return 0
