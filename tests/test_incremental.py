"""Incremental sync scenarios against the emulator over HTTP: after every sync the
warehouse equals the API's truth field by field, at a cost proportional to what changed."""

from __future__ import annotations

import math
import random
from datetime import timedelta

import pytest
from sqlalchemy import select

from signer_sync.config import load_settings
from signer_sync.emulator.server import EmulatorServer, Faults
from signer_sync.emulator.world import World
from signer_sync.errors import SyncFailed
from signer_sync.warehouse.schema import signing_job_events, sync_runs, sync_state
from tests.conftest import Warehouse, assert_matches_truth, make_sync, warehouse_rows


def _mutate(world: World, rng: random.Random, since_last: object) -> dict[str, list[str]]:
    """A few hours of life in an account: new jobs on every profile, completions,
    failures, revocations of old jobs, jobs aging out."""
    world.advance(timedelta(hours=rng.randint(2, 30)))
    touched: dict[str, list[str]] = {"completed": [], "failed": [], "revoked": []}
    listed = world.listed_jobs()
    in_progress = [job for job in listed if job.status == "InProgress"]
    for job in rng.sample(in_progress, min(len(in_progress), 4)):
        if rng.random() < 0.6:
            world.complete_job(job.job_id)
            touched["completed"].append(job.job_id)
        else:
            world.fail_job(job.job_id, "Source object not found")
            touched["failed"].append(job.job_id)
    succeeded = [job for job in listed if job.status == "Succeeded" and not job.is_revoked]
    for job in rng.sample(succeeded, 3):
        world.revoke_job(job.job_id, "Key compromise")
        touched["revoked"].append(job.job_id)
    world.add_random_jobs(rng.randint(5, 40), since=since_last)  # type: ignore[arg-type]
    active = [p.name for p in world.profiles() if p.status == "Active"]
    for _ in range(3):  # failures never seen in progress, and short-validity jobs
        world.add_job(rng.choice(active), status="Failed")
    world.add_job("nightly_builds")
    for job in rng.sample(world.listed_jobs(), 2):
        world.forget(job.job_id)
    return touched


@pytest.mark.parametrize("month_rule", ["calendar", "thirty"])
def test_incremental_syncs_keep_the_warehouse_equal_to_the_api(
    warehouse: Warehouse, month_rule: str
) -> None:
    world = World(seed=11, month_rule=month_rule)
    world.seed_organisation(1500)
    rng = random.Random(5)
    with EmulatorServer(world) as server:
        first = make_sync(warehouse, server).sync()
        assert first.kind == "backfill"  # the first run of a source lists everything
        assert_matches_truth(warehouse.engine, world)
        for round_ in range(4):
            since = world.now
            if round_ == 2:  # a new profile version with a validity never seen before
                world.add_profile("containers", 45, "DAYS", platform_id="Notation-OCI-SHA384-ECDSA")
            touched = _mutate(world, rng, since)
            report = make_sync(warehouse, server).sync()
            assert report.kind == "incremental" and report.outcome == "succeeded"
            rows = assert_matches_truth(warehouse.engine, world)
            for job_id in touched["completed"] + touched["failed"]:
                job = world.get_job(job_id)
                assert rows[job_id]["completed_at"] == job.completed_at
                assert rows[job_id]["status_reason"] == job.status_reason
            for job_id in touched["revoked"]:
                assert rows[job_id]["revoked_at"] is not None
        # a sync with nothing new writes nothing
        quiet = make_sync(warehouse, server).sync()
        assert (quiet.stats.inserted, quiet.stats.updated) == (0, 0)


def test_job_with_an_earlier_expiry_than_everything_synced_is_found(
    warehouse: Warehouse, emulator: EmulatorServer
) -> None:
    """The newest job does not have the latest expiry: a max(expiry) watermark misses it."""
    world = emulator.world
    world.add_profile("long", 135, "MONTHS")
    world.add_profile("short", 3, "DAYS")
    world.add_job("long", created_at=world.now - timedelta(days=30))
    world.add_job("short", created_at=world.now - timedelta(days=1))
    make_sync(warehouse, emulator).sync()
    world.advance(timedelta(hours=1))
    since = world.now
    world.advance(timedelta(hours=1))
    fresh = [world.add_job("short", created_at=since + timedelta(minutes=m)) for m in (1, 30)]
    report = make_sync(warehouse, emulator).sync()
    assert report.stats.inserted == 2
    rows = assert_matches_truth(warehouse.engine, world)
    assert {job.job_id for job in fresh} <= set(rows)


