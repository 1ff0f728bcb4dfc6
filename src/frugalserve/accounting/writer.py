"""The usage writer: the one owner of unwritten usage rows and replica events.

The request path calls :meth:`UsageWriter.submit` (a list append) and never waits for the database.
One task takes what has queued up every ``flush_interval_s`` (or at once when ``batch_size`` rows wait),
flags anomalies, and inserts it in one transaction in a worker thread. When the database cannot be
reached the batch is appended to a local JSONL spool file and replayed, oldest first, by the first flush
that succeeds again. :meth:`stop` writes what is left (or spools it) before the gateway exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy.engine import Engine

from frugalserve.accounting import store
from frugalserve.accounting.anomalies import AnomalyDetector
from frugalserve.clock import Clock
from frugalserve.events import ReplicaEvent

log = logging.getLogger("frugalserve.accounting")

RETENTION_EVERY_S = 3600.0
Row = dict[str, Any]


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
        self.queued = Gauge("frugalserve_usage_queue", "Usage records waiting to be written.", registry=registry)
        self.anomalies = Counter(
            "frugalserve_token_anomalies",
            "Requests whose token count is an outlier for their key and pool (median/MAD).",
            ["pool"],
            registry=registry,
        )


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
        retention_days: float = 0.0,
        detector: AnomalyDetector | None = None,
        on_flushed: Callable[[int], None] | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.spool_path = Path(spool_path)
        self.retention_days = retention_days
        self.detector = detector
        self.metrics = WriterMetrics(registry)
        self.on_flushed = on_flushed
        self._rows: list[Row] = []
        self._events: list[Row] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._outage = False
        self._last_retention = float("-inf")
        self.seq = 0  # rows submitted so far
        self.flushed_seq = 0  # rows handed to the database (or the spool) so far

    # -- the request path ------------------------------------------------------------------------

    def submit(self, row: Row) -> int:
        """Queue one usage row; returns its sequence number. Never blocks."""
        self.seq += 1
        self._rows.append(row)
        if len(self._rows) >= self.batch_size:
            self._wake.set()
        return self.seq

    def submit_event(self, event: ReplicaEvent) -> None:
        self._events.append(
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

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-writer")

    async def stop(self) -> None:
        """Write everything still queued, then end the task."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def flush(self) -> None:
        """Write what is queued now (tests, benchmarks); the task does this on its own."""
        await self._flush()

    # -- the owner task ----------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
            self._wake.clear()
            try:
                await self._flush()
                await self._maybe_apply_retention()
            except Exception:  # the writer must outlive any one bad batch
                log.exception("usage writer: flush failed")
        await self._flush()

    async def _flush(self) -> None:
        rows, self._rows = self._rows, []
        events, self._events = self._events, []
        self.metrics.queued.set(len(self._rows))
        if not rows and not events and not (self._outage or self.spool_path.exists()):
            return
        seq = self.flushed_seq + len(rows)
        # Anomaly statistics cost milliseconds per batch: off the event loop, with the write. Flushes never
        # overlap (one writer task), so the detector has one user at a time.
        ok = await asyncio.to_thread(self._flag_and_write, rows, events)
        self.flushed_seq = seq
        if ok:
            self.metrics.written.inc(len(rows))
            if self.on_flushed is not None:
                self.on_flushed(seq)

    def _flag_and_write(self, rows: list[Row], events: list[Row]) -> bool:
        if self.detector is not None:
            self._flag_anomalies(rows)
        return self._write_or_spool(rows, events)

    def _flag_anomalies(self, rows: list[Row]) -> None:
        assert self.detector is not None
        for row in rows:
            tokens = (row.get("prompt_tokens") or 0) + (row.get("completion_tokens") or 0)
            if row.get("status") == 200 and tokens and self.detector.check(row.get("key_id"), row.get("pool"), tokens):
                row["anomaly"] = True
                self.metrics.anomalies.labels(row.get("pool") or "-").inc()

    def _write_or_spool(self, rows: list[Row], events: list[Row]) -> bool:
        """Runs in a worker thread. True when the batch reached the database."""
        try:
            if self.spool_path.exists():
                self._replay_spool()
            for i in range(0, max(len(rows), 1), self.batch_size):
                store.insert_batch(self.engine, rows[i : i + self.batch_size], events if i == 0 else ())
        except Exception as exc:
            if not self._outage:
                log.warning("accounting database unreachable (%s); spooling to %s", exc, self.spool_path)
            self._outage = True
            self._spool(rows, events)
            return False
        if self._outage:
            log.warning("accounting database is back; spool replayed")
        self._outage = False
        return True

    def _spool(self, rows: list[Row], events: list[Row]) -> None:
        if not rows and not events:
            return
        self.spool_path.parent.mkdir(parents=True, exist_ok=True)
        with self.spool_path.open("ab") as f:
            for row in rows:
                f.write(orjson.dumps({"r": row}) + b"\n")
            for ev in events:
                f.write(orjson.dumps({"e": ev}) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        self.metrics.spooled.inc(len(rows) + len(events))

    def _replay_spool(self) -> None:
        """Insert the spool's lines in batches, then remove it. A torn last line (a crash mid-write) is skipped."""
        rows: list[Row] = []
        events: list[Row] = []
        with self.spool_path.open("rb") as f:
            for line in f:
                try:
                    item = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if "r" in item:
                    rows.append(item["r"])
                elif "e" in item:
                    events.append(item["e"])
        store.insert_batch(self.engine, rows, events)  # one transaction: replayed whole or not at all
        self.spool_path.unlink()

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
    """The :class:`~frugalserve.events.EventSink` the lifecycle emits to: events go to the usage writer."""

    def __init__(self, writer: UsageWriter) -> None:
        self._writer = writer

    def submit(self, event: ReplicaEvent) -> None:
        self._writer.submit_event(event)
