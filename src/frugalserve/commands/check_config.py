from __future__ import annotations

import argparse
import sys

from frugalserve.commands import gateway_database_problem, load_config, shown_url


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", help="config file (or --config FILE; default: $FRUGALSERVE_CONFIG or the demo)")


def run(args: argparse.Namespace) -> int:
    if args.file and args.config and args.file != args.config:
        print(f"error: two config files given: {args.file} and --config {args.config}", file=sys.stderr)
        return 2
    config = load_config(args.file or args.config)
    if config is None:
        return 2
    problem = gateway_database_problem(config)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if not config.pools:
        print(
            f"{config.source}: ok for `keys` and `report` (database {shown_url(config.gateway.database)});"
            " it declares no pool, so `up` would refuse it (add one under pools:)"
        )
        return 0
    print(f"{config.source}: ok, {len(config.pools)} pool(s): {', '.join(p.name for p in config.pools)}")
    return 0
