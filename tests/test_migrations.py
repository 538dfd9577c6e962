"""The migrations and the SQLAlchemy table definitions agree, and go up and down."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from signer_sync.warehouse.db import current_revision, downgrade, head_revision, migrate
from signer_sync.warehouse.schema import metadata
from tests.conftest import Warehouse

VIEWS = {"signing_jobs_expiring", "signing_jobs_daily"}


def _differences(wh: Warehouse) -> list[object]:
    with wh.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


def test_migrated_schema_equals_table_definitions(warehouse: Warehouse) -> None:
    assert _differences(warehouse) == []
    with warehouse.engine.connect() as connection:
        assert current_revision(connection) == head_revision()
        assert set(inspect(connection).get_view_names()) >= VIEWS


def test_upgrade_downgrade_upgrade(warehouse: Warehouse) -> None:
    downgrade(warehouse.engine, warehouse.settings, "base")
    with warehouse.engine.connect() as connection:
        names = set(inspect(connection).get_table_names()) - {"alembic_version"}
        assert names == set()
        assert not VIEWS & set(inspect(connection).get_view_names())
    migrate(warehouse.engine, warehouse.settings)
    assert _differences(warehouse) == []
    with warehouse.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM signing_jobs_expiring")).scalar() == 0


def test_postgresql_tables_live_in_the_configured_schema(pg_warehouse: Warehouse) -> None:
    schema = pg_warehouse.settings.db_schema
    with pg_warehouse.engine.connect() as connection:
        tables = set(inspect(connection).get_table_names(schema=schema))
        public = set(inspect(connection).get_table_names(schema="public"))
    assert {"signing_jobs", "sync_runs", "alembic_version"} <= tables
    assert "signing_jobs" not in public
