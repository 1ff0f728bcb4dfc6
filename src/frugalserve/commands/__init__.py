"""One module per ``frugalserve`` subcommand: ``configure(parser)`` and ``run(args) -> int``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from frugalserve import config as cfg

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


def load_config(path: str | None) -> cfg.Config | None:
    """The chosen config, or None after printing its first error (the command then exits with 2)."""
    try:
        return cfg.load(path)
    except cfg.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def shown_url(url: str) -> str:
    """The database URL for messages: the password hidden, a SQLite file as its absolute path."""
    import sqlalchemy as sa

    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        return url
    if parsed.drivername.startswith("sqlite"):
        path = parsed.database
        return str(Path(path).expanduser().resolve()) if path and path != ":memory:" else url
    return parsed.render_as_string(hide_password=True)


def database_problem(url: str) -> str | None:
    """Why the gateway could not use this database URL (a bad URL, a missing driver), found without connecting."""
    import sqlalchemy as sa

    from frugalserve.accounting import store

    try:
        parsed = sa.engine.make_url(store.normalize_url(url))
    except sa.exc.ArgumentError as exc:
        return f"not a database URL: {exc}"
    if parsed.drivername.startswith("sqlite"):
        return None  # create_engine would create the file's folder: nothing to check beforehand
    try:
        store.create_engine(url).dispose()
    except ModuleNotFoundError as exc:
        return str(exc)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as exc:
        return f"not a usable database URL: {exc}"
    return None


def gateway_database_problem(config: cfg.Config) -> str | None:
    """What would stop ``up`` from using gateway.database; the gateway opens it only for accounting or auth."""
    if not (config.accounting.enabled or config.auth.enabled):
        return None
    problem = database_problem(config.gateway.database)
    return f"gateway.database: {problem} (in {config.source})" if problem else None


def open_database(url: str, origin: str, *, create: bool) -> Engine | None:
    """The migrated store at ``url``, or None after printing why not (the command then exits with 2).

    Without ``create`` a SQLite file that does not exist is an error: reading it would create an empty
    database and report zeros, when the user most likely pointed at the wrong place.
    """
    import sqlalchemy as sa

    from frugalserve.accounting import store

    problem = database_problem(url)
    if problem is not None:
        print(f"error: {origin}: {problem}", file=sys.stderr)
        return None
    parsed = sa.engine.make_url(store.normalize_url(url))
    if not create and parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database or "").expanduser().resolve()
        if not path.exists():
            print(
                f"error: no database at {path} ({origin}). Point at the gateway's database with"
                " --config FILE (the gateway's config) or --database URL.",
                file=sys.stderr,
            )
            return None
    try:
        return store.open_store(url)
    except sa.exc.OperationalError as exc:  # unreachable server, unreadable file: its first line says which
        print(
            f"error: {origin}: cannot open {shown_url(url)}: {str(exc.orig).strip().splitlines()[0]}", file=sys.stderr
        )
        return None


def database_origin(database_option: str | None, config: cfg.Config) -> tuple[str, str]:
    """The database URL a command uses and where it came from, for messages."""
    if database_option:
        return database_option, "--database"
    return config.gateway.database, f"gateway.database in {config.source}"
