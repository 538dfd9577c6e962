"""Sync state and run records: the watermark, ``sync_runs``, and the per-source lock.

The watermark is written only after every row of the run it covers is committed, in its
own transaction, so it can never move ahead of the data; a crash before it simply makes
the next run read the same window again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, select, text, update

from signer_sync.planning import ValidityRange, ranges_from_json, ranges_to_json
from signer_sync.warehouse.schema import sync_runs, sync_state
from signer_sync.warehouse.writer import WriteStats, dialect_insert, utcnow

JOBS_STREAM = "signing_jobs"
_LOCK_NAMESPACE = 0x5167  # first key of PostgreSQL's two-int advisory locks: "signer-sync"


@dataclass(frozen=True)
class Watermark:
    """Where the next incremental run of a source starts."""

    at: datetime | None
    """Start of the last run whose listings were all committed (None: never synced)."""
    ranges: Mapping[str, ValidityRange] = field(default_factory=dict)
    """Validity ranges learned per profile version from synced jobs."""
    runs: int = 0
    """Successful runs so far; drives the ``failed_every`` cadence."""
    last_kind: str | None = None
    pending: tuple[str, ...] = ()
    """Jobs that left InProgress in a run that did not finish: still to be described."""

    def to_state(self) -> dict[str, Any]:
        return {
            "ranges": ranges_to_json(self.ranges),
            "runs": self.runs,
            "last_kind": self.last_kind,
            "pending_describe": list(self.pending),
        }


def load_watermark(engine: Engine, source: str) -> Watermark:
    with engine.connect() as connection:
        row = connection.execute(
            select(sync_state.c.watermark, sync_state.c.state).where(
                sync_state.c.source == source, sync_state.c.stream == JOBS_STREAM
            )
        ).first()
    if row is None:
        return Watermark(at=None)
    state = row.state if isinstance(row.state, Mapping) else {}
    runs = state.get("runs")
    kind = state.get("last_kind")
    pending = state.get("pending_describe")
    return Watermark(
        at=row.watermark,
        ranges=ranges_from_json(state.get("ranges")),
        runs=runs if isinstance(runs, int) else 0,
        last_kind=kind if isinstance(kind, str) else None,
        pending=tuple(p for p in pending if isinstance(p, str))
        if isinstance(pending, list)
        else (),
    )


def save_pending(engine: Engine, source: str, watermark: Watermark) -> None:
    """Record, before a run changes anything, which jobs it will have to describe, so that
    a run that dies half-way leaves them to the next one. The watermark is not touched."""
    with engine.begin() as connection:
        connection.execute(
            update(sync_state)
            .where(sync_state.c.source == source, sync_state.c.stream == JOBS_STREAM)
            .values(state=watermark.to_state())
        )


def save_watermark(connection: Connection, source: str, watermark: Watermark, run_id: int) -> None:
    """Store the watermark; call only after the run's rows are committed."""
    statement = dialect_insert(connection, sync_state)
    values = {
        "source": source,
        "stream": JOBS_STREAM,
        "watermark": watermark.at,
        "state": watermark.to_state(),
        "run_id": run_id,
        "updated_at": utcnow(),
    }
    connection.execute(
        statement.on_conflict_do_update(  # type: ignore[attr-defined]
            index_elements=[sync_state.c.source, sync_state.c.stream],
            set_={key: value for key, value in values.items() if key not in ("source", "stream")},
        ),
        values,
    )


@dataclass
class RunFigures:
    """What a run did, for ``sync_runs``, logs and metrics."""

    stats: WriteStats = field(default_factory=WriteStats)
    api_calls: dict[str, int] = field(default_factory=dict)
    api_errors: dict[str, int] = field(default_factory=dict)
    pages: int = 0


def start_run(engine: Engine, source: str, kind: str, started_at: datetime) -> int:
    with engine.begin() as connection:
        result = connection.execute(
            sync_runs.insert().returning(sync_runs.c.run_id),
            {
                "source": source,
                "kind": kind,
                "started_at": started_at,
                "outcome": "running",
                "host": f"{socket.gethostname()}:{os.getpid()}",
            },
        )
        return int(result.scalar_one())


def finish_run(
    connection: Connection,
    run_id: int,
    outcome: str,
    figures: RunFigures,
    error: str | None = None,
) -> None:
    connection.execute(
        update(sync_runs)
        .where(sync_runs.c.run_id == run_id)
        .values(
            finished_at=utcnow(),
            outcome=outcome,
            api_calls=dict(figures.api_calls),
            api_errors=dict(figures.api_errors),
            pages=figures.pages,
            rows_inserted=figures.stats.inserted,
            rows_updated=figures.stats.updated,
            rows_unchanged=figures.stats.unchanged,
            rows_rejected=figures.stats.rejected,
            rows_removed=figures.stats.removed,
            error=error[:2000] if error else None,
        )
    )


def abandon_stale_runs(engine: Engine, source: str) -> int:
    """Mark runs left ``running`` by a dead process (we hold the source lock) as failed."""
    with engine.begin() as connection:
        result = connection.execute(
            update(sync_runs)
            .where(sync_runs.c.source == source, sync_runs.c.outcome == "running")
            .values(outcome="failed", error="the process ended before the run finished")
        )
        return int(result.rowcount or 0)


def _lock_key(source: str) -> int:
    return zlib.crc32(source.encode("utf-8")) - 2**31


class SourceLock:
    """The per-source lock a run holds; ``held()`` says whether it still is."""

    def __init__(self, check: Callable[[], bool] | None = None) -> None:
        self._check = check

    def held(self) -> bool:
        if self._check is None:
            return True
        try:
            return self._check()
        except Exception:  # noqa: BLE001 - a dead lock connection means the lock is gone
            return False


@contextlib.contextmanager
def source_lock(engine: Engine, source: str) -> Iterator[SourceLock | None]:
    """Hold the per-source lock for a run; yields None if another process holds it.

    PostgreSQL: a session advisory lock on a dedicated connection (if that connection dies
    the lock is gone, which ``SourceLock.held`` detects). SQLite: ``flock`` on a file beside
    the database (processes on one machine).
    """
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            # Advisory locks are per database: the key includes the schema, so that two
            # warehouses in one database do not block each other.
            schema = connection.execute(text("SELECT current_schema()")).scalar_one()
            params = {"ns": _LOCK_NAMESPACE, "key": _lock_key(f"{schema}/{source}")}
            got = connection.execute(
                text("SELECT pg_try_advisory_lock(:ns, :key)"), params
            ).scalar_one()
            connection.commit()
            if not got:
                yield None
                return

            def check() -> bool:
                held = connection.execute(
                    text(
                        "SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' "
                        "AND pid = pg_backend_pid() AND classid::bigint = :ns "
                        "AND objid::bigint = (CAST(:key AS bigint) & 4294967295) AND granted)"
                    ),
                    params,
                ).scalar_one()
                connection.commit()
                return bool(held)

            try:
                yield SourceLock(check)
            finally:
                with contextlib.suppress(Exception):
                    connection.execute(text("SELECT pg_advisory_unlock(:ns, :key)"), params)
                    connection.commit()
        return
    database = engine.url.database or "signer-sync"
    path = Path(f"{database}.{source}.lock")
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        try:
            yield SourceLock()
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
