"""What one finished request cost: its share of its replica's busy time (``GET /v1/requests/{id}``).

The share comes from the one attribution the reports use (:func:`costs.attribute`), run over the
requests on the same replica whose run spans overlap this one's, and that replica's events, with the
window this request's own run span. A request's share only accrues while it runs, and each request's
token work density is that of its whole run, so this is the share ``frugalserve report`` gives it over
any window that holds its run (a day, a month), once every request beside it has finished and been
written. Requests still running beside it then are not counted yet: its share can only shrink when they
are (the caller says so).

The queries read from the database (:func:`neighbours`); the rest is pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from frugalserve.accounting import costs
from frugalserve.accounting.store import RECORD_COLUMNS, replica_events, usage_records
from frugalserve.records import RequestRecord

# How far back a request beside this one may have started (the query needs a bound to use its index; no
# request runs for a day).
LOOKBACK_S = 86400.0
# What the attribution reads of a record (costs.run_span, the token work density), by column.
_COLUMNS = (
    "request_id",
    "time",
    "pool",
    "replica",
    "duration_s",
    "cold_start_wait_s",
    "prompt_tokens",
    "completion_tokens",
)


@dataclass(frozen=True)
class Receipt:
    """One finished request as stored, and its cost (None when it cannot be told; ``cost_note`` says why)."""

    record: RequestRecord
    cost: costs.Share | None
    cost_note: str | None = None


def attribution_row(record: RequestRecord) -> dict[str, Any]:
    """The record as the attribution reads a ``usage_records`` row (the columns it reads, by the one
    record-to-column contract the writer uses)."""
    return {column: getattr(record, name) for column, name in RECORD_COLUMNS if column in _COLUMNS}


def find_row(engine: Engine, request_id: str, key_id: str | None) -> dict[str, Any] | None:
    """The newest stored record with this id (of this key only, unless ``key_id`` is None)."""
    c = usage_records.c
    q = sa.select(usage_records).where(c.request_id == request_id)
    if key_id is not None:
        q = q.where(c.key_id == key_id)
    with engine.connect() as conn:
        row = conn.execute(q.order_by(c.time.desc(), c.id.desc()).limit(1)).first()
    return dict(row._mapping) if row is not None else None


def neighbours(
    engine: Engine, pool: str, replica: str, start: float, end: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The stored requests on ``replica`` that ran during ``[start, end)``, and the replica's events from the
    last one at or before ``start`` (the state it was in then) to ``end``."""
    c, e = usage_records.c, replica_events.c
    rq = sa.select(*(c[n] for n in _COLUMNS)).where(
        c.pool == pool,
        c.replica == replica,
        c.time < end,
        c.time >= start - LOOKBACK_S,
        c.time + sa.func.coalesce(c.duration_s, 0.0) > start,
    )
    mine = sa.and_(e.pool == pool, e.replica == replica)
    eq = sa.select(e.time, e.pool, e.replica, e.from_state, e.to_state, e.reason)
    with engine.connect() as conn:
        records = [dict(r._mapping) for r in conn.execute(rq.order_by(c.time))]
        before = conn.execute(sa.select(sa.func.max(e.time)).where(mine, e.time <= start)).scalar()
        since = before if before is not None else start
        events = [
            dict(r._mapping) for r in conn.execute(eq.where(mine, e.time >= since, e.time < end).order_by(e.time))
        ]
    return records, events


def share(
    record: RequestRecord,
    beside: list[dict[str, Any]],
    events: list[dict[str, Any]],
    price: costs.Price,
) -> costs.Share:
    """``record``'s share of its replica's busy time, among the requests ``beside`` it (stored rows; the record's
    own row among them, if stored, is left out: the record itself is what counts)."""
    mine = attribution_row(record)
    others = [r for r in beside if not _same(r, mine)]
    start, end = costs.run_span(mine)
    att = costs.attribute([mine, *others], events, {str(record.pool): price}, start, end)
    return att.shares[0]


def _same(row: Mapping[str, Any], mine: Mapping[str, Any]) -> bool:
    return bool(row["request_id"] == mine["request_id"] and row["time"] == mine["time"])
