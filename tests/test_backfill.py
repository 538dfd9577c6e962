"""End to end: emulator over HTTP -> backfill -> warehouse equals the API's truth."""

from __future__ import annotations

from sqlalchemy import func, select

from signer_sync.config import load_settings
from signer_sync.emulator.server import EmulatorServer
from signer_sync.warehouse.schema import (
    listing_seen,
    signing_job_events,
    signing_jobs,
    signing_profiles,
    sync_runs,
    sync_state,
)
from tests.conftest import Warehouse, assert_matches_truth, make_sync, warehouse_rows


def _count(wh: Warehouse, table: object, *where: object) -> int:
    with wh.engine.connect() as connection:
        return int(
            connection.execute(select(func.count()).select_from(table).where(*where)).scalar_one()
        )  # type: ignore[arg-type]


def test_backfill_of_10000_jobs_equals_the_api_field_by_field(
    warehouse: Warehouse, emulator: EmulatorServer
) -> None:
    world = emulator.world
    world.seed_organisation(10_000, years=2.5)  # some jobs older than two years: not listed
    listed = world.listed_jobs()
    assert 7500 < len(listed) < 10_000

    report = make_sync(warehouse, emulator).backfill()

    assert report.outcome == "succeeded"
    assert report.stats.inserted == len(listed)
    rows = assert_matches_truth(warehouse.engine, world)
    assert len(rows) == len(listed)
    revoked = [job for job in listed if job.is_revoked]
    assert revoked and all(rows[job.job_id]["revoked_at"] == job.revoked_at for job in revoked)
    # one first_seen event per job, profiles stored with canceled ones
    first_seen = signing_job_events.c.kind == "first_seen"
    assert _count(warehouse, signing_job_events, first_seen) == len(listed)
    assert _count(warehouse, signing_profiles) == len({p.name for p in world.profiles()})
    # the run is recorded with its API calls; ids of the listing are not left behind
    with warehouse.engine.connect() as connection:
        run = connection.execute(select(sync_runs)).mappings().one()
        state = connection.execute(select(sync_state)).mappings().one()
    assert run["outcome"] == "succeeded" and run["kind"] == "backfill"
    assert run["rows_inserted"] == len(listed)
    assert run["api_calls"]["ListSigningJobs"] == emulator.calls["ListSigningJobs"]
    assert run["api_calls"]["ListSigningJobs"] >= len(listed) / 25
    assert state["watermark"] is not None and state["run_id"] == run["run_id"]
    assert _count(warehouse, listing_seen) == 0


def test_second_backfill_rewrites_nothing(warehouse: Warehouse, emulator: EmulatorServer) -> None:
    world = emulator.world
    world.seed_organisation(1500)
    make_sync(warehouse, emulator).backfill()
    before = warehouse_rows(warehouse.engine)
    events_before = _count(warehouse, signing_job_events)
    versions_before = _row_versions(warehouse)

    report = make_sync(warehouse, emulator).backfill()

    assert (report.stats.inserted, report.stats.updated) == (0, 0)
    assert report.stats.unchanged >= len(world.listed_jobs())  # windows may overlap at edges
    assert warehouse_rows(warehouse.engine) == before  # last_changed_at kept too
    assert _count(warehouse, signing_job_events) == events_before
    assert _row_versions(warehouse) == versions_before  # no row was physically rewritten


def _row_versions(wh: Warehouse) -> dict[str, str]:
    """PostgreSQL: each row's xmin (a rewrite, even to equal values, changes it).
    SQLite has no such thing; compare the values only."""
    if wh.kind != "postgresql":
        return {}
    with wh.engine.connect() as connection:
        result = connection.exec_driver_sql("SELECT job_id, xmin::text FROM signing_jobs")
        return {job_id: xmin for job_id, xmin in result}


def test_jobs_aged_out_are_marked_removed_never_deleted(
    warehouse: Warehouse, emulator: EmulatorServer
) -> None:
    world = emulator.world
    world.seed_organisation(800)
    make_sync(warehouse, emulator).backfill()
    stored = len(warehouse_rows(warehouse.engine))
    gone = [job.job_id for job in world.listed_jobs()[:25]]
    for job_id in gone:
        world.forget(job_id)

    report = make_sync(warehouse, emulator).backfill()

    assert report.stats.removed == len(gone)
    rows = warehouse_rows(warehouse.engine)
    assert len(rows) == stored  # nothing deleted
    assert all(rows[job_id]["removed_from_api_at"] is not None for job_id in gone)
    assert sum(1 for row in rows.values() if row["removed_from_api_at"] is not None) == len(gone)
    assert_matches_truth(warehouse.engine, world)
    assert _count(
        warehouse, signing_job_events, signing_job_events.c.kind == "removed_from_api"
    ) == len(gone)
    # a third backfill finds nothing new to mark
    assert make_sync(warehouse, emulator).backfill().stats.removed == 0


def test_raw_items_with_odd_values_are_kept_or_quarantined(
    warehouse: Warehouse, emulator: EmulatorServer
) -> None:
    world = emulator.world
    world.seed_organisation(100)
    world.add_raw_item({"status": "Succeeded", "profileName": "no-id"})
    world.add_raw_item({"jobId": "odd-1", "status": "Quarantined", "createdAt": "not a time"})
    world.add_raw_item(
        {"jobId": "odd-2", "status": "Succeeded", "createdAt": 1e30, "isRevoked": "yes"}
    )

    # The emulator serves such records only to unfiltered listings: a serial backfill.
    serial = load_settings(environ=warehouse.env, backfill_partitions=False)
    report = make_sync(warehouse, emulator, settings=serial).backfill()

    assert report.outcome == "succeeded"
    assert report.stats.rejected == 1
    rows = warehouse_rows(warehouse.engine)
    assert rows["odd-1"]["status"] == "Quarantined" and rows["odd-1"]["created_at"] is None
    assert rows["odd-1"]["raw"]["createdAt"] == "not a time"
    assert rows["odd-2"]["created_at"] is None and rows["odd-2"]["is_revoked"] is None
    assert len([r for r in rows if not r.startswith("odd-")]) == len(world.listed_jobs())
    with warehouse.engine.connect() as connection:
        from signer_sync.warehouse.schema import rejected_records

        rejected = connection.execute(select(rejected_records)).mappings().one()
    assert rejected["payload"] == {"status": "Succeeded", "profileName": "no-id"}
    assert "jobId" in rejected["reason"]
    assert _count(warehouse, signing_jobs) == len(rows)
