"""``frugalserve report``: what the GPUs cost, by day, hour, key, pool or model, from the usage records."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time

from frugalserve.commands import database_origin, load_config, open_database, shown_url

WHEN_HELP = "2025-03-01, 2025-03-01T12:00 (UTC), 7d / 12h / 30m ago, today, yesterday, month (the 1st) or now"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--database", metavar="URL", help="database URL (overrides gateway.database)")
    p.add_argument("--since", metavar="WHEN", help=f"start: {WHEN_HELP} (default: the first record)")
    p.add_argument("--until", metavar="WHEN", help="end, same forms (default: now)")
    p.add_argument(
        "--by",
        choices=("day", "hour", "key", "pool", "model"),
        default="pool",
        help="one row per UTC day or hour, API key (by name), pool or model, then the TOTAL (default: pool)",
    )
    p.add_argument(
        "--format",
        choices=("table", "csv", "json"),
        default="table",
        help="table: columns in groups that fit 100 columns, with a legend; csv / json: every column, full names,"
        " raw numbers (default: table)",
    )
    p.add_argument("--wide", action="store_true", help="table: every column in one wide table")
    p.add_argument("--anomalies", action="store_true", help="list requests flagged as token-count outliers")


def _utc(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if config is None:
        return 2
    from frugalserve.accounting import report

    now = time.time()
    try:
        since = report.parse_when(args.since, now) if args.since else None
        until = report.parse_when(args.until, now) if args.until else now
    except ValueError as exc:
        print(f"error: --since/--until: {exc}", file=sys.stderr)
        return 2
    if since is not None and since >= until:
        print(f"error: --since ({_utc(since)} UTC) is not before --until ({_utc(until)} UTC)", file=sys.stderr)
        return 2
    url, origin = database_origin(args.database, config)
    engine = open_database(url, origin, create=False)
    if engine is None:
        return 2
    try:
        records, events = report.load(engine, since, until)
        scales = report.load_scale_events(engine, since, until)
        names = report.key_names(engine) if args.by == "key" else None
    finally:
        engine.dispose()
    first = min([r["time"] for r in records] + [e["time"] for e in events + scales], default=None)
    start = since if since is not None else first
    window = f"{_utc(start)} to {_utc(until)} UTC" if start is not None else f"no records before {_utc(until)} UTC"
    # Where the numbers come from, on stderr: the terminal shows it, and stdout stays data in every format.
    print(f"# database: {shown_url(url)}\n# window: {window}, {len(records)} request(s)", file=sys.stderr)
    if args.anomalies:
        flagged = report.anomalies(records)
        if not flagged and args.format == "table":
            print("no requests flagged as token-count outliers in this window")
            return 0
        sys.stdout.write(report.render(flagged, args.format))
        return 0
    rows = report.build(records, events, report.prices_of(config), since, until, args.by, names, scales)
    sys.stdout.write(report.render_report(rows, args.format, args.wide, args.by))
    return 0
