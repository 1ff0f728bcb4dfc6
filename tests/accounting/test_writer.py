"""The usage writer: batches, flush on stop, spool during an outage and replay after."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from frugalserve.accounting import store
from frugalserve.accounting.anomalies import AnomalyDetector
from frugalserve.accounting.writer import EventWriter, UsageWriter
from frugalserve.clock import SystemClock
from frugalserve.events import ReplicaEvent


def row(i: int, tokens: int = 10, key: str | None = "k1") -> dict[str, object]:
    return {
        "request_id": f"r{i}",
        "time": 1_700_000_000.0 + i,
        "endpoint": "chat",
        "model": "m",
        "pool": "p",
        "replica": "p-0",
        "key_id": key,
        "stream": False,
        "status": 200,
        "prompt_tokens": tokens,
        "completion_tokens": 1,
        "duration_s": 0.5,
        "cost_usd": 0.01,
        "anomaly": False,
    }


def writer(engine: sa.Engine, tmp_path: Path, **kw: object) -> UsageWriter:
    return UsageWriter(engine, SystemClock(), CollectorRegistry(), spool_path=tmp_path / "spool.jsonl", **kw)  # type: ignore[arg-type]


def rows_in(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.select(store.usage_records.c.request_id).order_by("id"))]


async def test_stop_writes_every_queued_record(engine: sa.Engine, tmp_path: Path) -> None:
    w = writer(engine, tmp_path, flush_interval_s=60.0, batch_size=7)
    await w.start()
    for i in range(25):
        w.submit(row(i))
    await w.stop()
    assert rows_in(engine) == [f"r{i}" for i in range(25)]


async def test_events_are_stored_with_records(engine: sa.Engine, tmp_path: Path) -> None:
    w = writer(engine, tmp_path)
    EventWriter(w).submit(ReplicaEvent(1.0, "p", "p-0", "stopped", "starting", "request"))
    await w.flush()
    with engine.connect() as conn:
        (ev,) = conn.execute(sa.select(store.replica_events)).mappings()
    assert (ev["pool"], ev["to_state"], ev["reason"]) == ("p", "starting", "request")


async def test_database_outage_spools_then_replays_in_order(engine: sa.Engine, tmp_path: Path) -> None:
    broken = sa.create_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    w = writer(broken, tmp_path)
    w.submit(row(0))
    w.submit(row(1))
    await w.flush()
    assert (tmp_path / "spool.jsonl").exists()
    assert w.metrics.spooled._value.get() == 2  # type: ignore[attr-defined]
    w.engine = engine  # the database is back
    w.submit(row(2))
    await w.flush()
    assert not (tmp_path / "spool.jsonl").exists()
    assert rows_in(engine) == ["r0", "r1", "r2"]


async def test_spool_with_torn_last_line_still_replays(engine: sa.Engine, tmp_path: Path) -> None:
    broken = sa.create_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    w = writer(broken, tmp_path)
    w.submit(row(0))
    await w.flush()
    with (tmp_path / "spool.jsonl").open("ab") as f:
        f.write(b'{"r": {"request_id": "half')
    w.engine = engine
    await w.flush()
    assert rows_in(engine) == ["r0"]


async def test_retention_deletes_old_rows(engine: sa.Engine, tmp_path: Path) -> None:
    w = writer(engine, tmp_path, retention_days=1.0)
    old, new = row(0), row(1)
    new["time"] = SystemClock().wall()
    w.submit(old)
    w.submit(new)
    await w.flush()
    await w._maybe_apply_retention()
    assert rows_in(engine) == ["r1"]


async def test_outlier_token_count_is_flagged_and_counted(engine: sa.Engine, tmp_path: Path) -> None:
    w = writer(engine, tmp_path, detector=AnomalyDetector(threshold=6, history=50, min_history=10))
    for i in range(30):
        w.submit(row(i, tokens=100 + i % 5))
    w.submit(row(99, tokens=40_000))
    w.submit(row(100, tokens=40_000, key="other-key"))  # no history for this key yet: not flagged
    await w.flush()
    with engine.connect() as conn:
        flagged = [
            r[0] for r in conn.execute(sa.select(store.usage_records.c.request_id).where(store.usage_records.c.anomaly))
        ]
    assert flagged == ["r99"]
    assert w.metrics.anomalies.labels("p")._value.get() == 1  # type: ignore[attr-defined]


def test_migrations_are_idempotent(db_url: str) -> None:
    store.open_store(db_url).dispose()
    e = store.open_store(db_url)
    with e.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == "0002"
    e.dispose()
