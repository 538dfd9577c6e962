"""``signer-sync status``: what the warehouse says about each source, for people and scripts.

Unlike ``/healthz`` (one daemon's memory), this reads the warehouse, so it describes the
work of every replica and of one-off ``sync``/``backfill`` runs alike. A source is stale
when it has no successful run within three intervals; the command then exits 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console
from rich.markup import escape
from sqlalchemy import Connection, Engine, and_, func, select

from signer_sync.config import Settings, SourceConfig
from signer_sync.observability import STALE_AFTER_INTERVALS, format_span
from signer_sync.warehouse.db import describe_target
from signer_sync.warehouse.schema import (
    rejected_records,
    signing_job_events,
    signing_jobs,
    signing_profiles,
    sync_runs,
    sync_state,
)
from signer_sync.warehouse.state import JOBS_STREAM


@dataclass(frozen=True)
class RunInfo:
    run_id: int
    kind: str
    outcome: str
    started_at: datetime
    finished_at: datetime | None
    error: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "kind": self.kind,
            "outcome": self.outcome,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "error": self.error,
        }


@dataclass(frozen=True)
class SourceStatus:
    name: str
    last_run: RunInfo | None
    last_success_at: datetime | None
    running: bool
    watermark: datetime | None
    lag: timedelta | None
    rows_by_status: dict[str, int]
    removed_from_api: int
    stale_reason: str | None

    @property
    def stale(self) -> bool:
        return self.stale_reason is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "stale": self.stale,
            "stale_reason": self.stale_reason,
            "last_run": self.last_run.to_json() if self.last_run else None,
            "last_success_at": _iso(self.last_success_at),
            "running": self.running,
            "watermark": _iso(self.watermark),
            "lag_seconds": None if self.lag is None else round(self.lag.total_seconds(), 3),
            "rows_by_status": self.rows_by_status,
            "removed_from_api": self.removed_from_api,
        }


@dataclass(frozen=True)
class WarehouseStatus:
    target: str
    checked_at: datetime
    interval: timedelta
    sources: tuple[SourceStatus, ...]
    totals: dict[str, Any] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return not any(source.stale for source in self.sources)

    def to_json(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "warehouse": self.target,
            "checked_at": _iso(self.checked_at),
            "interval_seconds": self.interval.total_seconds(),
            "stale_after_seconds": (self.interval * STALE_AFTER_INTERVALS).total_seconds(),
            "sources": [source.to_json() for source in self.sources],
            "totals": self.totals,
        }


def stale_reason(
    last_success_at: datetime | None,
    now: datetime,
    interval: timedelta,
    last_run: RunInfo | None = None,
) -> str | None:
    """Why a source is stale, or None when its last success is within three intervals."""
    failed = (
        f"; last run {last_run.outcome}: {last_run.error}"
        if last_run is not None and last_run.outcome == "failed" and last_run.error
        else ""
    )
    if last_success_at is None:
        return f"never synced{failed}"
    age, limit = now - last_success_at, interval * STALE_AFTER_INTERVALS
    if age < limit:
        return None
    return f"no successful run for {format_span(age)} (stale after {format_span(limit)}){failed}"


def collect_status(
    engine: Engine,
    settings: Settings,
    sources: tuple[SourceConfig, ...],
    now: datetime | None = None,
) -> WarehouseStatus:
    """Read each source's runs, watermark and rows, and the warehouse totals."""
    now = now or datetime.now(UTC)
    with engine.connect() as connection:
        statuses = tuple(
            _source_status(connection, source.name, now, settings.interval) for source in sources
        )
        totals = _totals(connection)
    return WarehouseStatus(
        target=describe_target(settings),
        checked_at=now,
        interval=settings.interval,
        sources=statuses,
        totals=totals,
    )


