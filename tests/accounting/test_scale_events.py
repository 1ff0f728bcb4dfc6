"""The autoscaler's decisions, stored: ScaleEvents through the accounting sink and the usage writer into
``scale_events`` (SQLite, and PostgreSQL when configured), through the spool, the dead-letter file, the
journal and retention, and counted by the report."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from frugalserve import config as cfg
from frugalserve.accounting import jsonl, store
from frugalserve.accounting.jsonl import Journal
from frugalserve.accounting.service import Accounting
from frugalserve.accounting.writer import EventWriter
from frugalserve.clock import SystemClock
from frugalserve.events import ReplicaEvent, ScaleEvent
from frugalserve.records import RecentRecords
from tests.accounting.test_writer import running, writer

T0 = 1_700_000_000.0 - 1_700_000_000.0 % 86400  # 2023-11-14 00:00 UTC

# What the autoscaler of pools "big" and "small" decided, field by field in ScaleEvent's order; every
# from_replicas differs from its to_replicas, so a swap shows. Times and loads are exact binary fractions.
SUBMITTED = [
    (T0 + 100.5, "big", "scale_up", 1, 3, "concurrency", 2.75, "in-flight 11 > 4 per replica x 1 for 60 s"),
    (T0 + 160.25, "big", "refused", 3, 4, "held", 3.5, "no free GPU: 4 of 4 placed"),
    (T0 + 400.0, "small", "scale_down", 2, 0, "utilization", 0.0, "idle 300 s, below 30%"),
    (T0 + 420.0, "big", "prewarm_used", 0, 1, "forecast", 0.5, "prewarmed at 09:00 used at 09:02"),
    (T0 + 900.0, "small", "prewarm_expired", 1, 0, "forecast", 0.0, "prewarm unused for 600 s"),
]
REPLICA = ReplicaEvent(T0 + 101.0, "big", "big-1", "stopped", "starting", "scale_up")


def scale_rows(engine: sa.Engine) -> list[tuple[object, ...]]:
    """The stored rows, oldest first, columns named one by one in ScaleEvent's field order."""
    c = store.scale_events.c
    q = sa.select(c.time, c.pool, c.action, c.from_replicas, c.to_replicas, c.signal, c.load, c.reason)
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(q.order_by(c.id))]


def test_scale_event_fields_are_the_columns_of_scale_events() -> None:
    """The writer stores a ScaleEvent by field name: a field without its column would be lost silently."""
    fields = [f.name for f in dataclasses.fields(ScaleEvent)]
    assert fields == [c.name for c in store.scale_events.columns if c.name != "id"]


async def test_scale_events_through_the_accounting_sink_are_stored_field_for_field_and_reported(
    db_url: str, tmp_path: Path
) -> None:
    config = cfg.load_text(
        f"gateway: {{database: '{db_url}'}}\n"
        f"accounting: {{spool_path: '{tmp_path / 'spool.jsonl'}', dead_letter_path: '{tmp_path / 'dead.jsonl'}'}}\n"
        "pools:\n"
        "  - {name: big, model: m, backend: {url: 'http://127.0.0.1:1'}, gpu: {usd_per_hour: 3.6}}\n"
        "  - {name: small, model: s, backend: {url: 'http://127.0.0.1:1'}, gpu: {usd_per_hour: 0.8}}\n"
    )
    acc = Accounting(config, SystemClock(), CollectorRegistry(), RecentRecords())
    await acc.start()
    try:
        for i, fields in enumerate(SUBMITTED):
            acc.events.submit(ScaleEvent(*fields))
            if i == 0:
                acc.events.submit(REPLICA)  # the same sink: dispatched by type to the other table
        assert acc.writer is not None
        await acc.writer.flush()
        assert acc.engine is not None
        assert scale_rows(acc.engine) == SUBMITTED
        with acc.engine.connect() as conn:
            (replica,) = conn.execute(sa.select(store.replica_events)).mappings()
        assert (replica["time"], replica["pool"], replica["replica"]) == (T0 + 101.0, "big", "big-1")
        assert (replica["from_state"], replica["to_state"], replica["reason"]) == ("stopped", "starting", "scale_up")
        # /admin/usage reads them back: the first 10 minutes hold all but the expired prewarm (at 900 s)
        body = await acc.usage_report({"since": "2023-11-14", "until": "2023-11-14T00:10", "by": "pool"})
    finally:
        await acc.stop()
    counts = {
        r["group"]: [r[c] for c in ("scale_ups", "scale_downs", "scale_refusals", "prewarms_used", "prewarms_expired")]
        for r in body["rows"]
    }
    assert counts == {"big": [1, 0, 1, 1, 0], "small": [0, 1, 0, 0, 0], "TOTAL": [1, 1, 1, 1, 0]}


