"""``frugalserve keys create|list|revoke``: API keys in the gateway's database."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import textwrap
import time
from typing import TYPE_CHECKING

import orjson

from frugalserve.commands import database_origin, load_config, open_database, shown_url
from frugalserve.config import Config

if TYPE_CHECKING:
    from frugalserve.accounting.keys import ApiKey


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--database", metavar="URL", help="database URL (overrides gateway.database)")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = sub.add_parser("create", help="create a key and print its secret (shown only this once)")
    c.add_argument("--name", required=True)
    c.add_argument("--budget-usd-per-day", type=float, metavar="X")
    c.add_argument("--budget-usd-per-month", type=float, metavar="X")
    c.add_argument("--rpm", type=int, metavar="N", help="requests per minute")
    c.add_argument("--tpm", type=int, metavar="N", help="tokens per minute")
    c.add_argument("--models", metavar="A,B", help="models this key may use (default: all)")
    c.add_argument("--default-model", metavar="NAME", help="model for requests that name none (e.g. auto)")
    c.add_argument("--tiers", metavar="S,M", help="tiers model auto may route this key to (default: all)")
    c.add_argument("--json", action="store_true", help="print the key as JSON")
    ls = sub.add_parser("list", help="list keys (never their secrets; a key's id is the part of its secret after fs_)")
    ls.add_argument("--json", action="store_true", help="every field, times as epoch seconds")
    r = sub.add_parser("revoke", help="revoke a key by id, or every active key with this name")
    r.add_argument("key", help="key id or name")


LIST_WIDTH = 100  # the table fits a 100-column terminal; --json has every field whole
NAME_WIDTH = 15  # with the widest budgets and limits, a long allow-list still gets its own lines


def _day(t: float | None) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d") if t else "-"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "~"


def _count(n: int | None) -> str:
    return f"{n:,}" if n is not None else "-"


def list_table(rows: list[ApiKey]) -> list[str]:
    """One line per key; the id is also the middle of the key's secret (``fs_<id>_...``)."""
    from frugalserve.accounting.keys import format_usd

    headers = ["id", "name", "created", "revoked", "usd/day", "usd/month", "rpm", "tpm", "models"]
    cells = [
        [
            k.id,
            _cut(k.name, NAME_WIDTH),
            _day(k.created_at),
            _day(k.revoked_at),
            format_usd(k.budget_usd_per_day) if k.budget_usd_per_day is not None else "-",
            format_usd(k.budget_usd_per_month) if k.budget_usd_per_month is not None else "-",
            _count(k.rpm),
            _count(k.tpm),
            ",".join(k.models) if k.models is not None else "all",
        ]
        for k in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers[:-1])]
    room = LIST_WIDTH - sum(widths) - 2 * len(widths)
    left = {0, 1, 2, 3}  # text left-aligned, amounts right-aligned

    def line(values: list[str]) -> list[str]:
        parts = [
            v.ljust(w) if i in left else v.rjust(w) for i, (v, w) in enumerate(zip(values[:-1], widths, strict=True))
        ]
        models = values[-1]
        if len(models) <= max(room, len(headers[-1])):
            return ["  ".join([*parts, models]).rstrip()]
        # a long allow-list goes on lines of its own rather than past the terminal's edge
        wrapped = textwrap.wrap(models.replace(",", ", "), LIST_WIDTH - 4, initial_indent="  models: ")
        return ["  ".join([*parts, "(below)"]), *(f"  {w}" if i else w for i, w in enumerate(wrapped))]

    return [out for values in [headers, *cells] for out in line(values)]


def _served(config: Config) -> list[str]:
    """The model names requests may use with this config (a key's allow-list holds the same names)."""
    return sorted({name for p in config.pools for name in (p.model, *p.aliases)})


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if config is None:
        return 2
    from frugalserve.accounting import keys

    url, origin = database_origin(args.database, config)
    engine = open_database(url, origin, create=args.action == "create")
    if engine is None:
        return 2
    try:
        if args.action == "create":
            for name, value in (("--rpm", args.rpm), ("--tpm", args.tpm)):
                if value is not None and value < 1:
                    print(f"error: {name} must be >= 1", file=sys.stderr)
                    return 2
            models = tuple(m.strip() for m in args.models.split(",") if m.strip()) if args.models else None
            tiers = tuple(t.strip() for t in args.tiers.split(",") if t.strip()) if args.tiers else None
            unknown = [t for t in tiers or () if t not in config.routing.tiers]
            if unknown:
                print(
                    f"error: --tiers: unknown tier {', '.join(map(repr, unknown))}"
                    f" (routing.tiers: {', '.join(config.routing.tiers)})",
                    file=sys.stderr,
                )
                return 2
            served = [*_served(config), "auto"]
            unserved = [
                m for m in (*(models or ()), *([args.default_model] if args.default_model else [])) if m not in served
            ]
            if unserved:  # warned, not refused: the pool may be added to the config later
                print(
                    f"warning: no pool of {config.source} serves {', '.join(map(repr, unserved))}"
                    f" ({'it serves ' + ', '.join(served) if served else 'it declares no pool'});"
                    " the key is created anyway and will work once a pool serves it",
                    file=sys.stderr,
                )
            key, secret = keys.create_key(
                engine,
                args.name,
                time.time(),
                budget_usd_per_day=args.budget_usd_per_day,
                budget_usd_per_month=args.budget_usd_per_month,
                rpm=args.rpm,
                tpm=args.tpm,
                models=models,
                default_model=args.default_model,
                tiers=tiers,
            )
            if args.json:
                print(orjson.dumps({"id": key.id, "name": key.name, "secret": secret}).decode())
            else:
                print(f"created key {key.id} ({key.name}). Its secret, shown only now:\n\n    {secret}\n")
            return 0
        if args.action == "list":
            rows = keys.list_keys(engine)
            if args.json:
                data = [{k: getattr(x, k) for k in x.__slots__ if k != "secret_hash"} for x in rows]
                print(orjson.dumps(data).decode())
                return 0
            if not rows:
                print(f"no keys in {shown_url(url)}; create one with: frugalserve keys create --name NAME")
                return 0
            print("\n".join(list_table(rows)))
            return 0
        ids = keys.revoke_key(engine, args.key, time.time())
        if not ids:
            print(f"error: no active key with id or name {args.key!r}", file=sys.stderr)
            return 1
        print(f"revoked {', '.join(ids)} (gateways refuse it within accounting.budget_refresh_s)")
        return 0
    finally:
        engine.dispose()
