"""Databases for accounting tests: a SQLite file always; PostgreSQL when FRUGALSERVE_TEST_POSTGRES_URL is set.

Each PostgreSQL test gets a schema of its own (search_path in the URL), dropped afterwards, because CI
and developers share one database.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from frugalserve.accounting import store

PG_ENV = "FRUGALSERVE_TEST_POSTGRES_URL"


def _pg_schema_url() -> Iterator[str]:
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} is not set")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(store.normalize_url(base))
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'acc.db'}"
    else:
        yield from _pg_schema_url()


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    e = store.open_store(db_url)
    try:
        yield e
    finally:
        e.dispose()