async def test_long_reason_is_cut_to_its_column_and_the_rest_is_kept(engine: sa.Engine, tmp_path: Path) -> None:
    async with running(writer(engine, tmp_path)) as w:
        EventWriter(w).submit(ScaleEvent(T0, "big\x00", "scale_up", 0, 1, "min", float("nan"), "r" * 700))
        await w.flush()
    # String(500) reason; NUL dropped; a NaN load (NOT NULL) stored as 0.0
    assert scale_rows(engine) == [(T0, "big", "scale_up", 0, 1, "min", 0.0, "r" * 500)]


async def test_scale_events_spooled_during_an_outage_are_replayed_in_order(engine: sa.Engine, tmp_path: Path) -> None:
    broken = sa.create_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    async with running(writer(broken, tmp_path)) as w:
        sink = EventWriter(w)
        sink.submit(ScaleEvent(*SUBMITTED[0]))
        sink.submit(REPLICA)
        sink.submit(ScaleEvent(*SUBMITTED[1]))
        await w.flush()
        spooled = jsonl.read(tmp_path / "spool.jsonl")
        assert [kind for kind, _ in spooled] == ["s", "e", "s"]
        assert [r["action"] for kind, r in spooled if kind == "s"] == ["scale_up", "refused"]
        w.engine = engine  # the database is back
        sink.submit(ScaleEvent(*SUBMITTED[2]))
        await w.flush()
    assert not (tmp_path / "spool.jsonl").exists()
    assert scale_rows(engine) == SUBMITTED[:3]
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(store.replica_events)).scalar_one() == 1


def refuse_action(engine: sa.Engine, action: str) -> None:
    """Make the database itself refuse scale events with one action (a trigger or a CHECK)."""
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.execute(
                sa.text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON scale_events "
                    f"WHEN NEW.action = '{action}' BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
                )
            )
        else:
            conn.execute(sa.text(f"ALTER TABLE scale_events ADD CONSTRAINT refuse CHECK (action <> '{action}')"))


async def test_refused_scale_event_is_dead_lettered_alone(
    engine: sa.Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    refuse_action(engine, "poison")
    poison = (T0 + 130.0, "big", "poison", 3, 2, "held", 1.25, "bad")
    async with running(writer(engine, tmp_path)) as w:
        sink = EventWriter(w)
        for fields in (SUBMITTED[0], poison, SUBMITTED[1]):
            sink.submit(ScaleEvent(*fields))
        await w.flush()
    assert scale_rows(engine) == SUBMITTED[:2]
    (dead,) = [orjson.loads(line) for line in (tmp_path / "dead.jsonl").read_bytes().splitlines()]
    assert "refuse" in dead["error"]
    keys = ("time", "pool", "action", "from_replicas", "to_replicas", "signal", "load", "reason")
    assert tuple(dead["s"][k] for k in keys) == poison
    assert jsonl.read(tmp_path / "dead.jsonl") == [("s", dead["s"])]
    refused = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(refused) == 1 and "refused scale event big/poison" in refused[0]


async def test_journaled_scale_events_left_by_a_crash_are_written_at_start(engine: sa.Engine, tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    w = writer(engine, tmp_path, journal=journal)
    await w.start()
    EventWriter(w).submit(ScaleEvent(*SUBMITTED[0]))
    EventWriter(w).submit(ScaleEvent(*SUBMITTED[1]))
    assert w._task is not None
    w._task.cancel()  # a crash: the task never flushes
    with contextlib.suppress(asyncio.CancelledError):
        await w._task
    journal.close()
    assert scale_rows(engine) == []
    async with running(writer(engine, tmp_path, journal=Journal(tmp_path / "journal.jsonl"))):
        assert scale_rows(engine) == SUBMITTED[:2]  # written before start() returned


async def test_retention_deletes_old_scale_events(engine: sa.Engine, tmp_path: Path) -> None:
    now = SystemClock().wall()
    recent = (float(int(now)), "big", "scale_down", 3, 2, "utilization", 0.25, "below 30% for 300 s")
    async with running(writer(engine, tmp_path, retention_days=1.0)) as w:
        EventWriter(w).submit(ScaleEvent(*SUBMITTED[0]))  # 2023: far older than a day
        EventWriter(w).submit(ScaleEvent(*recent))
        await w.flush()
        await w._maybe_apply_retention()
    assert scale_rows(engine) == [recent]
