"""The usage writer: batches, flush on stop, spool during an outage and replay after, refused rows isolated."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from frugalserve.accounting import jsonl, store
from frugalserve.accounting.anomalies import AnomalyDetector
from frugalserve.accounting.jsonl import Journal
from frugalserve.accounting.writer import EventWriter, UsageWriter
from frugalserve.clock import SystemClock
from frugalserve.events import ReplicaEvent


def row(i: int, tokens: int = 10, key: str | None = "k1", **kw: object) -> dict[str, object]:
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
        **kw,
    }


def writer(engine: sa.Engine, tmp_path: Path, **kw: object) -> UsageWriter:
    kw.setdefault("flush_interval_s", 60.0)  # tests flush by command
    return UsageWriter(
        engine,
        SystemClock(),
        CollectorRegistry(),
        spool_path=tmp_path / "spool.jsonl",
        dead_letter_path=tmp_path / "dead.jsonl",
        **kw,  # type: ignore[arg-type]
    )


@contextlib.asynccontextmanager
async def running(w: UsageWriter) -> AsyncIterator[UsageWriter]:
    await w.start()
    try:
        yield w
    finally:
        await w.stop()


def rows_in(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.select(store.usage_records.c.request_id).order_by("id"))]


def value(metric: object) -> float:
    return float(metric._value.get())  # type: ignore[attr-defined]


def refuse_model(engine: sa.Engine, model: str) -> None:
    """Make the database itself refuse rows for one model (a trigger or a CHECK), as a real refusal."""
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.execute(
                sa.text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON usage_records "
                    f"WHEN NEW.model = '{model}' BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
                )
            )
        else:
            conn.execute(sa.text(f"ALTER TABLE usage_records ADD CONSTRAINT refuse CHECK (model <> '{model}')"))


async def test_stop_writes_every_queued_record(engine: sa.Engine, tmp_path: Path) -> None:
    w = writer(engine, tmp_path, batch_size=7)
    await w.start()
    for i in range(25):
        w.submit(row(i))
    await w.stop()
    assert rows_in(engine) == [f"r{i}" for i in range(25)]


async def test_events_are_stored_with_records(engine: sa.Engine, tmp_path: Path) -> None:
    async with running(writer(engine, tmp_path)) as w:
        EventWriter(w).submit(ReplicaEvent(1.0, "p", "p-0", "stopped", "starting", "request"))
        await w.flush()
    with engine.connect() as conn:
        (ev,) = conn.execute(sa.select(store.replica_events)).mappings()
    assert (ev["pool"], ev["to_state"], ev["reason"]) == ("p", "starting", "request")


async def test_database_outage_spools_then_replays_in_order(engine: sa.Engine, tmp_path: Path) -> None:
    broken = sa.create_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    async with running(writer(broken, tmp_path)) as w:
        w.submit(row(0))
        w.submit(row(1))
        await w.flush()
        assert len(jsonl.read(tmp_path / "spool.jsonl")) == 2
        assert value(w.metrics.spooled) == 2
        w.submit(row(2))
        await w.flush()  # still away: appended behind the first two
        assert [r["request_id"] for _, r in jsonl.read(tmp_path / "spool.jsonl")] == ["r0", "r1", "r2"]
        w.engine = engine  # the database is back
        w.submit(row(3))
        await w.flush()
    assert not (tmp_path / "spool.jsonl").exists()
    assert rows_in(engine) == ["r0", "r1", "r2", "r3"]
    assert value(w.metrics.dead_lettered) == 0


async def test_spool_with_torn_last_line_still_replays(engine: sa.Engine, tmp_path: Path) -> None:
    broken = sa.create_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    async with running(writer(broken, tmp_path)) as w:
        w.submit(row(0))
        await w.flush()
        with (tmp_path / "spool.jsonl").open("ab") as f:
            f.write(b'{"r": {"request_id": "half')
        w.engine = engine
        await w.flush()
    assert rows_in(engine) == ["r0"]


async def test_refused_row_is_dead_lettered_alone_and_never_blocks_later_rows(
    engine: sa.Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    refuse_model(engine, "poison")
    async with running(writer(engine, tmp_path, batch_size=8)) as w:
        for i in range(20):
            w.submit(row(i, model="poison" if i in (3, 11) else "m"))
        await w.flush()
        for i in range(20, 25):  # later batches are not held back by the refused ones
            w.submit(row(i))
        await w.flush()
    assert rows_in(engine) == [f"r{i}" for i in range(25) if i not in (3, 11)]
    dead = [orjson.loads(line) for line in (tmp_path / "dead.jsonl").read_bytes().splitlines()]
    assert [d["r"]["request_id"] for d in dead] == ["r3", "r11"]
    assert all("refuse" in d["error"] for d in dead)
    assert value(w.metrics.dead_lettered) == 2 and value(w.metrics.written) == 23
    assert not (tmp_path / "spool.jsonl").exists()
    assert sum("refused usage record r3" in r.getMessage() for r in caplog.records) == 1


async def test_spooled_refused_row_is_dead_lettered_when_the_database_is_back(
    engine: sa.Engine, tmp_path: Path
) -> None:
    refuse_model(engine, "poison")
    broken = sa.create_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    async with running(writer(broken, tmp_path)) as w:
        w.submit(row(0, model="poison"))
        w.submit(row(1))
        await w.flush()  # outage: both spooled
        w.engine = engine
        w.submit(row(2))
        await w.flush()
        w.submit(row(3))
        await w.flush()
    assert rows_in(engine) == ["r1", "r2", "r3"]
    assert [r["request_id"] for _, r in jsonl.read(tmp_path / "dead.jsonl")] == ["r0"]


# The three records that blocked every later one (issue 9.7), fitted at the boundary instead.
HOSTILE = {
    "nul": {"model": "qwen\u0000vl"},
    "long": {"model": "m" * 300},
    "huge": {"prompt_tokens": 2**64 - 1, "completion_tokens": -5, "duration_s": float("nan")},
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_hostile_values_are_fitted_and_written(engine: sa.Engine, tmp_path: Path, case: str) -> None:
    async with running(writer(engine, tmp_path)) as w:
        w.submit(row(0, **HOSTILE[case]))  # type: ignore[arg-type]
        w.submit(row(1))
        await w.flush()
    assert rows_in(engine) == ["r0", "r1"]
    assert value(w.metrics.dead_lettered) == 0
    with engine.connect() as conn:
        stored = conn.execute(sa.select(store.usage_records).order_by("id")).mappings().first()
    assert stored is not None
    if case == "nul":
        assert stored["model"] == "qwenvl"
    elif case == "long":
        assert stored["model"] == "m" * 200  # String(200)
    else:
        assert (stored["prompt_tokens"], stored["completion_tokens"], stored["duration_s"]) == (None, None, None)


async def test_concurrent_flush_requests_never_overlap_and_confirmed_sequence_only_grows(
    engine: sa.Engine, tmp_path: Path
) -> None:
    confirmed: list[int] = []
    w = writer(engine, tmp_path, flush_interval_s=0.005, on_flushed=confirmed.append)
    active = 0
    overlaps = 0
    lock = threading.Lock()
    inner = w._flag_and_deliver

    def slow_deliver(rows: list[dict[str, object]], events: list[dict[str, object]]) -> int | None:
        nonlocal active, overlaps
        with lock:
            active += 1
            overlaps += active > 1
        time.sleep(0.003)  # long enough that a second flusher would arrive mid-write
        try:
            return inner(rows, events)
        finally:
            with lock:
                active -= 1

    w._flag_and_deliver = slow_deliver  # type: ignore[method-assign]
    async with running(w):

        async def client(c: int) -> None:
            for i in range(10):
                w.submit(row(c * 100 + i))
                await w.flush()  # like /admin/usage, alongside the periodic flush

        await asyncio.gather(*(client(c) for c in range(8)))
    assert overlaps == 0
    assert confirmed == sorted(confirmed) and len(set(confirmed)) == len(confirmed)
    assert confirmed[-1] == w.seq == 80
    assert len(rows_in(engine)) == 80


async def test_flush_before_start_is_refused(engine: sa.Engine, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not running"):
        await writer(engine, tmp_path).flush()


async def test_deleted_sqlite_file_is_reopened_and_gets_the_new_rows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "live.db"
    engine = store.open_store(f"sqlite:///{path}")
    try:
        async with running(writer(engine, tmp_path)) as w:
            w.submit(row(0))
            await w.flush()
            assert rows_in(engine) == ["r0"]
            path.unlink()  # as a person would: the -wal and -shm files stay behind
            w.submit(row(1))
            await w.flush()
            assert path.exists()
            assert any("was deleted; opening it anew" in r.getMessage() for r in caplog.records)
        fresh = store.create_engine(f"sqlite:///{path}")
        assert rows_in(fresh) == ["r1"]
        fresh.dispose()
    finally:
        engine.dispose()


async def test_replaced_sqlite_file_is_noticed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "live.db"
    engine = store.open_store(f"sqlite:///{path}")
    try:
        async with running(writer(engine, tmp_path)) as w:
            w.submit(row(0))
            await w.flush()
            other = tmp_path / "other.db"
            store.open_store(f"sqlite:///{other}").dispose()
            os.replace(other, path)  # e.g. a restore from backup
            w.submit(row(1))
            await w.flush()
        assert any("was replaced" in r.getMessage() for r in caplog.records)
        assert rows_in(engine) == ["r1"]
    finally:
        engine.dispose()


async def test_journal_rows_left_by_a_crash_are_written_at_start(engine: sa.Engine, tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    w = writer(engine, tmp_path, journal=journal)
    await w.start()
    w.submit(row(0))
    w.submit(row(1))
    # a crash now: the task never flushes (simulated by cancelling it without stop)
    assert w._task is not None
    w._task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await w._task
    journal.close()
    assert rows_in(engine) == []
    async with running(writer(engine, tmp_path, journal=Journal(tmp_path / "journal.jsonl"))):
        assert rows_in(engine) == ["r0", "r1"]  # written before start() returned
    assert not (tmp_path / "journal.jsonl").exists() or not jsonl.read(tmp_path / "journal.jsonl")
    assert not (tmp_path / "journal.jsonl.flushing").exists()


async def test_journal_is_emptied_once_its_rows_are_committed(engine: sa.Engine, tmp_path: Path) -> None:
    async with running(writer(engine, tmp_path, journal=Journal(tmp_path / "j.jsonl"))) as w:
        w.submit(row(0))
        assert [r["request_id"] for _, r in jsonl.read(tmp_path / "j.jsonl")] == ["r0"]
        await w.flush()
        assert jsonl.read(tmp_path / "j.jsonl") == [] and not (tmp_path / "j.jsonl.flushing").exists()
    assert rows_in(engine) == ["r0"]


async def test_rows_a_forced_exit_journaled_survive_a_flush_that_follows(engine: sa.Engine, tmp_path: Path) -> None:
    """After a forced exit hands its rows to the journal, the process may still run the writer's loop for a
    moment: that flush must not move the journal aside and delete it (the rows are only there)."""
    async with running(writer(engine, tmp_path, journal=Journal(tmp_path / "j.jsonl"))) as w:
        w.submit(row(0))  # queued and journaled
        w.write_now([row(1)])  # the forced exit: in-flight requests go to the journal
        await w.flush()
        assert rows_in(engine) == []  # the next start writes them, once
    async with running(writer(engine, tmp_path, journal=Journal(tmp_path / "j.jsonl"))):
        assert rows_in(engine) == ["r0", "r1"]


async def test_retention_deletes_old_rows(engine: sa.Engine, tmp_path: Path) -> None:
    async with running(writer(engine, tmp_path, retention_days=1.0)) as w:
        old, new = row(0), row(1)
        new["time"] = SystemClock().wall()
        w.submit(old)
        w.submit(new)
        await w.flush()
        await w._maybe_apply_retention()
    assert rows_in(engine) == ["r1"]


async def test_outlier_token_count_is_flagged_and_counted(engine: sa.Engine, tmp_path: Path) -> None:
    w = writer(engine, tmp_path, detector=AnomalyDetector(threshold=6, history=50, min_history=10))
    async with running(w):
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
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == "0005"
    e.dispose()


async def test_locked_sqlite_database_spools_instead_of_dead_lettering(tmp_path: Path) -> None:
    """A lock is the database's state, not the rows' fault: spooled, then written once it is free."""
    path = tmp_path / "locked.db"
    engine = store.open_store(f"sqlite:///{path}")
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        async with running(writer(engine, tmp_path)) as w:
            await w.flush()  # schema checked while the database is free
            holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock past busy_timeout
            w.submit(row(0))
            w.submit(row(1))
            await w.flush()
            assert [r["request_id"] for _, r in jsonl.read(tmp_path / "spool.jsonl")] == ["r0", "r1"]
            holder.execute("ROLLBACK")
            w.submit(row(2))
            await w.flush()
        assert rows_in(engine) == ["r0", "r1", "r2"]
        assert value(w.metrics.dead_lettered) == 0 and not (tmp_path / "dead.jsonl").exists()
    finally:
        holder.close()
        engine.dispose()
