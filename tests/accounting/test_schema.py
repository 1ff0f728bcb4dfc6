"""The schema is declared once: the migrations build exactly the tables store.py declares."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from frugalserve.accounting import store


def test_migrated_database_matches_the_declared_tables(db_url: str) -> None:
    engine = store.open_store(db_url)  # a fresh database (or schema), migrated to head
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), store.metadata)
    finally:
        engine.dispose()
    assert diff == []
