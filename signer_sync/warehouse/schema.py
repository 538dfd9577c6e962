"""The warehouse tables, as SQLAlchemy Core metadata.

Tables carry no schema: on PostgreSQL every connection's ``search_path`` is set to the
configured schema (see :mod:`signer_sync.warehouse.db`), so the same definitions, the
migrations and the analysts' views work unchanged on PostgreSQL and SQLite.
Migration ``0001`` creates exactly these; ``tests/test_migrations.py`` proves they agree.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """``timestamptz`` on PostgreSQL; on SQLite a naive UTC value. Always aware UTC in Python."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class JSONText(TypeDecorator[Any]):
    """JSON kept as TEXT on SQLite: a column declared JSON there has NUMERIC affinity,
    which would turn a document that is a bare number into a lossy REAL."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else json.dumps(value, allow_nan=False)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        return None if value is None else json.loads(value)


#: JSON documents: ``jsonb`` on PostgreSQL, TEXT on SQLite; Python None is SQL NULL.
JSONDocument: Any = JSONText().with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
#: Auto-incrementing keys: SQLite only auto-increments ``INTEGER PRIMARY KEY``.
BigKey: Any = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

signing_jobs = Table(
    "signing_jobs",
    metadata,
    Column("job_id", Text, primary_key=True),
    Column("status", Text),
    Column("is_revoked", Boolean),
    Column("created_at", UTCDateTime),
    Column("signature_expires_at", UTCDateTime),
    Column("profile_name", Text),
    Column("profile_version", Text),
    Column("platform_id", Text),
    Column("platform_display_name", Text),
    Column("source_bucket", Text),
    Column("source_key", Text),
    Column("source_version", Text),
    Column("signed_bucket", Text),
    Column("signed_key", Text),
    Column("certificate_arn", Text),
    Column("job_owner", Text),
    Column("job_invoker", Text),
    Column("region", Text),
    Column("source", Text, comment="the configured source (account/region) the job was read from"),
    # Filled by DescribeSigningJob where it is called.
    Column("requested_by", Text),
    Column("completed_at", UTCDateTime),
    Column("status_reason", Text),
    Column("revoked_at", UTCDateTime),
    Column("revoked_by", Text),
    Column("revocation_reason", Text),
    Column("raw", JSONDocument, comment="the ListSigningJobs item as received"),
    # Sync metadata.
    Column("first_seen_at", UTCDateTime),
    Column("last_changed_at", UTCDateTime),
    Column("removed_from_api_at", UTCDateTime),
    Index(None, "signature_expires_at"),
    Index(None, "created_at"),
    Index(None, "profile_name", "created_at"),
    Index(None, "status"),
    Index(None, "source", "status"),
    # Revoked jobs whose revocation record is still to be fetched: small, read every run.
    Index(
        "ix_signing_jobs_revocation_pending",
        "source",
        postgresql_where=text("is_revoked AND revoked_at IS NULL"),
        sqlite_where=text("is_revoked AND revoked_at IS NULL"),
    ),
)

signing_profiles = Table(
    "signing_profiles",
    metadata,
    Column("profile_version_arn", Text, primary_key=True),
    Column("profile_name", Text),
    Column("profile_version", Text),
    Column("arn", Text),
    Column("platform_id", Text),
    Column("platform_display_name", Text),
    Column("status", Text),
    Column("validity_value", Integer),
    Column("validity_type", Text),
    Column("certificate_arn", Text),
    Column("tags", JSONDocument),
    Column("raw", JSONDocument),
    Column("source", Text),
    Column("region", Text),
    Column("first_seen_at", UTCDateTime),
    Column("last_changed_at", UTCDateTime),
    Index(None, "profile_name", "profile_version"),
)

signing_job_events = Table(
    "signing_job_events",
    metadata,
    Column("event_id", BigKey, primary_key=True, autoincrement=True),
    Column("job_id", Text, nullable=False),
    Column("run_id", BigInteger),
    Column("observed_at", UTCDateTime, nullable=False),
    Column(
        "kind",
        Text,
        nullable=False,
        comment="first_seen, status_changed, revoked, removed_from_api, reappeared, changed",
    ),
    Column("old_values", JSONDocument),
    Column("new_values", JSONDocument),
    Index(None, "job_id", "observed_at"),
    Index(None, "run_id"),
)

sync_state = Table(
    "sync_state",
    metadata,
    Column("source", Text, primary_key=True),
    Column("stream", Text, primary_key=True),
    Column("watermark", UTCDateTime, comment="start of the last run whose rows are all committed"),
    Column("state", JSONDocument, comment="what the next run needs: learned validities, counters"),
    Column("run_id", BigInteger),
    Column("updated_at", UTCDateTime),
)

sync_runs = Table(
    "sync_runs",
    metadata,
    Column("run_id", BigKey, primary_key=True, autoincrement=True),
    Column("source", Text, nullable=False),
    Column("kind", Text, nullable=False, comment="incremental or backfill"),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("outcome", Text, nullable=False, comment="running, succeeded, failed, interrupted"),
    Column("api_calls", JSONDocument, comment="HTTP requests by operation"),
    Column("api_errors", JSONDocument, comment="error responses by code"),
    Column("pages", Integer),
    Column("rows_inserted", Integer),
    Column("rows_updated", Integer),
    Column("rows_unchanged", Integer),
    Column("rows_rejected", Integer),
    Column("rows_removed", Integer),
    Column("error", Text),
    Column("host", Text),
    Index(None, "source", "started_at"),
)

listing_seen = Table(
    "listing_seen",
    metadata,
    Column("run_id", BigInteger, primary_key=True),
    Column("job_id", Text, primary_key=True),
    comment="job ids a backfill's complete listing returned; emptied when the run ends",
)

rejected_records = Table(
    "rejected_records",
    metadata,
    Column("rejected_id", BigKey, primary_key=True, autoincrement=True),
    Column("run_id", BigInteger),
    Column("source", Text),
    Column("operation", Text),
    Column("reason", Text, nullable=False),
    Column("payload", JSONDocument),
    Column("rejected_at", UTCDateTime, nullable=False),
    Index(None, "run_id"),
)
