"""The write path: batches of observed jobs -> ``signing_jobs`` + ``signing_job_events``.

One transaction per batch: read the batch's current rows, compare in Python
(:func:`~signer_sync.warehouse.changes.plan_change`), upsert only what differs with
``INSERT ... ON CONFLICT (job_id) DO UPDATE ... WHERE`` the row really differs, and write
one event per change in the same transaction. Unchanged rows are not touched.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import (
    Connection,
    Engine,
    MetaData,
    Table,
    Text,
    and_,
    any_,
    bindparam,
    delete,
    exists,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import Insert

from signer_sync.planning import ValidityRange, observe, profile_key
from signer_sync.records import (
    DETAIL_COLUMNS,
    LIST_COLUMNS,
    Rejection,
    SigningJob,
    SigningProfile,
)
from signer_sync.warehouse.changes import FIRST_SEEN_FIELDS, JobChange, plan_change, to_json
from signer_sync.warehouse.schema import (
    listing_seen,
    rejected_records,
    signing_job_events,
    signing_jobs,
    signing_profiles,
    sync_runs,
)

_NEVER_COMPARED = frozenset({"job_id", "first_seen_at", "last_changed_at"})
_INSERT_COLUMNS = ("job_id", *LIST_COLUMNS, *DETAIL_COLUMNS, "first_seen_at", "last_changed_at")
_EVENT_COLUMNS = ("job_id", "run_id", "observed_at", "kind", "old_values", "new_values")
_JSON_COLUMNS = frozenset({"raw"})
_LISTED_KEYS = frozenset(LIST_COLUMNS)
_PLAIN_LISTED = tuple(name for name in LIST_COLUMNS if name != "raw")


def _raw_for_copy(job: SigningJob) -> Any:
    """The raw item for COPY: its JSON text from mapping when there is one (COPY's text
    format hands it to jsonb as is), else serialised now."""
    if job.raw_json is not None:
        return job.raw_json
    raw = job.values.get("raw")
    return None if raw is None else Jsonb(raw)


_INCOMING = Table("incoming_jobs", MetaData())  # a session's temporary staging table


def _insert_row(change: JobChange) -> tuple[Any, ...]:
    row = change.row
    return tuple(
        (Jsonb(row.get(name)) if row.get(name) is not None else None)
        if name in _JSON_COLUMNS
        else (change.job_id if name == "job_id" else row.get(name))
        for name in _INSERT_COLUMNS
    )


def _copy(
    connection: Connection, table: Table, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]
) -> None:
    """COPY rows into a table on the SQLAlchemy connection's own transaction."""
    driver = connection.connection.driver_connection
    statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"  # our own names only
    with driver.cursor() as cursor, cursor.copy(statement) as copy:  # type: ignore[union-attr]
        for row in rows:
            copy.write_row(row)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class WriteStats:
    """Counts for ``sync_runs`` and the run summary."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    removed: int = 0
    events: int = 0

    def add(self, other: WriteStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class BatchResult:
    stats: WriteStats = field(default_factory=WriteStats)
    newly_revoked: list[str] = field(default_factory=list)
    observed: dict[str, ValidityRange] = field(default_factory=dict)


def dialect_insert(connection: Connection, table: Any) -> Insert:
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


class JobWriter:
    """Writes one source's jobs for one run."""

    def __init__(
        self,
        engine: Engine,
        *,
        source: str,
        run_id: int,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.source = source
        self.run_id = run_id
        self.clock = clock

    # -- jobs ----------------------------------------------------------------------------

    def write_jobs(
        self, jobs: Sequence[SigningJob], *, listed: bool = True, record_seen: bool = False
    ) -> BatchResult:
        """Upsert one batch in one transaction; returns what it changed."""
        result = BatchResult()
        latest: dict[str, SigningJob] = {}
        for job in jobs:  # the same job twice in a batch: the later observation wins
            previous = latest.get(job.job_id)
            latest[job.job_id] = (
                job
                if previous is None
                else SigningJob(job.job_id, {**previous.values, **job.values})
            )
        if not latest:
            return result
        now = self.clock()
        with self.engine.begin() as connection:
            staged = connection.dialect.name == "postgresql" and all(
                job.values.keys() == _LISTED_KEYS for job in latest.values()
            )
            if staged and self._insert_all_new(connection, latest, now, record_seen, result):
                self._observe(latest, result)
                return result
            if staged:
                # Compare in the database: unchanged rows never travel back.
                existing, new_ids = self._stage(connection, latest)
                candidates = {job_id: latest[job_id] for job_id in (*existing, *new_ids)}
            else:
                existing = self._current_rows(connection, list(latest))
                candidates = latest
            changes: list[JobChange] = []
            for job_id, job in candidates.items():
                if staged and job_id not in existing:
                    # Inserted from the staging table in SQL, with its first_seen event.
                    changes.append(JobChange(job_id, True, {}, "first_seen", None, {}))
                    result.stats.inserted += 1
                    if job.values.get("is_revoked") is True:
                        result.newly_revoked.append(job_id)
                    continue
                change = plan_change(job_id, existing.get(job_id), job.values, now, listed=listed)
                if change is None:
                    continue
                changes.append(change)
                if change.inserted:
                    result.stats.inserted += 1
                else:
                    result.stats.updated += 1
                if job.values.get("is_revoked") is True and not (existing.get(job_id) or {}).get(
                    "is_revoked"
                ):
                    result.newly_revoked.append(job_id)
            result.stats.unchanged = len(latest) - len(changes)
            self._observe(latest, result)
            if staged:
                self._merge_staged(connection, changes, now, record_seen=record_seen)
            elif connection.dialect.name == "postgresql":
                self._write_postgresql(connection, changes, now)
            else:
                self._upsert(connection, changes)
                self._write_events(connection, changes, now)
            result.stats.events = len(changes)
            if record_seen and not staged:
                self._record_seen(connection, list(latest))
        return result

    @staticmethod
    def _observe(latest: Mapping[str, SigningJob], result: BatchResult) -> None:
        """Learn validities from the batch's succeeded jobs (see planning.observe)."""
        for job in latest.values():
            values = job.values
            if values.get("status") == "Succeeded":
                key = profile_key(values.get("profile_name"), values.get("profile_version"))
                observe(
                    result.observed,
                    key,
                    values.get("created_at"),
                    values.get("signature_expires_at"),
                )

    def _insert_all_new(
        self,
        connection: Connection,
        latest: Mapping[str, SigningJob],
        now: datetime,
        record_seen: bool,
        result: BatchResult,
    ) -> bool:
        """A batch of jobs the warehouse has never seen (a first backfill, mostly) goes in
        with plain COPY, no staging; returns False, changing nothing, when any job exists."""
        ids = list(latest)
        known = connection.execute(
            text("SELECT EXISTS (SELECT FROM signing_jobs WHERE job_id = ANY(:ids))").bindparams(
                bindparam("ids", type_=postgresql.ARRAY(Text))
            ),
            {"ids": ids},
        ).scalar_one()
        if known:
            return False
        columns = ("job_id", *_PLAIN_LISTED, "raw", "first_seen_at", "last_changed_at")
        try:
            with connection.begin_nested():
                _copy(
                    connection,
                    signing_jobs,
                    columns,
                    (
                        (
                            job.job_id,
                            *(job.values[n] for n in _PLAIN_LISTED),
                            _raw_for_copy(job),
                            now,
                            now,
                        )
                        for job in latest.values()
                    ),
                )
        except (IntegrityError, psycopg.errors.IntegrityError):  # another writer was quicker
            return False
        _copy(
            connection,
            signing_job_events,
            ("job_id", "run_id", "observed_at", "kind", "new_values"),
            (
                (
                    job.job_id,
                    self.run_id,
                    now,
                    "first_seen",
                    Jsonb({name: to_json(job.values.get(name)) for name in FIRST_SEEN_FIELDS}),
                )
                for job in latest.values()
            ),
        )
        if record_seen:
            self._record_seen(connection, ids)
        result.stats.inserted = result.stats.events = len(ids)
        result.newly_revoked.extend(
            job.job_id for job in latest.values() if job.values.get("is_revoked") is True
        )
        return True

    def _stage(
        self, connection: Connection, latest: Mapping[str, SigningJob]
    ) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """COPY the batch into a temporary table; return the current rows of the jobs
        that differ and the ids of the jobs that are new."""
        connection.exec_driver_sql(
            "CREATE TEMP TABLE IF NOT EXISTS incoming_jobs (LIKE signing_jobs) "
            "ON COMMIT DELETE ROWS"
        )
        columns = ("job_id", *_PLAIN_LISTED, "raw")
        _copy(
            connection,
            _INCOMING,
            columns,
            (
                (job.job_id, *(job.values[name] for name in _PLAIN_LISTED), _raw_for_copy(job))
                for job in latest.values()
            ),
        )
        incoming = ", ".join(f"i.{name}" for name in LIST_COLUMNS)
        current = ", ".join(f"j.{name}" for name in LIST_COLUMNS)
        rows = connection.exec_driver_sql(
            f"SELECT j.*, i.job_id AS incoming_id FROM incoming_jobs i "
            f"LEFT JOIN signing_jobs j ON j.job_id = i.job_id "
            f"WHERE j.job_id IS NULL OR j.removed_from_api_at IS NOT NULL "
            f"OR ({incoming}) IS DISTINCT FROM ({current})"
        ).mappings()
        existing: dict[str, dict[str, Any]] = {}
        new_ids: set[str] = set()
        for row in rows:
            if row["job_id"] is None:
                new_ids.add(row["incoming_id"])
            else:
                values = dict(row)
                values.pop("incoming_id")
                existing[row["job_id"]] = values
        return existing, new_ids

    def _merge_staged(
        self,
        connection: Connection,
        changes: Sequence[JobChange],
        now: datetime,
        *,
        record_seen: bool,
    ) -> None:
        """New rows go from the staging table into ``signing_jobs`` with their
        ``first_seen`` events in one statement; changed rows take the guarded upsert."""
        new_ids = [change.job_id for change in changes if change.inserted]
        updates = [change for change in changes if not change.inserted]
        if new_ids:
            columns = ", ".join(LIST_COLUMNS)
            shown = ", ".join(f"'{name}', {name}" for name in FIRST_SEEN_FIELDS)
            connection.execute(
                text(
                    f"WITH inserted AS ("
                    f" INSERT INTO signing_jobs (job_id, {columns}, first_seen_at, last_changed_at)"
                    f" SELECT job_id, {columns}, :now, :now FROM incoming_jobs i"
                    f" WHERE NOT EXISTS (SELECT FROM signing_jobs j WHERE j.job_id = i.job_id)"
                    f" ON CONFLICT (job_id) DO NOTHING"
                    f" RETURNING job_id, {', '.join(FIRST_SEEN_FIELDS)})"
                    f" INSERT INTO signing_job_events"
                    f" (job_id, run_id, observed_at, kind, new_values)"
                    f" SELECT job_id, :run_id, :now, 'first_seen', jsonb_build_object({shown})"
                    f" FROM inserted"
                ),
                {"now": now, "run_id": self.run_id},
            )
        if updates:
            self._upsert(connection, updates)
            self._copy_events(connection, updates, now)
        if record_seen:
            connection.execute(
                text(
                    "INSERT INTO listing_seen (run_id, job_id) "
                    "SELECT :run_id, job_id FROM incoming_jobs ON CONFLICT DO NOTHING"
                ),
                {"run_id": self.run_id},
            )

    def _write_postgresql(
        self, connection: Connection, changes: Sequence[JobChange], now: datetime
    ) -> None:
        """New rows and events go in with COPY (the fast path measured in
        docs/benchmarks.md); changed rows with the guarded upsert."""
        inserts = [change for change in changes if change.inserted]
        updates = [change for change in changes if not change.inserted]
        if inserts:
            try:
                with connection.begin_nested():
                    _copy(
                        connection, signing_jobs, _INSERT_COLUMNS, (_insert_row(c) for c in inserts)
                    )
            except (IntegrityError, psycopg.errors.IntegrityError):  # another writer: upsert
                updates = list(changes)
        if updates:
            self._upsert(connection, updates)
        self._copy_events(connection, changes, now)

    def _copy_events(
        self, connection: Connection, changes: Sequence[JobChange], now: datetime
    ) -> None:
        _copy(
            connection,
            signing_job_events,
            _EVENT_COLUMNS,
            (
                (
                    change.job_id,
                    self.run_id,
                    now,
                    change.kind,
                    None if change.old_values is None else Jsonb(change.old_values),
                    Jsonb(change.new_values),
                )
                for change in changes
            ),
        )

    def _record_seen(self, connection: Connection, job_ids: list[str]) -> None:
        if connection.dialect.name == "postgresql":
            connection.execute(
                text(
                    "INSERT INTO listing_seen (run_id, job_id) SELECT :run_id, unnest(:ids) "
                    "ON CONFLICT DO NOTHING"
                ).bindparams(bindparam("ids", type_=postgresql.ARRAY(Text))),
                {"run_id": self.run_id, "ids": job_ids},
            )
            return
        seen = dialect_insert(connection, listing_seen).on_conflict_do_nothing()  # type: ignore[attr-defined]
        connection.execute(seen, [{"run_id": self.run_id, "job_id": j} for j in job_ids])

    def _current_rows(
        self, connection: Connection, job_ids: list[str]
    ) -> dict[str, dict[str, Any]]:
        rows: dict[str, dict[str, Any]] = {}
        for start in range(0, len(job_ids), 5000):
            chunk = job_ids[start : start + 5000]
            if connection.dialect.name == "postgresql":
                ids = bindparam("ids", chunk, type_=postgresql.ARRAY(Text))
                query = select(signing_jobs).where(signing_jobs.c.job_id == any_(ids))
            else:
                query = select(signing_jobs).where(signing_jobs.c.job_id.in_(chunk))
            for row in connection.execute(query).mappings():
                rows[row["job_id"]] = dict(row)
        return rows

    def _upsert(self, connection: Connection, changes: Iterable[JobChange]) -> None:
        groups: dict[frozenset[str], list[dict[str, Any]]] = defaultdict(list)
        for change in changes:
            row = dict(change.row, job_id=change.job_id)
            if not change.inserted:
                row.setdefault("first_seen_at", row.get("last_changed_at"))
            groups[frozenset(row)].append(row)
        for columns, rows in groups.items():
            statement = dialect_insert(connection, signing_jobs)
            excluded = statement.excluded  # type: ignore[attr-defined]
            written = sorted(columns - {"job_id", "first_seen_at"})
            compared = [name for name in written if name not in _NEVER_COMPARED]
            statement = statement.on_conflict_do_update(  # type: ignore[attr-defined]
                index_elements=[signing_jobs.c.job_id],
                set_={name: excluded[name] for name in written},
                where=or_(
                    *(signing_jobs.c[name].is_distinct_from(excluded[name]) for name in compared)
                ),
            )
            connection.execute(statement, rows)

    def _write_events(
        self, connection: Connection, changes: Sequence[JobChange], now: datetime
    ) -> None:
        if not changes:
            return
        connection.execute(
            signing_job_events.insert(),
            [
                {
                    "job_id": change.job_id,
                    "run_id": self.run_id,
                    "observed_at": now,
                    "kind": change.kind,
                    "old_values": change.old_values,
                    "new_values": change.new_values,
                }
                for change in changes
            ],
        )

    # -- reconciliation ------------------------------------------------------------------

    def clear_seen(self) -> None:
        """Forget the ids earlier (crashed) backfills of this source recorded; other
        sources' backfills may be running and keep theirs."""
        earlier = select(sync_runs.c.run_id).where(
            sync_runs.c.source == self.source, sync_runs.c.run_id <= self.run_id
        )
        with self.engine.begin() as connection:
            connection.execute(delete(listing_seen).where(listing_seen.c.run_id.in_(earlier)))

    def mark_removed(self, covered_statuses: Sequence[str] | None = None) -> int:
        """Set ``removed_from_api_at`` on this source's rows the complete listing no longer
        returned, with an event each; rows are never deleted. Returns how many.

        ``covered_statuses``: the listing was partitioned (expiry windows plus these
        statuses), so only rows it could have returned are judged: rows with an expiry, or
        with one of these statuses. Others are left as they are."""
        now = self.clock()
        listed = exists().where(
            and_(
                listing_seen.c.run_id == self.run_id, listing_seen.c.job_id == signing_jobs.c.job_id
            )
        )
        with self.engine.begin() as connection:
            gone = [
                row[0]
                for row in connection.execute(
                    select(signing_jobs.c.job_id).where(
                        signing_jobs.c.source == self.source,
                        signing_jobs.c.removed_from_api_at.is_(None),
                        ~listed,
                        *(
                            ()
                            if covered_statuses is None
                            else (
                                or_(
                                    signing_jobs.c.signature_expires_at.is_not(None),
                                    signing_jobs.c.status.in_(list(covered_statuses)),
                                ),
                            )
                        ),
                    )
                )
            ]
            for start in range(0, len(gone), 5000):
                chunk = gone[start : start + 5000]
                connection.execute(
                    update(signing_jobs)
                    .where(signing_jobs.c.job_id.in_(chunk))
                    .values(removed_from_api_at=now, last_changed_at=now)
                )
                connection.execute(
                    signing_job_events.insert(),
                    [
                        {
                            "job_id": job_id,
                            "run_id": self.run_id,
                            "observed_at": now,
                            "kind": "removed_from_api",
                            "old_values": {"removed_from_api_at": None},
                            "new_values": {"removed_from_api_at": now.isoformat()},
                        }
                        for job_id in chunk
                    ],
                )
            connection.execute(delete(listing_seen).where(listing_seen.c.run_id == self.run_id))
        return len(gone)

    # -- rejects and profiles ------------------------------------------------------------

    def write_rejections(self, rejections: Sequence[Rejection], operation: str) -> int:
        if not rejections:
            return 0
        now = self.clock()
        with self.engine.begin() as connection:
            connection.execute(
                rejected_records.insert(),
                [
                    {
                        "run_id": self.run_id,
                        "source": self.source,
                        "operation": operation,
                        "reason": rejection.reason,
                        "payload": rejection.payload,
                        "rejected_at": now,
                    }
                    for rejection in rejections
                ],
            )
        return len(rejections)

    def write_profiles(self, profiles: Sequence[SigningProfile], region: str | None) -> int:
        """Upsert profile versions; returns how many were new or changed."""
        now = self.clock()
        written = 0
        with self.engine.begin() as connection:
            current = {
                row["profile_version_arn"]: dict(row)
                for row in connection.execute(
                    select(signing_profiles).where(signing_profiles.c.source == self.source)
                ).mappings()
            }
            for profile in profiles:
                values = dict(profile.values, source=self.source, region=region)
                old = current.get(profile.profile_version_arn)
                if old is not None and all(
                    to_json(old.get(key)) == to_json(value) for key, value in values.items()
                ):
                    continue
                written += 1
                row = dict(
                    values, profile_version_arn=profile.profile_version_arn, last_changed_at=now
                )
                statement = dialect_insert(connection, signing_profiles)
                excluded = statement.excluded  # type: ignore[attr-defined]
                statement = statement.on_conflict_do_update(  # type: ignore[attr-defined]
                    index_elements=[signing_profiles.c.profile_version_arn],
                    set_={key: excluded[key] for key in row if key != "profile_version_arn"},
                )
                connection.execute(statement, dict(row, first_seen_at=now))
        return written


def in_progress_job_ids(engine: Engine, source: str) -> set[str]:
    with engine.connect() as connection:
        return set(
            connection.execute(
                select(signing_jobs.c.job_id).where(
                    signing_jobs.c.source == source,
                    signing_jobs.c.status == "InProgress",
                    signing_jobs.c.removed_from_api_at.is_(None),
                )
            ).scalars()
        )


def revoked_without_details(engine: Engine, source: str, limit: int) -> list[str]:
    """Revoked jobs whose revocation record was never fetched (e.g. a describe failed)."""
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(signing_jobs.c.job_id)
                .where(
                    signing_jobs.c.source == source,
                    signing_jobs.c.is_revoked.is_(True),
                    signing_jobs.c.revoked_at.is_(None),
                    signing_jobs.c.removed_from_api_at.is_(None),
                )
                .limit(limit)
            ).scalars()
        )


