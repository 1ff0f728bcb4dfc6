"""The usage writer: the one owner of unwritten usage rows, replica events and scale events.

The request path calls :meth:`UsageWriter.submit` (a list append; with ``durability: wal`` also a
journal line) and never waits for the database. Every row is fitted to its table (clamp.py) before it is
stored or written to any file. One task, the owner, takes what
has queued up every ``flush_interval_s`` (or at once when ``batch_size`` rows wait, or when someone asks
with :meth:`flush`), flags anomalies, and writes it from a worker thread. Nobody else writes: a caller
of :meth:`flush` sends the owner a command and waits for its answer, so flushes never overlap and the
confirmed sequence only moves forward.

Where a batch goes:

* the database, in transactions of ``batch_size``;
* when the database cannot be reached or is busy (an operational error: connection refused or lost,
  locked, timed out; or the probe ``SELECT 1`` fails too), what was not written goes to the spool,
  replayed oldest first by the first flush that reaches it again;
* any other error means the database refuses something in the batch: it is split in halves until each
  refused row stands alone; such a row goes to the dead-letter file with the error (metric, log line)
  and never holds back the rows after it.

A SQLite file deleted or replaced under a running gateway is noticed before each flush (its inode and
device changed) and opened anew, migrated, with a warning. :meth:`stop` writes what is left;
:meth:`write_now` writes synchronously when the process is forced to exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy.engine import Engine

from frugalserve.accounting import jsonl, store
from frugalserve.accounting.anomalies import AnomalyDetector
from frugalserve.accounting.clamp import Fitter
from frugalserve.accounting.jsonl import Item, Journal
from frugalserve.clock import Clock
from frugalserve.events import Event, ReplicaEvent, ScaleEvent

log = logging.getLogger("frugalserve.accounting")

RETENTION_EVERY_S = 3600.0
FORCED_LOCK_WAIT_S = 10.0  # at a forced exit, how long to wait for a flush already in its thread
Row = dict[str, Any]

_RECORDS = Fitter(store.usage_records)
_EVENTS = Fitter(store.replica_events)
_SCALES = Fitter(store.scale_events)
_FITTERS = {"r": _RECORDS, "e": _EVENTS, "s": _SCALES}  # one per kind of item (jsonl.KINDS)
_SCALE_FIELDS = tuple(f.name for f in dataclasses.fields(ScaleEvent))  # the columns of scale_events
_NAMES = {"r": "usage record", "e": "replica event", "s": "scale event"}


class WriterMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.written = Counter(
            "frugalserve_usage_records_written", "Usage records written to the database.", registry=registry
        )
        self.spooled = Counter(
            "frugalserve_usage_records_spooled",
            "Usage records and events written to the local spool while the database was unreachable.",
            registry=registry,
        )
        self.dead_lettered = Counter(
            "frugalserve_usage_records_dead_lettered",
            "Usage records and events the database refused, moved to the dead-letter file.",
            registry=registry,
        )
        self.queued = Gauge("frugalserve_usage_queue", "Usage records waiting to be written.", registry=registry)
        self.anomalies = Counter(
            "frugalserve_token_anomalies",
            "Requests whose token count is an outlier for their key and pool (median/MAD).",
            ["pool"],
            registry=registry,
        )


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _sqlite_file(engine: Engine) -> Path | None:
    if engine.dialect.name != "sqlite":
        return None
    db = engine.url.database
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db).expanduser().resolve()


def _set_aside_stale_wal(db: Path) -> None:
    """Move the old database's ``-wal``/``-shm`` away from a deleted or replaced SQLite file.

    SQLite would otherwise apply the old file's write-ahead log to the new file (its pages, on another
    database). A log written after the new file appeared (by another process that reopened it first)
    is the new file's own and stays.
    """
    try:
        appeared = os.stat(db).st_ctime
    except FileNotFoundError:
        appeared = float("inf")  # no database file: any log beside it is an orphan
    for suffix in ("-wal", "-shm"):
        side = db.with_name(db.name + suffix)
        try:
            if os.stat(side).st_mtime > appeared:
                continue
            os.replace(side, side.with_name(side.name + ".orphaned"))
        except FileNotFoundError:
            continue
        log.warning("moved %s, the log of the old database, to %s.orphaned", side, side.name)


def _transient(exc: Exception) -> bool:
    """An error of the database's state (locked, connection lost, timeout), not of the rows: retry later."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError | sa.exc.TimeoutError)


