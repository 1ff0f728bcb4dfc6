"""The accounting tests' database fixture: each test gets a SQLite file, and a PostgreSQL schema of its own
when FRUGALSERVE_TEST_POSTGRES_URL is set."""

from tests.accounting.conftest import db_url

__all__ = ["db_url"]
