"""The accounting database: tables, engine, migrations, and the few queries the gateway needs.

SQLAlchemy Core over a synchronous engine; callers on the event loop run these functions in a thread
(:func:`asyncio.to_thread`), so the request path never waits on the database. SQLite (a file, WAL) is
the default; PostgreSQL is chosen by URL (``postgresql://`` is read as ``postgresql+psycopg://``).
Times are stored as float seconds since the epoch: cheap to compare, the same on both databases.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from frugalserve.events import Event, ReplicaEvent, ScaleEvent

CONNECT_TIMEOUT_S = 5
metadata = sa.MetaData()

usage_records = sa.Table(
    "usage_records",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(128), nullable=False),
    sa.Column("time", sa.Float, nullable=False),  # request start, epoch seconds
    sa.Column("gateway", sa.String(64)),
    sa.Column("key_id", sa.String(32)),
    sa.Column("endpoint", sa.String(16), nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("pool", sa.String(100)),
    sa.Column("replica", sa.String(100)),
    sa.Column("tier", sa.String(50)),
    sa.Column("routing_reason", sa.Text),  # the x-frugalserve-route line
    sa.Column("stream", sa.Boolean, nullable=False, default=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("error_code", sa.String(64)),
    sa.Column("prompt_tokens", sa.Integer),  # the backend's usage
    sa.Column("completion_tokens", sa.Integer),
    sa.Column("counted_prompt_tokens", sa.Integer),  # the gateway's exact count before dispatch
    sa.Column("prompt_text_tokens", sa.Integer),
    sa.Column("prompt_image_tokens", sa.Integer),
    sa.Column("prompt_video_tokens", sa.Integer),
    sa.Column("image_tokens_saved", sa.Integer),
    sa.Column("images_resized", sa.Integer),
    sa.Column("duplicates_dropped", sa.Integer),
    sa.Column("max_tokens_requested", sa.Integer),
    sa.Column("max_tokens", sa.Integer),
    sa.Column("notes", sa.String(1000)),
    sa.Column("usage_note", sa.String(200)),
    sa.Column("duration_s", sa.Float),
    sa.Column("ttft_s", sa.Float),
    sa.Column("cold_start_wait_s", sa.Float),
    sa.Column("client_disconnected", sa.Boolean, nullable=False, default=False),
    sa.Column("concurrency", sa.Integer),
    sa.Column("cost_usd", sa.Float),  # estimate at finish (what budgets count); reports recompute exactly
    sa.Column("anomaly", sa.Boolean, nullable=False, default=False),
    sa.Index("ix_usage_time", "time"),
    sa.Index("ix_usage_key_time", "key_id", "time"),
    sa.Index("ix_usage_pool_time", "pool", "time"),
    sa.Index("ix_usage_model_time", "model", "time"),
    sa.Index("ix_usage_request_id", "request_id"),  # GET /v1/requests/{id}
)

# usage_records columns that accounting fills itself; every other column is the RequestRecord field of the
# same name, except the two renamed below. tests/accounting/test_record_contract.py checks both directions.
COMPUTED_COLUMNS = frozenset({"id", "gateway", "cost_usd", "anomaly"})
RENAMED_COLUMNS = {"time": "started_wall", "ttft_s": "ttfb_s"}
RECORD_COLUMNS: tuple[tuple[str, str], ...] = tuple(
    (c.name, RENAMED_COLUMNS.get(c.name, c.name)) for c in usage_records.columns if c.name not in COMPUTED_COLUMNS
)

replica_events = sa.Table(
    "replica_events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("time", sa.Float, nullable=False),
    sa.Column("pool", sa.String(100), nullable=False),
    sa.Column("replica", sa.String(100), nullable=False),
    sa.Column("from_state", sa.String(16), nullable=False),
    sa.Column("to_state", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(64), nullable=False),
    sa.Column("duration_s", sa.Float),
    sa.Index("ix_events_pool_time", "pool", "time"),
    sa.Index("ix_events_time", "time"),
)

# One row per autoscaler decision (events.ScaleEvent, the same names): what it did, from what, and why.
scale_events = sa.Table(
    "scale_events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("time", sa.Float, nullable=False),
    sa.Column("pool", sa.String(100), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),  # scale_up | scale_down | refused | prewarm_used | ...
    sa.Column("from_replicas", sa.Integer, nullable=False),
    sa.Column("to_replicas", sa.Integer, nullable=False),
    sa.Column("signal", sa.String(32), nullable=False),
    sa.Column("load", sa.Float, nullable=False),
    sa.Column("reason", sa.String(500), nullable=False),  # one line for people
    sa.Index("ix_scale_pool_time", "pool", "time"),
    sa.Index("ix_scale_time", "time"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(32), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float),
    sa.Column("budget_usd_per_day", sa.Float),
    sa.Column("budget_usd_per_month", sa.Float),
    sa.Column("rpm", sa.Integer),
    sa.Column("tpm", sa.Integer),
    sa.Column("models", sa.Text),  # comma-separated allow-list; NULL: every model
    sa.Column("default_model", sa.String(200)),  # used when a request names no model
    sa.Column("tiers", sa.Text),  # comma-separated tiers model "auto" may route to; NULL: every tier
)


def normalize_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (psycopg2 is not a dependency)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers (reports) never block the writer
    cur.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes, cheap commits in WAL mode
    cur.execute("PRAGMA busy_timeout=5000")  # several processes (gateways, CLI) share one file
    cur.close()


def create_engine(url: str) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 5})
        path = engine.url.database
        if path and path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # connect_timeout: an unreachable server must fail a flush in seconds (then it spools), not hang it
    try:
        return sa.create_engine(
            url, pool_pre_ping=True, pool_size=4, max_overflow=4, connect_args={"connect_timeout": CONNECT_TIMEOUT_S}
        )
    except ModuleNotFoundError as exc:  # SQLAlchemy imports the driver here; say which install gives it
        if url.startswith("postgresql+psycopg") and (exc.name or "").split(".")[0] == "psycopg":
            extra = "PostgreSQL needs the postgres extra: pip install 'frugalserve[postgres]'"
            raise ModuleNotFoundError(extra, name=exc.name) from None
        raise


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (idempotent; safe from several processes on PG)."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # two gateways starting at once must not both create the tables
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(60606)"))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def open_store(url: str) -> Engine:
    engine = create_engine(url)
    migrate(engine)
    return engine


# -- writes -------------------------------------------------------------------------------------------


# The tables of the tagged items the writer and its files hold (jsonl.py): usage row, replica event, scale event.
TABLES: dict[str, sa.Table] = {"r": usage_records, "e": replica_events, "s": scale_events}


def insert_batch(
    engine: Engine,
    records: Iterable[Mapping[str, Any]],
    events: Iterable[Mapping[str, Any]],
    scales: Iterable[Mapping[str, Any]] = (),
) -> None:
    """One transaction: all of it is written or none."""
    insert_items(
        engine,
        [*(("r", r) for r in records), *(("e", e) for e in events), *(("s", s) for s in scales)],
    )


def insert_items(engine: Engine, items: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
    """Tagged items (:data:`TABLES`), in one transaction: all of them are written or none."""
    by_table: dict[str, list[Mapping[str, Any]]] = {kind: [] for kind in TABLES}
    for kind, row in items:
        by_table[kind].append(row)  # an unknown tag is an error of the item (dead-lettered), not of the database
    with engine.begin() as conn:
        for kind, rows in by_table.items():
            if rows:
                conn.execute(TABLES[kind].insert(), rows)


def delete_older_than(engine: Engine, cutoff: float) -> int:
    n = 0
    with engine.begin() as conn:
        for table in TABLES.values():
            n += conn.execute(table.delete().where(table.c.time < cutoff)).rowcount or 0
    return n


# -- reads --------------------------------------------------------------------------------------------


def spend_by_key(conn: Connection, since: float) -> dict[str, float]:
    c = usage_records.c
    q = sa.select(c.key_id, sa.func.sum(c.cost_usd)).where(c.time >= since, c.key_id.is_not(None)).group_by(c.key_id)
    return {k: float(v or 0.0) for k, v in conn.execute(q)}


def count_records(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(usage_records)).scalar_one())


def newest_events(engine: Engine, pool: str | None, limit: int) -> list[Event]:
    """The last ``limit`` replica and scale events (of ``pool``, or of every pool), newest first."""
    e, s = replica_events.c, scale_events.c
    rq = sa.select(e.time, e.pool, e.replica, e.from_state, e.to_state, e.reason, e.duration_s)
    sq = sa.select(s.time, s.pool, s.action, s.from_replicas, s.to_replicas, s.signal, s.load, s.reason)
    if pool is not None:
        rq, sq = rq.where(e.pool == pool), sq.where(s.pool == pool)
    with engine.connect() as conn:
        found: list[Event] = [
            ReplicaEvent(*r) for r in conn.execute(rq.order_by(e.time.desc(), e.id.desc()).limit(limit))
        ]
        found += [ScaleEvent(*r) for r in conn.execute(sq.order_by(s.time.desc(), s.id.desc()).limit(limit))]
    found.sort(key=lambda ev: ev.time, reverse=True)  # stable: within a table, the later row first
    return found[:limit]
