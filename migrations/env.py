"""Alembic environment: migrations run against the configured warehouse.

Called by ``signer-sync migrate`` with a connection in ``config.attributes``, or by plain
``alembic`` which builds one from the ``SIGNER_SYNC_*`` settings.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from signer_sync.config import load_settings
from signer_sync.warehouse.db import ensure_schema_exists, make_engine
from signer_sync.warehouse.schema import metadata

config = context.config


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=metadata,
        render_as_batch=True,  # SQLite needs batch mode for ALTERs
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    settings = config.attributes.get("settings") or load_settings()
    engine = make_engine(settings, pool=False)
    with engine.begin() as conn:
        ensure_schema_exists(conn, settings)
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run `signer-sync migrate`")
run_migrations_online()
