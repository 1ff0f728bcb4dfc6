"""What a gateway builds for accounting: the store, the usage writer, the gate, and the record sink.

The gateway calls :meth:`Accounting.admit` once per request (after the model and pool are known) and
hands finished records to :meth:`Accounting.submit` (its record sink). Both return without touching the
database. Replica lifecycle events and the autoscaler's scale events go to :attr:`Accounting.events`.
Admitted records are known until they are submitted, so a forced exit (:meth:`Accounting.on_forced_exit`)
still writes one for each.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import os
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from frugalserve.accounting import costs, receipt, store
from frugalserve.accounting.anomalies import AnomalyDetector
from frugalserve.accounting.auth import Gate
from frugalserve.accounting.jsonl import Journal
from frugalserve.accounting.keys import ApiKey
from frugalserve.accounting.receipt import Receipt
from frugalserve.accounting.store import RECORD_COLUMNS
from frugalserve.accounting.writer import EventWriter, UsageWriter
from frugalserve.clock import Clock
from frugalserve.config import Config
from frugalserve.errors import InvalidRequest, ServiceUnavailable
from frugalserve.events import Event, EventSink, RecentEvents
from frugalserve.records import RecentRecords, RequestRecord

if TYPE_CHECKING:
    from frugalserve.lifecycle.scaler import ArrivalsReader

log = logging.getLogger("frugalserve.accounting")

ACCOUNTING_OFF = "Accounting is off (accounting.enabled: false): no cost is computed."
NEVER_RAN = "It never reached a replica (refused, or its client left while it waited): no GPU time."
# What a request still in flight is recorded as when the gateway is forced to exit.
SHUTDOWN_STATUS = 499
SHUTDOWN_CODE = "gateway_shutdown"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_open(config: Config, host: str) -> bool:
    """Say loudly when a gateway without auth listens beyond loopback (a local demo is fine)."""
    if config.auth.enabled or is_loopback(host):
        return False
    log.warning(
        "!!! AUTH IS OFF and the gateway listens on %s: anyone who can reach it can use your GPUs. "
        "Set auth.enabled: true and create keys with `frugalserve keys create`. !!!",
        host,
    )
    return True


class Accounting:
    def __init__(self, config: Config, clock: Clock, registry: CollectorRegistry, recent: RecentRecords) -> None:
        self.config = config
        self.clock = clock
        self.recent = recent
        acc = config.accounting
        self.gateway_id = f"{socket.gethostname()}:{os.getpid()}"[:64]
        self.engine = store.create_engine(config.gateway.database) if acc.enabled or config.auth.enabled else None
        self.writer: UsageWriter | None = None
        self.events: EventSink = RecentEvents()
        if acc.enabled and self.engine is not None:
            self.writer = UsageWriter(
                self.engine,
                clock,
                registry,
                batch_size=acc.batch_size,
                flush_interval_s=acc.flush_interval_s,
                spool_path=acc.spool_path,
                dead_letter_path=acc.dead_letter_path,
                journal=Journal(acc.journal_path, fsync=acc.journal_fsync) if acc.durability == "wal" else None,
                retention_days=acc.retention_days,
                detector=AnomalyDetector(acc.anomaly_threshold, acc.anomaly_history, acc.anomaly_min_history),
                on_flushed=self._confirmed,
            )
            self.events = EventWriter(self.writer)
        self._confirmed_seq = 0
        self.gate = Gate(self.engine, config.auth, acc, clock, confirmed_seq=lambda: self._confirmed_seq)
        # dollars per second of one replica of each pool
        self._usd_per_s = {p.name: p.gpu.usd_per_hour * p.gpu.count / 3600 for p in config.pools}
        self._in_flight: dict[str, int] = {}
        self._open: dict[int, RequestRecord] = {}  # admitted, not yet submitted (by id())
        self._forced = False

    def _confirmed(self, seq: int) -> None:
        self._confirmed_seq = seq

    # -- lifecycle -------------------------------------------------------------------------------

    def arrivals_reader(self) -> ArrivalsReader | None:
        """Arrivals per pool from the usage records, for predictive prewarm (None without a database)."""
        engine = self.engine
        predictive = any(p.lifecycle.predictive_prewarm.enabled for p in self.config.pools)
        if engine is None or not self.config.accounting.enabled or not predictive:
            return None
        from frugalserve.accounting.arrivals import arrival_counts

        return lambda pool, since, until, bucket_s: arrival_counts(engine, pool, since, until, bucket_s)

    async def start(self) -> None:
        if self.engine is not None:
            try:
                await asyncio.to_thread(store.migrate, self.engine)
            except Exception as exc:
                if self.config.auth.enabled:
                    raise  # no keys, no service
                log.warning("accounting database unavailable at startup (%s); records go to the spool", exc)
        if self.writer is not None:
            await self.writer.start()
        await self.gate.start()
        if self.config.auth.enabled and not any(k.revoked_at is None for k in self.gate.keys.values()):
            log.warning("auth is on but there are no active API keys: every request will get 401")

    async def stop(self) -> None:
        await self.gate.stop()
        if self.writer is not None:
            await self.writer.stop()
        if self.engine is not None:
            self.engine.dispose()

    # -- the request path ------------------------------------------------------------------------

    def admit(self, key: ApiKey | None, record: RequestRecord) -> None:
        """Authorize the authenticated request (``key`` from ``gate.authenticate``) for its model (raises its
        403/429) and note it as in flight on its pool."""
        self.authorize(key, record)
        self.enter(record)

    def authorize(self, key: ApiKey | None, record: RequestRecord) -> None:
        """May ``key`` use ``record.model`` now (403, 429); ``model: "auto"`` is authorized before its pool is known."""
        if key is not None:
            record.key_id = key.id  # a 403 or 429 that follows is the key's too
            self.gate.authorize(key, record.model)

    def enter(self, record: RequestRecord) -> None:
        """Note the authorized request as in flight on its pool (until :meth:`submit`)."""
        self._join(record)
        self._open[id(record)] = record

    def move(self, record: RequestRecord, pool: str) -> None:
        """The request left its pool for another before any answer (a fallback, the cascade's next tier)."""
        old = record.pool or "-"
        self._in_flight[old] = self._in_flight.get(old, 1) - 1
        record.pool = pool
        self._join(record)

    def _join(self, record: RequestRecord) -> None:
        pool = record.pool or "-"
        n = self._in_flight.get(pool, 0) + 1
        self._in_flight[pool] = n
        record.concurrency = n

    def submit(self, record: RequestRecord) -> None:
        """The gateway's record sink: never blocks (except after a forced exit, see below)."""
        self.recent.submit(record)
        cost = 0.0
        if self._open.pop(id(record), None) is not None:  # admitted: in flight until now
            cost = self._release(record)
        elif self._forced and record.concurrency:
            return  # already written as in flight by on_forced_exit
        if self.writer is None:
            return
        if self._forced:  # the writer task is gone; nothing may wait in memory
            self.writer.write_now([self.row(record, cost)])
            return
        seq = self.writer.submit(self.row(record, cost))
        if record.key_id is not None:
            tokens = (record.prompt_tokens or 0) + (record.completion_tokens or 0)
            self.gate.charge(record.key_id, cost, tokens, seq)

    def _release(self, record: RequestRecord) -> float:
        """End an admitted request's stay on its pool; returns its cost estimate for budgets."""
        pool = record.pool or "-"
        end = self._in_flight.get(pool, 1)
        self._in_flight[pool] = end - 1
        # The replica's price over the time the request ran on it (not its wait for a cold start, which
        # is the pool's, nor anything when it never reached a replica), shared with the requests in
        # flight around it. Reports recompute the exact share from all records and events (costs.py).
        if record.replica is None:
            return 0.0
        ran_s = max(0.0, (record.duration_s or 0.0) - (record.cold_start_wait_s or 0.0))
        share = (record.concurrency + end) / 2
        return self._usd_per_s.get(pool, 0.0) * ran_s / max(1.0, share)

    def record_of(self, row: Mapping[str, Any]) -> RequestRecord:
        """A stored ``usage_records`` row as the record it was written from."""
        return RequestRecord(**{name: row[column] for column, name in RECORD_COLUMNS}, started_mono=0.0)

    def row(self, record: RequestRecord, cost: float) -> dict[str, Any]:
        row: dict[str, Any] = {column: getattr(record, name) for column, name in RECORD_COLUMNS}
        row.update(gateway=self.gateway_id, cost_usd=cost, anomaly=False)
        return row

    def on_forced_exit(self) -> None:
        """The process is about to exit without waiting for open requests (a second SIGTERM).

        Each request still in flight is recorded now as status 499 ``gateway_shutdown`` with the time it
        ran so far, and those rows and every queued one are written (or spooled, or journaled) before this
        returns. Runs on the event loop, which it blocks while it writes.
        """
        if self._forced:
            return
        self._forced = True
        now = self.clock.monotonic()
        rows = []
        for record in self._open.values():
            ended = dataclasses.replace(
                record,
                status=SHUTDOWN_STATUS,
                error_code=SHUTDOWN_CODE,
                duration_s=now - record.started_mono,
            )
            rows.append(self.row(ended, self._release(ended)))
        self._open.clear()
        log.warning("forced exit: writing %d in-flight records and what is queued", len(rows))
        if self.writer is not None:
            self.writer.write_now(rows)

    # -- admin -----------------------------------------------------------------------------------

    async def usage_report(self, query: Mapping[str, str]) -> dict[str, Any]:
        """``GET /admin/usage?since=7d&until=...&by=pool|day|hour|key|model[&anomalies=1]``: the report as JSON
        (behind the admin gate, api/admin.py)."""
        from frugalserve.accounting import report

        if self.engine is None:
            raise InvalidRequest("Accounting is off (accounting.enabled: false).")
        now = self.clock.wall()
        by = query.get("by", "pool")
        if by not in report.GROUPS:
            raise InvalidRequest(f"by must be one of {', '.join(report.GROUPS)}.", param="by")
        try:
            since = report.parse_when(query["since"], now) if query.get("since") else None
            until = report.parse_when(query["until"], now) if query.get("until") else now
        except ValueError as exc:
            raise InvalidRequest(f"since/until: {exc}", param="since") from None
        if self.writer is not None:
            await self.writer.flush()
        engine = self.engine

        def read() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], dict[str, str]]:
            records, events = report.load(engine, since, until)
            scales = report.load_scale_events(engine, since, until)
            return records, events, scales, report.key_names(engine) if by == "key" else {}

        records, events, scales, names = await asyncio.to_thread(read)
        if query.get("anomalies"):
            return {"anomalies": report.anomalies(records)}
        rows = report.build(records, events, report.prices_of(self.config), since, until, by, names, scales)
        return {"since": since, "until": until, "by": by, "rows": rows}

    async def newest_events(self, memory: RecentEvents, pool: str | None, limit: int) -> list[Event]:
        """``GET /admin/events``: the last replica and scale events, newest first. From the database when
        accounting is on (every gateway writes there, and it outlives restarts), else from ``memory``
        (this gateway's own, since it started)."""
        engine = self.engine
        if self.writer is None or engine is None:
            return memory.newest(pool, limit)
        await self.writer.flush()
        return await asyncio.to_thread(store.newest_events, engine, pool, limit)

    # -- a client's own request ------------------------------------------------------------------

    async def receipt(self, request_id: str, key_id: str | None) -> Receipt | None:
        """``GET /v1/requests/{id}``: the finished request with this id (of API key ``key_id`` only, unless
        None) and its cost (accounting/receipt.py); None when there is none. A request just answered is found
        in this gateway's memory; older ones, and those of other gateways, in the database (accounting on)."""
        record = self.recent.find(request_id, key_id)
        engine, writer = self.engine, self.writer
        if writer is None or engine is None:
            return None if record is None else Receipt(record, None, ACCOUNTING_OFF)
        await writer.flush()  # its own row (if it left memory), the requests beside it, its replica's events
        if record is None:
            try:
                row = await asyncio.to_thread(receipt.find_row, engine, request_id, key_id)
            except sa.exc.SQLAlchemyError as exc:
                log.warning("GET /v1/requests/%s: the database could not be read: %s", request_id, exc)
                raise ServiceUnavailable("The accounting database could not be read; try again.") from None
            if row is None:
                return None
            record = self.record_of(row)
        pool, replica = record.pool, record.replica
        if pool is None or replica is None:
            return Receipt(record, costs.NO_SHARE, NEVER_RAN)
        from frugalserve.accounting.report import prices_of

        price = prices_of(self.config).get(pool)
        if price is None:
            return Receipt(
                record, None, f"The pool {pool!r} is not in this gateway's configuration: its price is unknown."
            )
        start, end = costs.run_span(receipt.attribution_row(record))
        try:
            beside, events = await asyncio.to_thread(receipt.neighbours, engine, pool, replica, start, end)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("GET /v1/requests/%s: the database could not be read: %s", request_id, exc)
            return Receipt(record, None, "The accounting database could not be read; try again.")
        share = receipt.share(record, beside, events, price)
        running = sum(
            1
            for r in self._open.values()
            if r.pool == pool and r.replica == replica and r.started_wall + (r.cold_start_wait_s or 0.0) < end
        )
        note = None
        if running:
            note = (
                f"{running} request(s) still running on {replica} when it ended are not counted yet: "
                "its share can only shrink once they finish."
            )
        return Receipt(record, share, note)
