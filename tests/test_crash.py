"""Crash safety: SIGKILL a sync or backfill process at seeded random moments; the
watermark is never ahead of committed data, and the next run converges with no job
missing and no duplicate."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from sqlalchemy import func, select

from signer_sync.emulator.server import EmulatorServer, Faults
from signer_sync.emulator.world import World
from signer_sync.warehouse.schema import signing_job_events, sync_runs, sync_state
from tests.conftest import AWS_ENV, Warehouse, assert_matches_truth, make_sync

TRIALS = int(os.environ.get("SIGNER_SYNC_CRASH_TRIALS", "10"))


def _spawn(command: str, wh: Warehouse, server: EmulatorServer) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNER_SYNC_", "AWS_"))}
    env.update(AWS_ENV)
    env.update(wh.env)
    env.update(
        SIGNER_SYNC_ENDPOINT_URL=server.url,
        SIGNER_SYNC_REGION=server.world.region,
        SIGNER_SYNC_REQUESTS_PER_SECOND="5000",
        SIGNER_SYNC_BATCH_SIZE="50",
        SIGNER_SYNC_CONCURRENCY="2",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "signer_sync", command],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _state(wh: Warehouse) -> dict[str, Any] | None:
    with wh.engine.connect() as connection:
        row = connection.execute(select(sync_state)).mappings().first()
    return dict(row) if row else None


def _wait_for_running_run(wh: Warehouse) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with wh.engine.connect() as connection:
            running = connection.execute(
                select(func.count()).where(sync_runs.c.outcome == "running")
            ).scalar_one()
        if running:
            return
        time.sleep(0.01)
    raise AssertionError("the sync process never started a run")


def _duplicate_first_seen(wh: Warehouse) -> int:
    with wh.engine.connect() as connection:
        per_job = (
            select(signing_job_events.c.job_id, func.count().label("n"))
            .where(signing_job_events.c.kind == "first_seen")
            .group_by(signing_job_events.c.job_id)
            .subquery()
        )
        return int(
            connection.execute(
                select(func.count()).select_from(per_job).where(per_job.c.n > 1)
            ).scalar_one()
        )


@pytest.mark.slow
@pytest.mark.parametrize("command", ["sync", "backfill"])
def test_sigkill_at_random_points_loses_nothing(pg_warehouse: Warehouse, command: str) -> None:
    rng = random.Random(f"crash-{command}")
    world = World(seed=23)
    world.seed_organisation(1200)
    killed_mid_run = 0
    with EmulatorServer(world, faults=Faults(latency_ms=25)) as server:
        make_sync(pg_warehouse, server, "default").sync()  # the starting point: synced
        for trial in range(TRIALS):
            since = world.now
            world.add_random_jobs(rng.randint(20, 120), since=since)
            for job in rng.sample([j for j in world.listed_jobs() if j.status == "Succeeded"], 3):
                if not job.is_revoked:
                    world.revoke_job(job.job_id)
            before = _state(pg_warehouse)
            process = _spawn(command, pg_warehouse, server)
            inside = rng.random() < 0.8  # most kills land inside the run, a few before it
            if inside:
                _wait_for_running_run(pg_warehouse)
                time.sleep(rng.uniform(0, 0.8 if command == "sync" else 2.0))
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            stored = _state(pg_warehouse)
            if inside and stored is not None and stored["run_id"] == before["run_id"]:
                killed_mid_run += 1
            # (counted above: killed inside the run, before it stored a watermark)
            # The watermark is never ahead of the data: if the killed run stored one, every
            # row that run was responsible for is already committed.
            after = _state(pg_warehouse)
            assert after is not None and before is not None
            if after["run_id"] != before["run_id"]:
                assert_matches_truth(pg_warehouse.engine, world, "default")
            # The next run converges.
            report = make_sync(pg_warehouse, server, "default").sync()
            assert report.outcome == "succeeded", trial
            assert_matches_truth(pg_warehouse.engine, world, "default")
            assert _duplicate_first_seen(pg_warehouse) == 0
    assert killed_mid_run >= TRIALS // 3  # kills really hit runs before they finished
    with pg_warehouse.engine.connect() as connection:
        outcomes = dict(
            connection.execute(
                select(sync_runs.c.outcome, func.count()).group_by(sync_runs.c.outcome)
            ).all()
        )
    assert outcomes.get("running", 0) == 0  # dead runs are marked failed by the next run
    print(f"{command}: {TRIALS} trials, {killed_mid_run} killed mid-run, outcomes {outcomes}")
