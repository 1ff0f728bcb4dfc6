"""Arrivals per time bucket for one pool, counted by the database (the input of predictive prewarm).

The usage table may hold millions of rows, so the counting is one ``GROUP BY`` on the database and only
one row per non-empty bucket comes back. Synchronous: callers on the event loop run it in a thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from frugalserve.accounting.store import usage_records


@dataclass(frozen=True, slots=True)
class Arrivals:
    counts: Mapping[int, int]  # records per bucket, by absolute index floor(time / bucket_s); empty buckets absent
    mean_duration_s: float  # mean duration_s of the counted records that have one (0.0: none)
    first_record: float | None  # the pool's earliest record in the whole table (None: it has none)


def _bucket_index(dialect: str, bucket_s: float) -> sa.ColumnElement[int]:
    """floor(time / bucket_s) as an integer, the same on both databases.

    PostgreSQL rounds a float cast to an integer (k - 0.4 would land in bucket k), so it floors first.
    SQLite truncates a cast, which is the floor for times since the epoch (never negative); its floor()
    exists only in builds with the math functions.
    """
    q = usage_records.c.time / sa.literal(float(bucket_s), sa.Float())
    if dialect == "sqlite":
        return sa.cast(q, sa.Integer())
    return sa.cast(sa.func.floor(q), sa.BigInteger())


def arrival_counts(engine: Engine, pool: str, since: float, until: float, bucket_s: float) -> Arrivals:
    """Every record of ``pool`` with ``since <= time < until``, whatever its status: an arrival is an arrival."""
    if bucket_s <= 0:
        raise ValueError(f"bucket_s must be > 0, got {bucket_s}")
    c = usage_records.c
    in_range = sa.and_(c.pool == pool, c.time >= since, c.time < until)
    # grouped by the label of a subquery: PostgreSQL does not see two copies of an expression with a bound
    # parameter (one in SELECT, one in GROUP BY) as the same expression
    buckets = sa.select(_bucket_index(engine.dialect.name, bucket_s).label("b")).where(in_range).subquery()
    by_bucket = sa.select(buckets.c.b, sa.func.count()).group_by(buckets.c.b)
    with engine.connect() as conn:
        counts = {int(b): int(n) for b, n in conn.execute(by_bucket)}
        mean = conn.execute(sa.select(sa.func.avg(c.duration_s)).where(in_range)).scalar_one()
        first = conn.execute(sa.select(sa.func.min(c.time)).where(c.pool == pool)).scalar_one()
    return Arrivals(counts, float(mean or 0.0), None if first is None else float(first))
