"""Accounting benchmark: usage records written per second, the latency accounting adds, and what
``accounting.durability: wal`` costs next to ``batch``.

    PYTHONPATH=src python benchmarks/accounting.py [--records 20000] [--requests 400] [--rounds 5]
        [--part all|throughput|latency|durability]
        [--postgres postgresql://postgres@127.0.0.1:5432/test]   (default: $FRUGALSERVE_TEST_POSTGRES_URL)

1. Writer throughput: rows queued on the writer and flushed in batches, into SQLite (WAL) and PostgreSQL.
2. Added latency: the gateway in-process (httpx ASGI transport) in front of the fake upstream (a real
   process on loopback), accounting off vs on (SQLite writer + auth on with a key), requests alternated
   between the two so machine noise hits both alike; p50 and p95 per request.
3. Durability: the cost of one ``submit`` (what the request path pays) with batch, wal and wal + fsync,
   and the gateway's latency per request with each, alternated; medians over ``--rounds`` rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.procs (the fake upstream)

from tests import procs

from frugalserve import config as cfg
from frugalserve.accounting import keys, store
from frugalserve.accounting.jsonl import Journal
from frugalserve.accounting.writer import UsageWriter
from frugalserve.api.app import create_app
from frugalserve.clock import SystemClock


def row(i: int) -> dict[str, object]:
    return {
        "request_id": uuid.uuid4().hex,
        "time": time.time(),
        "gateway": "bench",
        "key_id": f"k{i % 50}",
        "endpoint": "chat",
        "model": "qwen3-vl-2b",
        "pool": "small",
        "replica": "small-0",
        "stream": False,
        "status": 200,
        "prompt_tokens": 300 + i % 97,
        "prompt_text_tokens": 44,
        "prompt_image_tokens": 256 + i % 97,
        "completion_tokens": 40,
        "duration_s": 0.4,
        "ttft_s": 0.05,
        "cost_usd": 0.0001,
        "anomaly": False,
    }


async def writer_rate(url: str, n: int, tmp: Path) -> float:
    engine = store.open_store(url)
    w = UsageWriter(
        engine, SystemClock(), CollectorRegistry(), batch_size=500, flush_interval_s=60, spool_path=tmp / "spool.jsonl"
    )
    await w.start()
    await w.flush()  # the first flush checks the schema; not part of the rate
    rows = [row(i) for i in range(n)]
    t0 = time.perf_counter()
    for r in rows:
        w.submit(r)
    await w.flush()
    elapsed = time.perf_counter() - t0
    await w.stop()
    assert store.count_records(engine) >= n
    engine.dispose()
    return n / elapsed


MODES = {"batch": None, "wal": False, "wal+fsync": True}  # mode -> journal fsync (None: no journal)


async def submit_cost(tmp: Path, n: int, rounds: int) -> dict[str, float]:
    """Median over rounds of the mean time of one submit(), microseconds; the flush is not timed."""
    engine = store.open_store(f"sqlite:///{tmp / 'submit.db'}")
    per_round: dict[str, list[float]] = {m: [] for m in MODES}
    for r in range(rounds):
        for mode, fsync in MODES.items():
            journal = Journal(tmp / f"journal-{mode}-{r}.jsonl", fsync=fsync) if fsync is not None else None
            w = UsageWriter(
                engine,
                SystemClock(),
                CollectorRegistry(),
                flush_interval_s=60,
                batch_size=10**9,
                spool_path=tmp / "s.jsonl",
                journal=journal,
            )
            await w.start()
            rows = [row(i) for i in range(n if fsync is not True else max(1, n // 10))]
            t0 = time.perf_counter()
            for x in rows:
                w.submit(x)
            per_round[mode].append((time.perf_counter() - t0) / len(rows) * 1e6)
            await w.stop()
    engine.dispose()
    return {m: statistics.median(v) for m, v in per_round.items()}


def durability_config(upstream: str, tmp: Path, mode: str) -> cfg.Config:
    wal = MODES[mode] is not None
    return cfg.load_text(
        f"gateway: {{database: 'sqlite:///{tmp / mode}.db'}}\n"
        f"accounting: {{spool_path: '{tmp / mode}.spool', durability: {'wal' if wal else 'batch'}, "
        f"journal_path: '{tmp / mode}.journal', journal_fsync: {str(MODES[mode] is True).lower()}}}\n"
        f"pools:\n  - {{name: small, model: m, backend: {{url: '{upstream}'}}, gpu: {{usd_per_hour: 1.0}}}}\n"
    )


async def durability_latency(upstream: str, tmp: Path, n: int, rounds: int) -> dict[str, tuple[float, float]]:
    """Per mode: median over rounds of the per-round p50 and p95 latency (ms), requests alternated."""
    apps = {m: create_app(durability_config(upstream, tmp, m)) for m in MODES}
    clients = {}
    for mode, app in apps.items():
        await app.state.gateway.startup()
        clients[mode] = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    p50s: dict[str, list[float]] = {m: [] for m in MODES}
    p95s: dict[str, list[float]] = {m: [] for m in MODES}
    order = list(MODES)
    try:
        for _ in range(rounds):
            times: dict[str, list[float]] = {m: [] for m in MODES}
            for i in range(n + 20):
                for mode in order[i % 3 :] + order[: i % 3]:  # rotate who goes first
                    t0 = time.perf_counter()
                    resp = await clients[mode].post("/v1/chat/completions", json=body)
                    dt = time.perf_counter() - t0
                    assert resp.status_code == 200, resp.text
                    if i >= 20:  # warm-up
                        times[mode].append(dt * 1000)
            for mode in MODES:
                p50s[mode].append(pct(times[mode], 50))
                p95s[mode].append(pct(times[mode], 95))
    finally:
        for mode, app in apps.items():
            await clients[mode].aclose()
            await app.state.gateway.shutdown()
    return {m: (statistics.median(p50s[m]), statistics.median(p95s[m])) for m in MODES}


def gw_config(upstream: str, db: str, on: bool) -> cfg.Config:
    return cfg.load_text(
        f"gateway: {{database: '{db}'}}\nauth: {{enabled: {str(on).lower()}}}\n"
        f"accounting: {{enabled: {str(on).lower()}, spool_path: '{db[10:]}.spool'}}\n"
        f"pools:\n  - {{name: small, model: m, backend: {{url: '{upstream}'}}, gpu: {{usd_per_hour: 1.0}}}}\n"
    )


async def added_latency(upstream: str, tmp: Path, n: int) -> dict[str, list[float]]:
    db = f"sqlite:///{tmp / 'gw.db'}"
    engine = store.open_store(db)
    _, secret = keys.create_key(engine, "bench", time.time(), rpm=1_000_000, budget_usd_per_day=1e9)
    engine.dispose()
    apps = {"off": create_app(gw_config(upstream, db, False)), "on": create_app(gw_config(upstream, db, True))}
    clients = {}
    for name, app in apps.items():
        await app.state.gateway.startup()
        clients[name] = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    headers = {"authorization": f"Bearer {secret}"}
    times: dict[str, list[float]] = {"off": [], "on": []}
    try:
        for i in range(n + 50):
            for name in ("off", "on") if i % 2 else ("on", "off"):
                t0 = time.perf_counter()
                r = await clients[name].post("/v1/chat/completions", json=body, headers=headers)
                dt = time.perf_counter() - t0
                assert r.status_code == 200, r.text
                if i >= 50:  # warm-up
                    times[name].append(dt * 1000)
    finally:
        for name, app in apps.items():
            await clients[name].aclose()
            await app.state.gateway.shutdown()
    return times


def pct(xs: list[float], q: int) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1]


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=20_000)
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--part", choices=("all", "throughput", "latency", "durability"), default="all")
    p.add_argument("--postgres", default=os.environ.get("FRUGALSERVE_TEST_POSTGRES_URL"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.part in ("all", "throughput"):
            await throughput(args, tmp)
        if args.part in ("all", "latency"):
            with procs.fake_upstream(tmp) as upstream:
                times = await added_latency(upstream, tmp, args.requests)
            print(f"\n## gateway latency per request, accounting off vs on ({args.requests} each, alternated)")
            print(f"{'':14}{'p50 ms':>10}{'p95 ms':>10}")
            for name in ("off", "on"):
                print(f"{'accounting ' + name:14}{pct(times[name], 50):>10.3f}{pct(times[name], 95):>10.3f}")
            print(
                f"{'difference':14}{pct(times['on'], 50) - pct(times['off'], 50):>10.3f}"
                f"{pct(times['on'], 95) - pct(times['off'], 95):>10.3f}"
            )
        if args.part in ("all", "durability"):
            cost = await submit_cost(tmp, args.records // 4, args.rounds)
            print(f"\n## accounting.durability: one submit() on the request path (median of {args.rounds} rounds)")
            for mode, us in cost.items():
                print(f"{mode:12}{us:>10.1f} us")
            with procs.fake_upstream(tmp) as upstream:
                lat = await durability_latency(upstream, tmp, args.requests // 4, args.rounds)
            print(
                f"\n## gateway latency per request by durability ({args.requests // 4} each per round, alternated;"
                f" median of {args.rounds} rounds)"
            )
            print(f"{'':12}{'p50 ms':>10}{'p95 ms':>10}")
            for mode, (p50, p95) in lat.items():
                print(f"{mode:12}{p50:>10.3f}{p95:>10.3f}")


async def throughput(args: argparse.Namespace, tmp: Path) -> None:
    print(f"## usage records written per second ({args.records} rows, batches of 500)")
    sqlite_rate = await writer_rate(f"sqlite:///{tmp / 'w.db'}", args.records, tmp)
    print(f"SQLite (WAL)  {sqlite_rate:>10,.0f} rows/s")
    if not args.postgres:
        print("PostgreSQL    skipped (no --postgres / $FRUGALSERVE_TEST_POSTGRES_URL)")
        return
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(store.normalize_url(args.postgres))
    with admin.begin() as c:
        c.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        url = f"{args.postgres}{'&' if '?' in args.postgres else '?'}options=-csearch_path%3D{schema}"
        print(f"PostgreSQL    {await writer_rate(url, args.records, tmp):>10,.0f} rows/s")
    finally:
        with admin.begin() as c:
            c.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


if __name__ == "__main__":
    asyncio.run(main())
