"""``frugalserve report``: what the GPUs cost, by day, key, pool or model, from the usage records."""

from __future__ import annotations

import argparse
import sys
import time

from frugalserve.commands import load_config


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--database", metavar="URL", help="database URL (overrides gateway.database)")
    p.add_argument(
        "--since", metavar="D", help="start: 2025-03-01, 2025-03-01T12:00, or 7d / 12h (default: first record)"
    )
    p.add_argument("--until", metavar="D", help="end, same forms (default: now)")
    p.add_argument("--by", choices=("day", "key", "pool", "model"), default="pool")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument("--wide", action="store_true", help="table: every column in one wide table")
    p.add_argument("--anomalies", action="store_true", help="list requests flagged as token-count outliers")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if config is None:
        return 2
    from frugalserve.accounting import report, store

    now = time.time()
    try:
        since = report.parse_when(args.since, now) if args.since else None
        until = report.parse_when(args.until, now) if args.until else now
    except ValueError as exc:
        print(f"error: --since/--until: {exc}", file=sys.stderr)
        return 2
    engine = store.open_store(args.database or config.gateway.database)
    try:
        records, events = report.load(engine, since, until)
        names = report.key_names(engine) if args.by == "key" else None
    finally:
        engine.dispose()
    if args.anomalies:
        sys.stdout.write(report.render(report.anomalies(records), args.format))
        return 0
    rows = report.build(records, events, report.prices_of(config), since, until, args.by, names)
    sys.stdout.write(report.render_report(rows, args.format, args.wide))
    return 0
