"""``frugalserve keys create|list|revoke``: API keys in the gateway's database."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time

import orjson

from frugalserve.commands import load_config


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
    c.add_argument("--json", action="store_true", help="print the key as JSON")
    ls = sub.add_parser("list", help="list keys (never their secrets)")
    ls.add_argument("--json", action="store_true")
    r = sub.add_parser("revoke", help="revoke a key by id, or every active key with this name")
    r.add_argument("key", help="key id or name")


def _when(t: float | None) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M") if t else "-"


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if config is None:
        return 2
    from frugalserve.accounting import keys, store

    engine = store.open_store(args.database or config.gateway.database)
    try:
        if args.action == "create":
            for name, value in (("--rpm", args.rpm), ("--tpm", args.tpm)):
                if value is not None and value < 1:
                    print(f"error: {name} must be >= 1", file=sys.stderr)
                    return 2
            models = tuple(m.strip() for m in args.models.split(",") if m.strip()) if args.models else None
            key, secret = keys.create_key(
                engine,
                args.name,
                time.time(),
                budget_usd_per_day=args.budget_usd_per_day,
                budget_usd_per_month=args.budget_usd_per_month,
                rpm=args.rpm,
                tpm=args.tpm,
                models=models,
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
            print(
                f"{'id':12}  {'name':20}  {'prefix':18}  {'created':16}  {'revoked':16}  budget/day  rpm  tpm  models"
            )
            for k in rows:
                print(
                    f"{k.id:12}  {k.name[:20]:20}  {k.prefix:18}  {_when(k.created_at):16}  {_when(k.revoked_at):16}"
                    f"  {k.budget_usd_per_day if k.budget_usd_per_day is not None else '-'!s:>10}"
                    f"  {k.rpm or '-'!s:>3}  {k.tpm or '-'!s:>3}  {','.join(k.models) if k.models else 'all'}"
                )
            return 0
        ids = keys.revoke_key(engine, args.key, time.time())
        if not ids:
            print(f"error: no active key with id or name {args.key!r}", file=sys.stderr)
            return 1
        print(f"revoked {', '.join(ids)} (gateways refuse it within accounting.budget_refresh_s)")
        return 0
    finally:
        engine.dispose()
