"""Partitioned listings: their union equals a plain listing, also for jobs exactly on the
edges of the windows, whatever the API does at its (undocumented) bounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
from hypothesis import given
from hypothesis import strategies as st

from signer_sync.config import load_settings
from signer_sync.emulator.server import EmulatorServer
from signer_sync.emulator.world import World
from signer_sync.planning import MIN_WINDOW, ExpiryWindow, partition_expiry
from signer_sync.source import SignerApi
from tests.conftest import Warehouse, assert_matches_truth, make_sync, source_for, warehouse_rows

BASE = datetime(2026, 6, 1, tzinfo=UTC)
offsets = st.integers(min_value=-1000 * 86400, max_value=5000 * 86400)


@given(
    edges=st.lists(offsets, max_size=12),
    instant=offsets,
    splits=st.lists(st.booleans(), max_size=6),
)
def test_windows_cover_the_whole_axis_and_halves_cover_their_window(
    edges: list[int], instant: int, splits: list[bool]
) -> None:
    windows = partition_expiry(
        [BASE + timedelta(seconds=e) for e in edges],
        BASE - timedelta(days=800),
        BASE + timedelta(days=4300),
    )
    moment = BASE + timedelta(seconds=instant)
    assert windows[0].after is None and windows[-1].before is None
    holding = [w for w in windows if w.holds(moment)]
    assert holding  # every instant is read by some window
    window = holding[0]
    for left_first in splits:  # bisect repeatedly towards the instant
        halves = window.halves()
        if halves is None:
            assert (window.before or window.high) - (window.after or window.low) < 2 * MIN_WINDOW
            break
        assert any(half.holds(moment) for half in halves)
        window = next(
            half for half in (halves if left_first else halves[::-1]) if half.holds(moment)
        )


def _list(api: SignerApi, window: ExpiryWindow) -> list[str]:
    return [item["jobId"] for page in api.list_jobs(window.filters()) for item in page.jobs]


def test_union_of_windows_equals_a_plain_listing_with_jobs_on_the_edges(
    pg_warehouse: Warehouse,
) -> None:
    world = World(seed=3, month_rule="calendar")
    world.seed_organisation(600)
    succeeded = sorted(
        (job for job in world.listed_jobs() if job.signature_expires_at is not None),
        key=lambda job: job.signature_expires_at,  # type: ignore[arg-type, return-value]
    )
    # Cut exactly at the expiry of some jobs, so they sit on the edges.
    edges = [succeeded[i].signature_expires_at for i in range(50, len(succeeded), 70)]
    windows = partition_expiry(
        edges, world.now - timedelta(days=800), world.now + timedelta(days=4300)
    )  # type: ignore[arg-type]
    with EmulatorServer(world) as server:
        api = SignerApi(source_for(server), pg_warehouse.settings, session=boto3.Session())
        plain = [item["jobId"] for page in api.list_jobs({}) for item in page.jobs]
        union: list[str] = []
        for window in windows:
            union += _list(api, window)
        union += [
            item["jobId"]
            for status in ("InProgress", "Failed")
            for page in api.list_jobs({"status": status})
            for item in page.jobs
        ]
    assert set(union) == set(plain)
    on_edges = {job.job_id for job in succeeded if job.signature_expires_at in edges}
    assert on_edges and on_edges <= set(union)


def test_backfill_bisects_from_no_knowledge_and_equals_the_truth(pg_warehouse: Warehouse) -> None:
    world = World(seed=4)
    world.seed_organisation(4000)
    settings = load_settings(environ=pg_warehouse.env, concurrency=8, batch_size=500)
    with EmulatorServer(world) as server:
        report = make_sync(pg_warehouse, server, settings=settings).backfill()
        assert report.listings > 3  # one open window and two statuses, then halves
        assert report.stats.inserted == len(world.listed_jobs())
        assert_matches_truth(pg_warehouse.engine, world)
        calls_first = server.calls["ListSigningJobs"]
        # With knowledge, the windows start at the warehouse's quantiles.
        server.reset_counters()
        again = make_sync(pg_warehouse, server, settings=settings).backfill()
        assert again.listings >= 4 * 8
        removed = [
            (row["job_id"], row["status"], row["created_at"], row["signature_expires_at"])
            for row in warehouse_rows(pg_warehouse.engine).values()
            if row["removed_from_api_at"] is not None
        ]
        assert (again.stats.inserted, again.stats.updated, removed) == (0, 0, []), world.now
        plain_pages = -(-len(world.listed_jobs()) // 25)
        # Overhead of partitioning stays modest: one short last page per window, a few splits.
        assert server.calls["ListSigningJobs"] < plain_pages + again.listings + 10
        assert calls_first < plain_pages * 1.5