def test_revocation_of_a_years_old_job_is_seen_with_its_record(
    warehouse: Warehouse, emulator: EmulatorServer
) -> None:
    world = emulator.world
    world.add_profile("firmware", 10, "YEARS")
    old = world.add_job("firmware", created_at=world.now - timedelta(days=600))
    make_sync(warehouse, emulator).sync()
    world.advance(timedelta(hours=3))
    world.revoke_job(old.job_id, "Key compromise", "arn:aws:iam::123456789012:user/security")
    make_sync(warehouse, emulator).sync()
    row = assert_matches_truth(warehouse.engine, world)[old.job_id]
    assert row["is_revoked"] is True
    assert row["revoked_by"] == "arn:aws:iam::123456789012:user/security"
    assert row["revocation_reason"] == "Key compromise"
    with warehouse.engine.connect() as connection:
        kinds = (
            connection.execute(
                select(signing_job_events.c.kind).where(signing_job_events.c.job_id == old.job_id)
            )
            .scalars()
            .all()
        )
    assert kinds[0] == "first_seen" and "revoked" in kinds


def test_watermark_only_moves_with_a_successful_run(
    pg_warehouse: Warehouse, emulator: EmulatorServer
) -> None:
    world = emulator.world
    world.seed_organisation(200)
    make_sync(pg_warehouse, emulator).sync()

    def mark() -> tuple[object, object]:
        with pg_warehouse.engine.connect() as connection:
            state = connection.execute(select(sync_state.c.watermark, sync_state.c.run_id)).one()
            last = connection.execute(
                select(sync_runs.c.run_id, sync_runs.c.started_at, sync_runs.c.outcome)
                .order_by(sync_runs.c.run_id.desc())
                .limit(1)
            ).one()
        return tuple(state), tuple(last)

    (watermark, run_id), (last_id, started, outcome) = mark()
    assert (watermark, run_id, outcome) == (started, last_id, "succeeded")
    # A run that fails leaves the watermark where it was.
    world.advance(timedelta(hours=1))
    emulator.faults = Faults(error_rate=1.0)
    failing = load_settings(environ=pg_warehouse.env, aws_max_attempts=1)
    with pytest.raises(SyncFailed):
        make_sync(pg_warehouse, emulator, settings=failing).sync()
    (watermark_after, run_after), (failed_id, _, failed_outcome) = mark()
    assert (watermark_after, run_after) == (watermark, run_id)
    assert failed_id > last_id and failed_outcome == "failed"
    # The next successful run moves it to its own start.
    emulator.faults = Faults()
    make_sync(pg_warehouse, emulator).sync()
    (watermark_next, run_next), (next_id, next_started, _) = mark()
    assert (watermark_next, run_next) == (next_started, next_id) and watermark_next > watermark


def test_ten_thousand_jobs_and_fifty_new_cost_under_a_tenth_of_a_full_listing(
    pg_warehouse: Warehouse, emulator: EmulatorServer
) -> None:
    world = emulator.world
    world.seed_organisation(10_000)
    make_sync(pg_warehouse, emulator).sync()
    full_listing_calls = math.ceil(len(world.listed_jobs()) / 25)
    world.advance(timedelta(hours=1))
    since = world.now
    world.advance(timedelta(minutes=10))
    world.add_random_jobs(50, since=since)
    emulator.reset_counters()

    report = make_sync(pg_warehouse, emulator).sync()

    assert report.kind == "incremental"
    assert report.stats.inserted == 50
    assert_matches_truth(pg_warehouse.engine, world)
    calls = emulator.calls["ListSigningJobs"]
    assert report.figures.api_calls["ListSigningJobs"] == calls  # sync_runs tells the truth
    failed = sum(1 for job in world.listed_jobs() if job.status == "Failed")
    revoked = sum(1 for job in world.listed_jobs() if job.is_revoked)
    print(f"incremental: {calls} ListSigningJobs calls, full listing {full_listing_calls}")
    assert calls < 0.10 * full_listing_calls, (calls, full_listing_calls, failed, revoked)
    with pg_warehouse.engine.connect() as connection:
        recorded = connection.execute(
            select(sync_runs.c.api_calls).order_by(sync_runs.c.run_id.desc()).limit(1)
        ).scalar_one()
    assert recorded["ListSigningJobs"] == calls


def test_unchanged_rows_are_not_rewritten_by_incremental_runs(
    warehouse: Warehouse, emulator: EmulatorServer
) -> None:
    emulator.world.seed_organisation(300)
    make_sync(warehouse, emulator).sync()
    before = warehouse_rows(warehouse.engine)
    emulator.world.advance(timedelta(minutes=30))
    report = make_sync(warehouse, emulator).sync()
    assert (report.stats.inserted, report.stats.updated) == (0, 0)
    assert warehouse_rows(warehouse.engine) == before
