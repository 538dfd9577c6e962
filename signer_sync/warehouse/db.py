"""Connecting to the warehouse, migrating it, and refusing to run on an old schema."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

from signer_sync.config import Settings
from signer_sync.errors import DatabaseUnavailable, SchemaOutOfDate, first_line

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def describe_target(settings: Settings) -> str:
    """Where the warehouse is, for messages: host and port (or the file), never a password."""
    url = settings.url
    if settings.is_sqlite:
        return f"SQLite file {url.database or ':memory:'}"
    return f"PostgreSQL at {url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"


def make_engine(settings: Settings, *, pool: bool = True) -> Engine:
    """An engine whose connections all see the configured schema."""
    url = settings.url
    kwargs: dict[str, Any] = {"future": True}
    if settings.is_sqlite:
        kwargs["connect_args"] = {"timeout": 30}
        if not pool:
            kwargs["poolclass"] = NullPool
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    # The schema is a validated identifier (config.IDENTIFIER_RE); quoting keeps it exact.
    kwargs["connect_args"] = {
        "connect_timeout": 10,
        "options": f'-c search_path="{settings.db_schema}"',
        "application_name": "signer-sync",
    }
    kwargs["pool_pre_ping"] = True
    if pool:
        # A run holds its lock connection and a writer; the daemon runs sources in parallel.
        kwargs["pool_size"] = 2 * settings.max_parallel_sources + 2
    else:
        kwargs["poolclass"] = NullPool
    return create_engine(url, **kwargs)


@contextlib.contextmanager
def translate_errors(settings: Settings) -> Iterator[None]:
    """Turn driver connection errors into one line that names host and port, not the password."""
    try:
        yield
    except OperationalError as exc:
        reason = first_line(exc.orig) if exc.orig is not None else type(exc).__name__
        password = settings.url.password
        if password:
            reason = reason.replace(str(password), "***")
        raise DatabaseUnavailable(
            f"cannot reach the warehouse, {describe_target(settings)}: {reason}",
            hint="check SIGNER_SYNC_DATABASE_URL and that the database is up",
        ) from None


def alembic_config(settings: Settings, connection: Connection | None = None) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["settings"] = settings
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    script = ScriptDirectory.from_config(alembic_config_for_scripts())
    head = script.get_current_head()
    assert head is not None
    return head


def alembic_config_for_scripts() -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def ensure_schema_exists(connection: Connection, settings: Settings) -> None:
    if settings.table_schema is not None:
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{settings.table_schema}"'))


def migrate(engine: Engine, settings: Settings, revision: str = "head") -> None:
    """Upgrade the warehouse to ``revision`` (the newest by default)."""
    with translate_errors(settings), engine.begin() as connection:
        ensure_schema_exists(connection, settings)
        command.upgrade(alembic_config(settings, connection), revision)


def downgrade(engine: Engine, settings: Settings, revision: str) -> None:
    with translate_errors(settings), engine.begin() as connection:
        command.downgrade(alembic_config(settings, connection), revision)


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def check_ready(engine: Engine, settings: Settings) -> None:
    """Stop with a clear message unless the warehouse is reachable and at our revision."""
    with translate_errors(settings), engine.connect() as connection:
        try:
            revision = current_revision(connection)
        except DBAPIError as exc:  # e.g. search_path schema missing on an odd setup
            raise SchemaOutOfDate(
                f"the warehouse ({describe_target(settings)}) is not migrated: {first_line(exc)}"
            ) from None
    head = head_revision()
    if revision == head:
        return
    if revision is None:
        where = describe_target(settings)
        if settings.table_schema:
            where += f', schema "{settings.table_schema}"'
        raise SchemaOutOfDate(f"the warehouse ({where}) has no signer-sync tables yet")
    script = ScriptDirectory.from_config(alembic_config_for_scripts())
    try:
        known = script.get_revision(revision)
    except Exception:  # noqa: BLE001 - alembic raises several types for unknown ids
        known = None
    if known is None:
        raise SchemaOutOfDate(
            f"the warehouse is at revision {revision}, which this signer-sync "
            f"({head}) does not know: it was migrated by a newer version",
            hint="upgrade signer-sync; do not run an older version against this warehouse",
        )
    raise SchemaOutOfDate(f"the warehouse is at revision {revision}, this signer-sync needs {head}")


def open_warehouse(settings: Settings, *, pool: bool = True) -> Engine:
    """An engine for a migrated, reachable warehouse (raises a clear error otherwise)."""
    engine = make_engine(settings, pool=pool)
    try:
        check_ready(engine, settings)
    except Exception:
        engine.dispose()
        raise
    return engine