def _fitted(rows: list[Row], events: list[Item]) -> list[Item]:
    return [("r", _RECORDS.fit(r)) for r in rows] + [(kind, _FITTERS[kind].fit(e)) for kind, e in events]


class UsageWriter:
    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        registry: CollectorRegistry,
        *,
        batch_size: int = 500,
        flush_interval_s: float = 1.0,
        spool_path: str | os.PathLike[str] = "frugalserve-spool.jsonl",
        dead_letter_path: str | os.PathLike[str] = "frugalserve-dead-letter.jsonl",
        journal: Journal | None = None,
        retention_days: float = 0.0,
        detector: AnomalyDetector | None = None,
        on_flushed: Callable[[int], None] | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.spool_path = Path(spool_path)
        self.dead_letter_path = Path(dead_letter_path)
        self.journal = journal
        self._handed_over = False  # a forced exit left every row to the journal (write_now)
        self.retention_days = retention_days
        self.detector = detector
        self.metrics = WriterMetrics(registry)
        self.on_flushed = on_flushed
        self._rows: list[Row] = []
        self._events: list[Item] = []  # replica ("e") and scale ("s") events, in the order they came
        self._wake = asyncio.Event()
        self._waiters: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._outage = False
        self._schema_ready = False
        self._sqlite_identity: tuple[int, int] | None = None
        self._io = threading.Lock()  # the flush thread and a forced exit's synchronous write
        self._last_retention = float("-inf")
        self.seq = 0  # rows submitted so far
        self.flushed_seq = 0  # rows handed to the database (or the spool) so far

    # -- the request path ------------------------------------------------------------------------

    def submit(self, row: Row) -> int:
        """Queue one usage row; returns its sequence number. Never waits for the database.

        The row is fitted to its table in the flush thread, off the event loop; with a journal, here,
        because the journal line must hold what will be stored.
        """
        if self.journal is not None:
            row = _RECORDS.fit(row)
            self.journal.append("r", row)
        self.seq += 1
        self._rows.append(row)
        if len(self._rows) >= self.batch_size:
            self._wake.set()
        return self.seq

    def submit_event(self, event: ReplicaEvent) -> None:
        row = _EVENTS.fit(
            {
                "time": event.time,
                "pool": event.pool,
                "replica": event.replica,
                "from_state": event.from_state,
                "to_state": event.to_state,
                "reason": event.reason,
                "duration_s": event.duration_s,
            }
        )
        self._queue_event("e", row)

    def submit_scale_event(self, event: ScaleEvent) -> None:
        self._queue_event("s", _SCALES.fit({name: getattr(event, name) for name in _SCALE_FIELDS}))

    def _queue_event(self, kind: str, row: Row) -> None:
        if self.journal is not None:
            self.journal.append(kind, row)
        self._events.append((kind, row))

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Write what a previous run left in the journal (wal), then start the owner task."""
        if self.journal is not None:
            pending = self.journal.pending()
            if pending:
                log.info("usage journal: %d rows from the previous run", len(pending))
                await asyncio.to_thread(self._deliver_locked, pending)
            self.journal.discard_pending()
            self.journal.open()
        self._task = asyncio.create_task(self._run(), name="usage-writer")

    async def stop(self) -> None:
        """Write everything still queued, then end the task."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        if self.journal is not None:
            self.journal.close()

    async def flush(self) -> None:
        """Ask the owner task to write what is queued now, and wait until it did (or tried: a flush that
        fails is logged by the task, and its rows are spooled or dead-lettered as usual)."""
        if self._task is None:
            raise RuntimeError("the usage writer is not running")
        if self._task.done():
            return  # stopped: everything was written on the way out
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(done)
        self._wake.set()
        await asyncio.shield(done)

    def write_now(self, rows: list[Row]) -> None:
        """A forced exit: write ``rows`` and everything queued before returning (blocks the loop).

        With a journal they are appended to it (fsync'd) and written by the next start; otherwise they
        go to the database, or the spool when it cannot be reached.
        """
        if self.journal is not None:
            for row in rows:
                self.journal.append("r", _RECORDS.fit(row))
            self.journal.sync()
            # The journal now holds everything (queued rows were journaled when submitted): the next start
            # writes it, once. A flush that still ran here would move it aside and delete it.
            self._rows, self._events = [], []
            self._handed_over = True
            return
        items = _fitted([*self._rows, *rows], self._events)
        self._rows, self._events = [], []
        if not self._io.acquire(timeout=FORCED_LOCK_WAIT_S):
            jsonl.append(self.spool_path, items)  # a flush thread is stuck on the database
            return
        try:
            self._deliver(items)
        finally:
            self._io.release()

    # -- the owner task ----------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not self._wake.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
            self._wake.clear()
            stopping = self._stopping
            waiters, self._waiters = self._waiters, []
            try:
                await self._flush()
                if not stopping:
                    await self._maybe_apply_retention()
            except Exception:  # the writer must outlive any one bad batch
                log.exception("usage writer: flush failed")
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            if stopping:
                return

    async def _flush(self) -> None:
        if self._handed_over:
            return
        rows, self._rows = self._rows, []
        events, self._events = self._events, []
        self.metrics.queued.set(0)
        if self.journal is not None:
            self.journal.rotate()
        if not rows and not events and not self._outage and self._schema_ready and not self.spool_path.exists():
            return
        seq = self.flushed_seq + len(rows)
        # Anomaly statistics cost milliseconds per batch: off the event loop, with the write. Only the
        # owner task flushes, so the detector has one user at a time.
        written = await asyncio.to_thread(self._flag_and_deliver, rows, events)
        self.flushed_seq = seq
        if written is not None:
            self.metrics.written.inc(written)
            if self.on_flushed is not None:
                self.on_flushed(seq)

    def _flag_and_deliver(self, rows: list[Row], events: list[Item]) -> int | None:
        items = _fitted(rows, events)
        if self.detector is not None:
            self._flag_anomalies([row for _, row in items[: len(rows)]])
        return self._deliver_locked(items)

    def _flag_anomalies(self, rows: list[Row]) -> None:
        assert self.detector is not None
        for row in rows:
            tokens = (row.get("prompt_tokens") or 0) + (row.get("completion_tokens") or 0)
            if row.get("status") == 200 and tokens and self.detector.check(row.get("key_id"), row.get("pool"), tokens):
                row["anomaly"] = True
                self.metrics.anomalies.labels(row.get("pool") or "-").inc()

    # -- delivery (worker thread) --------------------------------------------------------------------

    def _deliver_locked(self, items: list[Item]) -> int | None:
        with self._io:
            written = self._deliver(items)
        if self.journal is not None:
            self.journal.done()  # its lines are in the database, the spool or the dead-letter file now
        return written

    def _deliver(self, new: list[Item]) -> int | None:
        """Spool first (oldest), then ``new``. Returns the usage rows written, None when the database is away."""
        try:
            if self._outage and not self._reachable():
                raise ConnectionError("still unreachable")
            self._check_database()
        except Exception as exc:
            self._spool(new, already=0, exc=exc)
            self.metrics.spooled.inc(len(new))
            return None
        old = jsonl.read(self.spool_path) if self.spool_path.exists() else []
        items = old + new
        done, written = self._insert_all(items)
        if done < len(items):
            # the spool still holds all of ``old`` when nothing was handled; otherwise it is rewritten
            self._spool(items[done:], already=len(old) if done == 0 else None, exc=None)
            self.metrics.spooled.inc(min(len(new), len(items) - done))
            return None
        if old:
            self.spool_path.unlink(missing_ok=True)
        if self._outage:
            log.warning("accounting database is back; spool replayed")
        self._outage = False
        return written

    def _insert_all(self, items: list[Item]) -> tuple[int, int]:
        """Insert in transactions of ``batch_size``, isolating refused rows by halving.

        Returns (items handled, usage rows written). Items are handled in order, so what is left when
        the database becomes unreachable midway is the suffix ``items[handled:]``.
        """
        handled = written = 0
        bs = self.batch_size
        stack = [items[i : i + bs] for i in reversed(range(0, len(items), bs))]
        while stack:
            chunk = stack.pop()
            try:
                store.insert_items(self.engine, chunk)
            except Exception as exc:
                if _transient(exc) or not self._reachable():
                    return handled, written
                if len(chunk) > 1:
                    mid = len(chunk) // 2
                    stack += (chunk[mid:], chunk[:mid])
                    continue
                self._dead_letter(chunk[0], exc)
                handled += 1
                continue
            handled += len(chunk)
            written += sum(1 for kind, _ in chunk if kind == "r")
        return handled, written

    def _reachable(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except Exception:
            return False
        return True

    def _check_database(self) -> None:
        """Migrate on first use, and again when the SQLite file was deleted or replaced under us."""
        path = _sqlite_file(self.engine)
        if path is not None and self._schema_ready:
            now = _file_identity(path)
            if now != self._sqlite_identity:
                log.warning(
                    "the accounting database %s was %s; opening it anew",
                    path,
                    "deleted" if now is None else "replaced",
                )
                self._schema_ready = False
                self.engine.dispose()  # connections to the old file must not be reused
                _set_aside_stale_wal(path)
        if not self._schema_ready:
            # No dispose here: other threads (the auth gate's refresh, reports) may hold pooled connections,
            # and a disposed pool drops those still open.
            store.migrate(self.engine)
            if path is not None:
                self._sqlite_identity = _file_identity(path)
            self._schema_ready = True

    def _spool(self, items: list[Item], *, already: int | None, exc: Exception | None) -> None:
        """Keep ``items`` in the spool, whose file holds the first ``already`` of them (None: rewrite it)."""
        if not self._outage:
            log.warning("accounting database unreachable (%s); spooling to %s", exc or "lost", self.spool_path)
        self._outage = True
        if already is None and self.spool_path.exists():
            jsonl.replace(self.spool_path, items)
        else:
            jsonl.append(self.spool_path, items[already or 0 :])

    def _dead_letter(self, item: Item, exc: Exception) -> None:
        kind, row = item
        error = str(getattr(exc, "orig", None) or exc).splitlines()[0][:500] if str(exc) else type(exc).__name__
        self.dead_letter_path.parent.mkdir(parents=True, exist_ok=True)
        with self.dead_letter_path.open("ab") as f:
            f.write(jsonl.line(kind, row, error=error, at=self.clock.wall()))
            f.flush()
            os.fsync(f.fileno())
        self.metrics.dead_lettered.inc()
        log.error(
            "the database refused %s %s (%s); moved to %s",
            _NAMES.get(kind, kind),
            row.get("request_id") or row.get("replica") or f"{row.get('pool')}/{row.get('action')}",
            error,
            self.dead_letter_path,
        )

    async def _maybe_apply_retention(self) -> None:
        if self.retention_days <= 0:
            return
        now = self.clock.monotonic()
        if now - self._last_retention < RETENTION_EVERY_S:
            return
        self._last_retention = now
        cutoff = self.clock.wall() - self.retention_days * 86400
        deleted = await asyncio.to_thread(store.delete_older_than, self.engine, cutoff)
        if deleted:
            log.info("retention: deleted %d rows older than %g days", deleted, self.retention_days)


class EventWriter:
    """The :class:`~frugalserve.events.EventSink` the lifecycle and the autoscaler emit to: each event goes
    to the usage writer, as a row of ``replica_events`` or of ``scale_events`` by its type."""

    def __init__(self, writer: UsageWriter) -> None:
        self._writer = writer

    def submit(self, event: Event) -> None:
        if isinstance(event, ScaleEvent):
            self._writer.submit_scale_event(event)
        else:
            self._writer.submit_event(event)
