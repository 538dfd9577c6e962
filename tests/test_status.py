"""``signer-sync status``: what the warehouse says about each source, and its exit code."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from signer_sync.cli import app
from signer_sync.config import load_settings
from signer_sync.emulator.server import EmulatorServer, Faults
from signer_sync.errors import SyncFailed
from signer_sync.status import RunInfo, stale_reason
from signer_sync.warehouse.schema import sync_runs
from tests.conftest import Warehouse, make_sync
from tests.test_cli import run


def _env(wh: Warehouse, server: EmulatorServer, name: str, **extra: str) -> dict[str, str]:
    return {
        **wh.env,
        "SIGNER_SYNC_SOURCE_NAME": name,
        "SIGNER_SYNC_REGION": server.world.region,
        "SIGNER_SYNC_ENDPOINT_URL": server.url,
        **extra,
    }


def _status(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["status", *args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout


def test_status_before_and_after_a_sync(
    warehouse: Warehouse, emulator: EmulatorServer, tmp_path: Path
) -> None:
    name = f"status-{uuid.uuid4().hex[:8]}"
    env = _env(warehouse, emulator, name)
    world = emulator.world
    world.seed_organisation(200)

    code, out = _status(env, "--json")
    assert code == 1
    before = json.loads(out)
    assert before["healthy"] is False
    assert before["sources"][0]["source"] == name
    assert before["sources"][0]["stale_reason"] == "never synced"
    assert before["sources"][0]["last_run"] is None

    make_sync(warehouse, emulator, name).backfill()
    code, out = _status(env, "--json")
    assert code == 0, out
    after = json.loads(out)
    source = after["sources"][0]
    listed = world.listed_jobs()
    assert after["healthy"] is True and source["stale"] is False
    assert source["rows_by_status"] == dict(Counter(job.status for job in listed))
    assert source["last_run"]["kind"] == "backfill"
    assert source["last_run"]["outcome"] == "succeeded"
    assert source["watermark"] is not None and 0 <= source["lag_seconds"] < 120
    assert source["running"] is False
    assert after["totals"]["jobs"] == len(listed)
    assert after["totals"]["revoked"] == sum(job.is_revoked for job in listed)
    assert after["totals"]["runs"] == 1

    code, out = _status(env)
    assert code == 0
    assert name in out and "backfill succeeded" in out and f"{len(listed)} jobs" in out


def test_status_is_stale_after_three_intervals_and_shows_the_last_error(
    warehouse: Warehouse, emulator: EmulatorServer, tmp_path: Path
) -> None:
    """Through the real command line: JSON on stdout, exit code 1."""
    name = f"stale-{uuid.uuid4().hex[:8]}"
    emulator.world.seed_organisation(50)
    make_sync(warehouse, emulator, name).backfill()
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    with warehouse.engine.begin() as connection:
        connection.execute(
            update(sync_runs)
            .where(sync_runs.c.source == name)
            .values(started_at=hour_ago, finished_at=hour_ago)
        )
    emulator.faults = Faults(error_rate=1.0)
    impatient = load_settings(environ=warehouse.env, aws_max_attempts=1)
    with pytest.raises(SyncFailed):
        make_sync(warehouse, emulator, name, settings=impatient).sync()

    env = _env(warehouse, emulator, name, SIGNER_SYNC_INTERVAL="10m")
    result = run("status", "--json", env=env, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    source = json.loads(result.stdout)["sources"][0]
    assert source["stale"] is True
    assert source["stale_reason"].startswith("no successful run for 60m (stale after 30m)")
    assert "InternalServiceErrorException" in source["stale_reason"]
    assert source["last_run"]["outcome"] == "failed"

    fresh = run("status", "--json", env={**env, "SIGNER_SYNC_INTERVAL": "1h"}, cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr


def test_stale_reason() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    minute = timedelta(minutes=1)
    assert stale_reason(now - 2 * minute, now, minute) is None
    assert stale_reason(now - 3 * minute, now, minute) == (
        "no successful run for 3m (stale after 3m)"
    )
    assert stale_reason(None, now, minute) == "never synced"
    failed = RunInfo(7, "incremental", "failed", now, now, "API down")
    assert stale_reason(None, now, minute, failed) == "never synced; last run failed: API down"
    assert stale_reason(now - minute, now, minute, failed) is None
