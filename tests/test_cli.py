"""The command line as a user runs it: exit codes, one-line errors, no secrets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from signer_sync.emulator.server import EmulatorServer
from tests.conftest import AWS_ENV, Warehouse, assert_matches_truth


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNER_SYNC_", "AWS_"))}
    base.update(AWS_ENV)
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "signer_sync", *args],
        env=base,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_version_and_help() -> None:
    result = run("--version")
    assert result.returncode == 0 and "signer-sync 0." in result.stdout
    for command in ("migrate", "backfill", "sync", "demo", "emulator"):
        result = run(command, "--help")
        assert result.returncode == 0, result.stderr
        assert "Usage" in result.stdout


def test_unknown_option_is_usage_error() -> None:
    result = run("sync", "--frobnicate")
    assert result.returncode == 2
    assert "frobnicate" in result.stderr


def test_unreachable_database_names_host_and_port_never_the_password(tmp_path: Path) -> None:
    url = "postgresql+psycopg://signer:pa55-very-secret@127.0.0.1:1/warehouse"
    result = run("sync", env={"SIGNER_SYNC_DATABASE_URL": url}, cwd=tmp_path)
    assert result.returncode == 2
    assert "127.0.0.1:1" in result.stderr
    assert "pa55-very-secret" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3


def test_unmigrated_database_says_to_migrate(tmp_path: Path) -> None:
    result = run("backfill", env={"SIGNER_SYNC_DATABASE_URL": f"sqlite:///{tmp_path}/new.db"})
    assert result.returncode == 2
    assert "signer-sync migrate" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_setting_exits_2_naming_it(tmp_path: Path) -> None:
    result = run("sync", env={"SIGNER_SYNC_DB_SCHEMA": "x; drop table y"}, cwd=tmp_path)
    assert result.returncode == 2
    assert "SIGNER_SYNC_DB_SCHEMA" in result.stderr
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("warehouse", ["postgresql", "sqlite"], indirect=True)
def test_migrate_then_backfill_through_aws_endpoint_url_signer(
    warehouse: Warehouse, emulator: EmulatorServer, tmp_path: Path
) -> None:
    """No endpoint is configured: botocore's own AWS_ENDPOINT_URL_SIGNER is honoured."""
    emulator.world.seed_organisation(300)
    env = dict(warehouse.env, AWS_ENDPOINT_URL_SIGNER=emulator.url)
    assert run("migrate", env=env).returncode == 0
    result = run("backfill", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    listed = len(emulator.world.listed_jobs())
    assert f"{listed} new" in result.stdout
    assert_matches_truth(warehouse.engine, emulator.world, "default")
    result = run("sync", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "0 new, 0 changed" in result.stdout


def test_sync_failure_exits_1(tmp_path: Path) -> None:
    env = {
        "SIGNER_SYNC_DATABASE_URL": f"sqlite:///{tmp_path}/w.db",
        "SIGNER_SYNC_AWS_MAX_ATTEMPTS": "1",
    }
    assert run("migrate", env=env).returncode == 0
    env["AWS_ENDPOINT_URL_SIGNER"] = "http://127.0.0.1:1"
    result = run("sync", env=env)
    assert result.returncode == 1
    assert "default" in result.stderr and "failed" in result.stderr
    assert AWS_ENV["AWS_SECRET_ACCESS_KEY"] not in result.stderr + result.stdout


def test_demo_runs_on_embedded_defaults(tmp_path: Path) -> None:
    result = run("demo", "--jobs", "400", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "signer-sync.db").exists()
    assert "SELECT" in result.stdout and "signing_jobs_expiring" in result.stdout
    assert "backfill succeeded" in result.stdout


def test_database_migrated_by_a_newer_version_is_refused(tmp_path: Path) -> None:
    env = {"SIGNER_SYNC_DATABASE_URL": f"sqlite:///{tmp_path}/w.db"}
    assert run("migrate", env=env).returncode == 0
    import sqlite3

    with sqlite3.connect(tmp_path / "w.db") as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999_future'")
    result = run("sync", env=env)
    assert result.returncode == 2
    assert "newer version" in result.stderr and "Traceback" not in result.stderr


def test_bad_config_file_exits_2_naming_the_key_and_writes_nothing(tmp_path: Path) -> None:
    config = tmp_path / "signer-sync.toml"
    config.write_text('[[sources]]\nname = "prod"\nregion = "us-east-1"\nmax_rps = 3\n')
    env = {"SIGNER_SYNC_DATABASE_URL": f"sqlite:///{tmp_path}/w.db"}
    result = run("--config", str(config), "sync", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "sources[0].max_rps" in result.stderr and "unknown setting" in result.stderr
    assert not (tmp_path / "w.db").exists()
