"""Shared fixtures: a migrated warehouse on real PostgreSQL (own schema per test) or
SQLite (own file), an emulated Signer API over HTTP, and the field-by-field truth check."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from sqlalchemy import Engine, create_engine, select, text

from signer_sync.config import Settings, SourceConfig, load_settings
from signer_sync.emulator.server import EmulatorServer
from signer_sync.emulator.world import Job, World
from signer_sync.source import SignerApi
from signer_sync.sync import SourceSync
from signer_sync.warehouse.db import make_engine, migrate
from signer_sync.warehouse.schema import signing_jobs

PG_URL = os.environ.get(
    "SIGNER_SYNC_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIATESTTESTTESTTEST",
    "AWS_SECRET_ACCESS_KEY": "test-secret-key-never-printed",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's AWS or signer-sync settings."""
    for name in list(os.environ):
        if name.startswith(("SIGNER_SYNC_", "AWS_")) and name != "SIGNER_SYNC_TEST_DATABASE_URL":
            monkeypatch.delenv(name, raising=False)
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")


@dataclass
class Warehouse:
    settings: Settings
    engine: Engine
    env: dict[str, str]
    """Environment variables that point a subprocess at this warehouse."""

    @property
    def kind(self) -> str:
        return self.engine.dialect.name


def _new_warehouse(kind: str, tmp_path: Path, **overrides: Any) -> tuple[Warehouse, Any]:
    if kind == "postgresql":
        schema = f"t_{uuid.uuid4().hex[:12]}"
        env = {"SIGNER_SYNC_DATABASE_URL": PG_URL, "SIGNER_SYNC_DB_SCHEMA": schema}
    else:
        schema = None
        env = {"SIGNER_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'warehouse.db'}"}
    settings = load_settings(environ=env, **overrides)
    engine = make_engine(settings)
    migrate(engine, settings)

    def cleanup() -> None:
        engine.dispose()
        if schema is not None:
            admin = create_engine(PG_URL)
            with admin.begin() as connection:
                connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            admin.dispose()

    return Warehouse(settings, engine, env), cleanup


@pytest.fixture(params=["postgresql", "sqlite"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    """A migrated warehouse; every test using it runs on both databases."""
    wh, cleanup = _new_warehouse(request.param, tmp_path)
    yield wh
    cleanup()


@pytest.fixture
def pg_warehouse(tmp_path: Path) -> Iterator[Warehouse]:
    wh, cleanup = _new_warehouse("postgresql", tmp_path)
    yield wh
    cleanup()


@pytest.fixture
def world() -> World:
    return World(seed=7, month_rule="calendar")


@pytest.fixture
def emulator(world: World) -> Iterator[EmulatorServer]:
    with EmulatorServer(world) as server:
        yield server


def source_for(server: EmulatorServer, name: str = "main", **extra: Any) -> SourceConfig:
    return SourceConfig(name=name, region=server.world.region, endpoint_url=server.url, **extra)


def make_sync(
    wh: Warehouse,
    server: EmulatorServer,
    name: str = "main",
    *,
    clock: Any = None,
    settings: Settings | None = None,
    **source_extra: Any,
) -> SourceSync:
    """A sync of ``server`` into ``wh`` whose clock is the emulated world's."""
    settings = settings or wh.settings
    source_extra.setdefault("requests_per_second", 5000)
    source = source_for(server, name, **source_extra)
    api = SignerApi(source, settings, session=boto3.Session())
    world = server.world
    return SourceSync(settings, source, wh.engine, api=api, clock=clock or (lambda: world.now))


# -- the truth ------------------------------------------------------------------------

LIST_FIELDS = (
    "status",
    "is_revoked",
    "created_at",
    "signature_expires_at",
    "profile_name",
    "profile_version",
    "platform_id",
    "platform_display_name",
    "source_bucket",
    "source_key",
    "source_version",
    "signed_bucket",
    "signed_key",
    "certificate_arn",
    "job_owner",
    "job_invoker",
)
REVOCATION_FIELDS = ("revoked_at", "revoked_by", "revocation_reason")


def warehouse_rows(engine: Engine, source: str | None = None) -> dict[str, dict[str, Any]]:
    query = select(signing_jobs)
    if source is not None:
        query = query.where(signing_jobs.c.source == source)
    with engine.connect() as connection:
        return {row["job_id"]: dict(row) for row in connection.execute(query).mappings()}


def assert_matches_truth(
    engine: Engine,
    world: World,
    source: str = "main",
    *,
    details: tuple[str, ...] = REVOCATION_FIELDS,
) -> dict[str, dict[str, Any]]:
    """Every job the API lists is in the warehouse, field by field, with its raw item and
    (for revoked jobs) its revocation record, and none of them is marked removed."""
    rows = warehouse_rows(engine, source)
    listed = world.listed_jobs()
    problems: list[str] = []
    for job in listed:
        row = rows.get(job.job_id)
        if row is None:
            problems.append(
                f"{job.job_id}: missing ({job.status}, expires {job.signature_expires_at})"
            )
            continue
        for name in LIST_FIELDS:
            if row[name] != getattr(job, name):
                problems.append(
                    f"{job.job_id}.{name}: warehouse {row[name]!r} != API {getattr(job, name)!r}"
                )
        if row["region"] != world.region:
            problems.append(f"{job.job_id}.region: {row['region']!r}")
        if row["raw"] != world.list_item(job):
            problems.append(f"{job.job_id}.raw differs")
        if row["removed_from_api_at"] is not None:
            problems.append(f"{job.job_id}: marked removed but listed")
        if job.is_revoked:
            for name in details:
                if row[name] != getattr(job, name):
                    problems.append(f"{job.job_id}.{name}: {row[name]!r} != {getattr(job, name)!r}")
    assert not problems, f"{len(problems)} differences, first ones:\n" + "\n".join(problems[:15])
    return rows


def job_for(world: World, job_id: str) -> Job:
    return next(job for job in world.all_jobs() if job.job_id == job_id)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]