def expiry_edges(engine: Engine, source: str, parts: int) -> list[datetime]:
    """Cut points that split this source's known expiries into ``parts`` equal counts."""
    ordered = (
        select(
            signing_jobs.c.signature_expires_at.label("expires"),
            func.ntile(parts).over(order_by=signing_jobs.c.signature_expires_at).label("part"),
        )
        .where(
            signing_jobs.c.source == source,
            signing_jobs.c.signature_expires_at.is_not(None),
        )
        .subquery()
    )
    query = select(func.min(ordered.c.expires)).group_by(ordered.c.part)
    with engine.connect() as connection:
        return sorted(edge for edge in connection.execute(query).scalars() if edge is not None)[1:]


def statuses_without_expiry(engine: Engine, source: str) -> list[str]:
    """Statuses this source's jobs have had without an expiry (beyond the usual two)."""
    with engine.connect() as connection:
        return [
            status
            for status in connection.execute(
                select(signing_jobs.c.status)
                .where(
                    signing_jobs.c.source == source,
                    signing_jobs.c.signature_expires_at.is_(None),
                    signing_jobs.c.status.is_not(None),
                    signing_jobs.c.status.not_in(["InProgress", "Failed"]),
                )
                .distinct()
            ).scalars()
        ]


def merge_ranges(
    into: dict[str, ValidityRange], other: Mapping[str, ValidityRange]
) -> dict[str, ValidityRange]:
    for key, value in other.items():
        current = into.get(key)
        into[key] = (
            value
            if current is None
            else ValidityRange(min(current.low, value.low), max(current.high, value.high))
        )
    return into