def _source_status(
    connection: Connection, name: str, now: datetime, interval: timedelta
) -> SourceStatus:
    runs = sync_runs.c
    row = connection.execute(
        select(runs.run_id, runs.kind, runs.outcome, runs.started_at, runs.finished_at, runs.error)
        .where(runs.source == name)
        .order_by(runs.started_at.desc(), runs.run_id.desc())
        .limit(1)
    ).first()
    last_run = (
        RunInfo(
            run_id=int(row.run_id),
            kind=row.kind,
            outcome=row.outcome,
            started_at=row.started_at,
            finished_at=row.finished_at,
            error=row.error,
        )
        if row is not None
        else None
    )
    last_success = connection.execute(
        select(func.max(runs.finished_at)).where(runs.source == name, runs.outcome == "succeeded")
    ).scalar_one()
    running = (
        connection.execute(
            select(func.count()).where(runs.source == name, runs.outcome == "running")
        ).scalar_one()
        > 0
    )
    watermark = connection.execute(
        select(sync_state.c.watermark).where(
            sync_state.c.source == name, sync_state.c.stream == JOBS_STREAM
        )
    ).scalar_one_or_none()
    jobs = signing_jobs.c
    by_status = {
        str(status): int(count)
        for status, count in connection.execute(
            select(jobs.status, func.count())
            .where(jobs.source == name, jobs.removed_from_api_at.is_(None))
            .group_by(jobs.status)
            .order_by(jobs.status)
        )
    }
    removed = connection.execute(
        select(func.count()).where(jobs.source == name, jobs.removed_from_api_at.is_not(None))
    ).scalar_one()
    return SourceStatus(
        name=name,
        last_run=last_run,
        last_success_at=last_success,
        running=running,
        watermark=watermark,
        lag=(now - watermark) if watermark is not None else None,
        rows_by_status=by_status,
        removed_from_api=int(removed),
        stale_reason=stale_reason(last_success, now, interval, last_run),
    )


def _totals(connection: Connection) -> dict[str, Any]:
    jobs = signing_jobs.c

    def count(table: Any, *where: Any) -> int:
        query = select(func.count()).select_from(table)
        if where:
            query = query.where(and_(*where))
        return int(connection.execute(query).scalar_one())

    by_status = {
        str(status): int(n)
        for status, n in connection.execute(
            select(jobs.status, func.count()).group_by(jobs.status).order_by(jobs.status)
        )
    }
    return {
        "jobs": sum(by_status.values()),
        "jobs_by_status": by_status,
        "revoked": count(signing_jobs, jobs.is_revoked.is_(True)),
        "removed_from_api": count(signing_jobs, jobs.removed_from_api_at.is_not(None)),
        "events": count(signing_job_events),
        "profile_versions": count(signing_profiles),
        "rejected_records": count(rejected_records),
        "runs": count(sync_runs),
    }


def render_text(status: WarehouseStatus, console: Console) -> None:
    """A few lines per source for people; ``--json`` is the stable interface for scripts."""
    console.print(
        f"warehouse: {escape(status.target)} (checked {_short(status.checked_at)})",
        highlight=False,
    )
    for source in status.sources:
        verdict = f"[red]STALE[/]: {escape(source.stale_reason)}" if source.stale_reason else "ok"
        lines = [f"[bold]{escape(source.name)}[/]: {verdict}"]
        run = source.last_run
        if run is not None:
            text = f"{run.kind} {run.outcome}, started {_short(run.started_at)}"
            if run.finished_at is not None:
                text += f", finished {_short(run.finished_at)}"
            lines.append(f"  last run:     {escape(text)}")
            if run.error:
                lines.append(f"  error:        {escape(run.error)}")
        else:
            lines.append("  last run:     none")
        if source.running:
            lines.append("  running:      a run is in progress")
        if source.last_success_at is not None:
            age = format_span(status.checked_at - source.last_success_at)
            lines.append(f"  last success: {_short(source.last_success_at)} ({age} ago)")
        if source.watermark is not None and source.lag is not None:
            lines.append(
                f"  watermark:    {_short(source.watermark)} (lag {format_span(source.lag)})"
            )
        rows = ", ".join(f"{name} {count}" for name, count in source.rows_by_status.items())
        lines.append(
            f"  rows:         {escape(rows) or 'none'}; "
            f"{source.removed_from_api} removed from the API"
        )
        for line in lines:
            console.print(line, highlight=False)
    totals = status.totals
    by_status = ", ".join(f"{k} {v}" for k, v in totals.get("jobs_by_status", {}).items())
    console.print(
        f"totals: {totals.get('jobs', 0)} jobs ({escape(by_status) or 'none'}); "
        f"{totals.get('revoked', 0)} revoked; {totals.get('removed_from_api', 0)} removed "
        f"from the API; {totals.get('events', 0)} events; "
        f"{totals.get('profile_versions', 0)} profile versions; "
        f"{totals.get('rejected_records', 0)} rejected records; {totals.get('runs', 0)} runs",
        highlight=False,
    )


def _iso(at: datetime | None) -> str | None:
    return at.isoformat().replace("+00:00", "Z") if at is not None else None


def _short(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%SZ") if at is not None else "-"
