"""initial warehouse schema

Revision ID: 0001
Revises:
Create Date: 2026-12-04 16:05:49.595258
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


#: The analysts' views, per dialect; their names and columns are a stable interface.
VIEWS: dict[str, dict[str, str]] = {
    "postgresql": {
        "signing_jobs_expiring": """
            SELECT job_id, source, region, profile_name, profile_version, platform_id,
                   signed_bucket, signed_key, created_at, signature_expires_at,
                   FLOOR(EXTRACT(EPOCH FROM (signature_expires_at - now())) / 86400)::integer
                       AS days_left
            FROM signing_jobs
            WHERE status = 'Succeeded' AND is_revoked IS NOT TRUE
              AND signature_expires_at > now()
            ORDER BY signature_expires_at""",
        "signing_jobs_daily": """
            SELECT CAST(created_at AT TIME ZONE 'UTC' AS date) AS day,
                   profile_name, platform_id, status, COUNT(*) AS jobs
            FROM signing_jobs
            GROUP BY 1, 2, 3, 4""",
    },
    "sqlite": {
        "signing_jobs_expiring": """
            SELECT job_id, source, region, profile_name, profile_version, platform_id,
                   signed_bucket, signed_key, created_at, signature_expires_at,
                   CAST(julianday(signature_expires_at) - julianday('now') AS INTEGER)
                       AS days_left
            FROM signing_jobs
            WHERE status = 'Succeeded' AND COALESCE(is_revoked, 0) = 0
              AND signature_expires_at > strftime('%Y-%m-%d %H:%M:%f', 'now')
            ORDER BY signature_expires_at""",
        "signing_jobs_daily": """
            SELECT date(created_at) AS day,
                   profile_name, platform_id, status, COUNT(*) AS jobs
            FROM signing_jobs
            GROUP BY 1, 2, 3, 4""",
    },
}


def upgrade() -> None:
    op.create_table(
        "listing_seen",
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("job_id", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "job_id", name=op.f("pk_listing_seen")),
        comment="job ids a backfill's complete listing returned; emptied when the run ends",
    )
    op.create_table(
        "rejected_records",
        sa.Column(
            "rejected_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", sa.BigInteger(), nullable=True),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("operation", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "payload", sa.Text().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
        ),
        sa.Column("rejected_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("rejected_id", name=op.f("pk_rejected_records")),
    )
    with op.batch_alter_table("rejected_records", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rejected_records_run_id"), ["run_id"], unique=False)

    op.create_table(
        "signing_job_events",
        sa.Column(
            "event_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("job_id", sa.Text(), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=True),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "kind",
            sa.Text(),
            nullable=False,
            comment="first_seen, status_changed, revoked, removed_from_api, reappeared, changed",
        ),
        sa.Column(
            "old_values", sa.Text().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
        ),
        sa.Column(
            "new_values", sa.Text().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_signing_job_events")),
    )
    with op.batch_alter_table("signing_job_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_signing_job_events_job_id_observed_at"),
            ["job_id", "observed_at"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_signing_job_events_run_id"), ["run_id"], unique=False)

    op.create_table(
        "signing_jobs",
        sa.Column("job_id", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=True),
        sa.Column("is_revoked", sa.Boolean(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("signature_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("profile_name", sa.Text(), nullable=True),
        sa.Column("profile_version", sa.Text(), nullable=True),
        sa.Column("platform_id", sa.Text(), nullable=True),
        sa.Column("platform_display_name", sa.Text(), nullable=True),
        sa.Column("source_bucket", sa.Text(), nullable=True),
        sa.Column("source_key", sa.Text(), nullable=True),
        sa.Column("source_version", sa.Text(), nullable=True),
        sa.Column("signed_bucket", sa.Text(), nullable=True),
        sa.Column("signed_key", sa.Text(), nullable=True),
        sa.Column("certificate_arn", sa.Text(), nullable=True),
        sa.Column("job_owner", sa.Text(), nullable=True),
        sa.Column("job_invoker", sa.Text(), nullable=True),
        sa.Column("region", sa.Text(), nullable=True),
        sa.Column(
            "source",
            sa.Text(),
            nullable=True,
            comment="the configured source (account/region) the job was read from",
        ),
        sa.Column("requested_by", sa.Text(), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.Text(), nullable=True),
        sa.Column("revocation_reason", sa.Text(), nullable=True),
        sa.Column(
            "raw",
            sa.Text().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=True,
            comment="the ListSigningJobs item as received",
        ),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("removed_from_api_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_signing_jobs")),
    )
    with op.batch_alter_table("signing_jobs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_signing_jobs_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_signing_jobs_profile_name_created_at"),
            ["profile_name", "created_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_signing_jobs_signature_expires_at"),
            ["signature_expires_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_signing_jobs_source_status"), ["source", "status"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_signing_jobs_status"), ["status"], unique=False)
        batch_op.create_index(
            "ix_signing_jobs_revocation_pending",
            ["source"],
            unique=False,
            postgresql_where=sa.text("is_revoked AND revoked_at IS NULL"),
            sqlite_where=sa.text("is_revoked AND revoked_at IS NULL"),
        )

    op.create_table(
        "signing_profiles",
        sa.Column("profile_version_arn", sa.Text(), nullable=False),
        sa.Column("profile_name", sa.Text(), nullable=True),
        sa.Column("profile_version", sa.Text(), nullable=True),
        sa.Column("arn", sa.Text(), nullable=True),
        sa.Column("platform_id", sa.Text(), nullable=True),
        sa.Column("platform_display_name", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=True),
        sa.Column("validity_value", sa.Integer(), nullable=True),
        sa.Column("validity_type", sa.Text(), nullable=True),
        sa.Column("certificate_arn", sa.Text(), nullable=True),
        sa.Column("tags", sa.Text().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
        sa.Column("raw", sa.Text().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("region", sa.Text(), nullable=True),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("profile_version_arn", name=op.f("pk_signing_profiles")),
    )
    with op.batch_alter_table("signing_profiles", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_signing_profiles_profile_name_profile_version"),
            ["profile_name", "profile_version"],
            unique=False,
        )

    op.create_table(
        "sync_runs",
        sa.Column(
            "run_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False, comment="incremental or backfill"),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "outcome", sa.Text(), nullable=False, comment="running, succeeded, failed, interrupted"
        ),
        sa.Column(
            "api_calls",
            sa.Text().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=True,
            comment="HTTP requests by operation",
        ),
        sa.Column(
            "api_errors",
            sa.Text().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=True,
            comment="error responses by code",
        ),
        sa.Column("pages", sa.Integer(), nullable=True),
        sa.Column("rows_inserted", sa.Integer(), nullable=True),
        sa.Column("rows_updated", sa.Integer(), nullable=True),
        sa.Column("rows_unchanged", sa.Integer(), nullable=True),
        sa.Column("rows_rejected", sa.Integer(), nullable=True),
        sa.Column("rows_removed", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("host", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_sync_runs")),
    )
    with op.batch_alter_table("sync_runs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sync_runs_source_started_at"), ["source", "started_at"], unique=False
        )

    op.create_table(
        "sync_state",
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("stream", sa.Text(), nullable=False),
        sa.Column(
            "watermark",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="start of the last run whose rows are all committed",
        ),
        sa.Column(
            "state",
            sa.Text().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=True,
            comment="what the next run needs: learned validities, counters",
        ),
        sa.Column("run_id", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("source", "stream", name=op.f("pk_sync_state")),
    )

    for name, body in VIEWS[op.get_bind().dialect.name].items():
        op.execute(f"CREATE VIEW {name} AS {body}")


def downgrade() -> None:
    for name in VIEWS[op.get_bind().dialect.name]:
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.drop_table("sync_state")
    with op.batch_alter_table("sync_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sync_runs_source_started_at"))

    op.drop_table("sync_runs")
    with op.batch_alter_table("signing_profiles", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_signing_profiles_profile_name_profile_version"))

    op.drop_table("signing_profiles")
    with op.batch_alter_table("signing_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_signing_jobs_revocation_pending")
        batch_op.drop_index(batch_op.f("ix_signing_jobs_status"))
        batch_op.drop_index(batch_op.f("ix_signing_jobs_source_status"))
        batch_op.drop_index(batch_op.f("ix_signing_jobs_signature_expires_at"))
        batch_op.drop_index(batch_op.f("ix_signing_jobs_profile_name_created_at"))
        batch_op.drop_index(batch_op.f("ix_signing_jobs_created_at"))

    op.drop_table("signing_jobs")
    with op.batch_alter_table("signing_job_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_signing_job_events_run_id"))
        batch_op.drop_index(batch_op.f("ix_signing_job_events_job_id_observed_at"))

    op.drop_table("signing_job_events")
    with op.batch_alter_table("rejected_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rejected_records_run_id"))

    op.drop_table("rejected_records")
    op.drop_table("listing_seen")
