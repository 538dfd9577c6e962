"""Shared helpers for the benchmarks: synthetic jobs, scratch warehouses, medians."""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, text

from signer_sync.config import Settings, load_settings
from signer_sync.emulator.world import World
from signer_sync.records import SigningJob, map_list_item
from signer_sync.warehouse.db import make_engine, migrate

PG_URL = os.environ.get(
    "SIGNER_SYNC_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def synthetic_jobs(count: int, seed: int = 1) -> tuple[World, list[SigningJob]]:
    """``count`` mapped signing jobs from a seeded emulated organisation."""
    world = World(seed=seed, frozen=True)
    world.seed_organisation(count)
    items = world.listed_items()
    jobs = [map_list_item(item, region=world.region, source="bench") for item in items]
    return world, [job for job in jobs if isinstance(job, SigningJob)]


@contextmanager
def scratch_warehouse(**overrides: Any) -> Iterator[tuple[Settings, Any]]:
    """A migrated PostgreSQL schema, dropped afterwards."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    settings = load_settings(
        environ={"SIGNER_SYNC_DATABASE_URL": PG_URL, "SIGNER_SYNC_DB_SCHEMA": schema}, **overrides
    )
    engine = make_engine(settings)
    migrate(engine, settings)
    try:
        yield settings, engine
    finally:
        engine.dispose()
        admin = create_engine(PG_URL)
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def timed(function: Callable[[], Any]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)
