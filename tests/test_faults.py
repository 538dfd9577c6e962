"""Faults during real runs: the emulated Signer API over HTTP through real boto3 clients,
into real PostgreSQL.

API faults (throttling storms, 5xx bursts, retries exhausted), network faults mid-listing
(connection reset, truncated body, invalid JSON, a hanging response, a refused nextToken)
and database faults (the writer's connections terminated between pages and inside a write
transaction). After each, either the run succeeded and the warehouse equals the API's
truth field by field, or the run failed cleanly - SyncFailed raised, recorded ``failed`` in
``sync_runs``, watermark unchanged - and the next run converges. Counters on both sides
(the emulator's ``errors``, the run's ``api_errors``) prove that each fault happened.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore.retries import standard
from sqlalchemy import Engine, create_engine, event, select, text

from signer_sync.config import SourceConfig, load_settings
from signer_sync.emulator.server import EmulatorServer, Faults
from signer_sync.emulator.world import World
from signer_sync.errors import SyncFailed
from signer_sync.source import MalformedResponse, SignerApi
from signer_sync.sync import SourceSync
from signer_sync.warehouse.db import make_engine
from signer_sync.warehouse.schema import sync_runs, sync_state
from signer_sync.warehouse.state import source_lock
from tests.conftest import PG_URL, Warehouse, assert_matches_truth, make_sync

JOBS = 600


# -- helpers ----------------------------------------------------------------------------


@pytest.fixture
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's own backoff, run 50 times faster.

    Throttling retries wait ``rand * min(2**attempt, 20)`` seconds; a 50% storm over a
    few dozen requests would take most of a minute. The delay is still computed by
    botocore (same exponent, jitter and cap) and every retry decision, the throttling
    detection and the retry quota stay botocore's: only the clock is compressed.
    """
    original = standard.ExponentialBackoff.delay_amount

    def faster(self: standard.ExponentialBackoff, context: Any) -> float:
        return float(original(self, context)) / 50

    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", faster)


def _state(wh: Warehouse, source: str = "main") -> dict[str, Any] | None:
    with wh.engine.connect() as connection:
        row = (
            connection.execute(select(sync_state).where(sync_state.c.source == source))
            .mappings()
            .first()
        )
    return dict(row) if row else None


def _runs(wh: Warehouse) -> list[dict[str, Any]]:
    with wh.engine.connect() as connection:
        return [
            dict(row)
            for row in connection.execute(select(sync_runs).order_by(sync_runs.c.run_id)).mappings()
        ]


def _assert_failed_cleanly(wh: Warehouse, state_before: dict[str, Any] | None) -> dict[str, Any]:
    """The last run is recorded failed, with an error and an end; the watermark did not
    move (nor did anything else in sync_state but the list of jobs still to describe)."""
    run = _runs(wh)[-1]
    assert run["outcome"] == "failed", run
    assert run["finished_at"] is not None and run["error"], run
    assert _without_pending(_state(wh)) == _without_pending(state_before)
    return run


def _without_pending(state: dict[str, Any] | None) -> dict[str, Any] | None:
    if state is None:
        return None
    inner = {k: v for k, v in (state.get("state") or {}).items() if k != "pending_describe"}
    return {**state, "state": inner}


def _change_the_world(world: World, rng: random.Random) -> None:
    """A few hours of an account's life: completions, revocations, new jobs."""
    since = world.now
    world.advance(timedelta(hours=3))
    listed = world.listed_jobs()
    for job in [job for job in listed if job.status == "InProgress"][:3]:
        world.complete_job(job.job_id)
    fresh = [job for job in listed if job.status == "Succeeded" and not job.is_revoked]
    for job in rng.sample(fresh, 4):
        world.revoke_job(job.job_id, "Key compromise")
    world.add_random_jobs(80, since=since)


def _arm_on_send(
    api: SignerApi, operation: str, number: int, arm: Callable[[], None]
) -> Callable[[], int]:
    """Call ``arm`` as the ``number``-th HTTP attempt of ``operation`` is about to be sent
    (through botocore's public event hooks), so that an emulator fault set there hits the
    middle of a listing. Returns a function giving the attempts seen so far."""
    counter = itertools.count(1)
    seen = [0]
    lock = threading.Lock()

    def hook(**_: Any) -> None:
        with lock:
            seen[0] = next(counter)
            if seen[0] == number:
                arm()

    api.client.meta.events.register(f"before-send.signer.{operation}", hook)
    return lambda: seen[0]


# -- API faults ---------------------------------------------------------------------------


def test_throttling_storm_backfill_and_incremental_finish_and_equal_the_truth(
    pg_warehouse: Warehouse, emulator: EmulatorServer, quick_backoff: None
) -> None:
    world = emulator.world
    world.seed_organisation(JOBS)
    # Half of all requests throttled. At the default 8 attempts one request in 256 would
    # exhaust them and fail the run (see the test below for that path); 20 attempts make
    # that one in a million.
    patient = load_settings(environ=pg_warehouse.env, aws_max_attempts=20)
    emulator.faults = Faults(throttle_rate=0.5, seed=11)

    backfill = make_sync(pg_warehouse, emulator, settings=patient).sync()
    assert backfill.kind == "backfill" and backfill.outcome == "succeeded"
    assert_matches_truth(pg_warehouse.engine, world)
    throttled = emulator.errors["TooManyRequestsException"]
    assert throttled >= 10
    assert backfill.figures.api_errors["TooManyRequestsException"] == throttled

    _change_the_world(world, random.Random(1))
    incremental = make_sync(pg_warehouse, emulator, settings=patient).sync()
    assert incremental.kind == "incremental" and incremental.outcome == "succeeded"
    assert_matches_truth(pg_warehouse.engine, world)
    assert emulator.errors["TooManyRequestsException"] > throttled
    runs = _runs(pg_warehouse)
    assert [run["outcome"] for run in runs] == ["succeeded", "succeeded"]
    assert all(run["api_errors"]["TooManyRequestsException"] > 0 for run in runs)


def test_5xx_bursts_backfill_and_incremental_finish_and_equal_the_truth(
    pg_warehouse: Warehouse, emulator: EmulatorServer
) -> None:
    world = emulator.world
    world.seed_organisation(JOBS)
    emulator.faults = Faults(error_rate=0.3, seed=12)  # default settings: 8 attempts

    backfill = make_sync(pg_warehouse, emulator).sync()
    assert backfill.kind == "backfill" and backfill.outcome == "succeeded"
    assert_matches_truth(pg_warehouse.engine, world)
    failed = emulator.errors["InternalServiceErrorException"]
    assert failed >= 5

    _change_the_world(world, random.Random(2))
    incremental = make_sync(pg_warehouse, emulator).sync()
    assert incremental.kind == "incremental" and incremental.outcome == "succeeded"
    assert_matches_truth(pg_warehouse.engine, world)
    assert emulator.errors["InternalServiceErrorException"] > failed
    assert (
        sum(
            run["api_errors"].get("InternalServiceErrorException", 0) for run in _runs(pg_warehouse)
        )
        == emulator.errors["InternalServiceErrorException"]
    )


@pytest.mark.parametrize("when", ["first run", "mid-listing", "incremental"])
def test_exhausted_retries_fail_cleanly_and_the_next_run_converges(
    pg_warehouse: Warehouse, emulator: EmulatorServer, when: str
) -> None:
    world = emulator.world
    world.seed_organisation(JOBS)
    if when == "incremental":
        make_sync(pg_warehouse, emulator).sync()
        _change_the_world(world, random.Random(3))
    state_before = _state(pg_warehouse)
    impatient = load_settings(environ=pg_warehouse.env, aws_max_attempts=2)
    sync = make_sync(pg_warehouse, emulator, settings=impatient)
    emulator.reset_counters()
    if when == "mid-listing":  # the listing is under way when the API starts failing

        def fail_everything() -> None:
            emulator.faults.error_rate = 1.0

        _arm_on_send(sync.api, "ListSigningJobs", 4, fail_everything)
    else:
        emulator.faults = Faults(error_rate=1.0)

    with pytest.raises(SyncFailed, match="InternalServiceErrorException"):
        sync.sync()

    run = _assert_failed_cleanly(pg_warehouse, state_before)
    assert run["kind"] == ("incremental" if when == "incremental" else "backfill")
    assert "InternalServiceErrorException" in run["error"]
    assert run["api_errors"]["InternalServiceErrorException"] >= 2  # two attempts each
    assert emulator.errors["InternalServiceErrorException"] >= 2
    if when == "mid-listing":
        assert emulator.calls["ListSigningJobs"] >= 4

    emulator.faults = Faults()
    report = make_sync(pg_warehouse, emulator).sync()
    assert report.outcome == "succeeded"
    assert report.kind == run["kind"]  # no watermark was stored: a backfill again
    assert_matches_truth(pg_warehouse.engine, world)
    assert _state(pg_warehouse) != state_before


# -- network faults -----------------------------------------------------------------------

NETWORK_FAULTS: dict[str, tuple[str, Callable[[Faults], None]]] = {
    # name: (the emulator's errors key, how to arm it)
    "connection reset": ("reset", lambda f: setattr(f, "reset_next", 1)),
    "truncated body": ("truncate", lambda f: setattr(f, "truncate_next", 1)),
    "invalid JSON body": ("invalid_json", lambda f: setattr(f, "invalid_json_next", 1)),
    "hanging response": (
        "hang",
        lambda f: (setattr(f, "hang_seconds", 5), setattr(f, "hang_next", 1)),
    ),
    "nextToken refused": ("ValidationException", lambda f: setattr(f, "reject_token_next", 1)),
}


@pytest.mark.parametrize("kind", ["backfill", "incremental"])
@pytest.mark.parametrize("fault", list(NETWORK_FAULTS))
def test_network_fault_mid_listing_is_retried_and_the_run_completes(
    pg_warehouse: Warehouse, emulator: EmulatorServer, fault: str, kind: str
) -> None:
    world = emulator.world
    world.seed_organisation(JOBS)
    if kind == "incremental":
        make_sync(pg_warehouse, emulator).sync()
        _change_the_world(world, random.Random(4))
    # A hanging response costs one read timeout, then botocore retries. Small pages: every
    # listing, even of an incremental run, goes on with a nextToken.
    settings = load_settings(environ=pg_warehouse.env, aws_read_timeout=1, page_size=5)
    sync = make_sync(pg_warehouse, emulator, settings=settings)
    emulator.reset_counters()
    key, arm = NETWORK_FAULTS[fault]
    # A refused token only ever hits a request that carries one: armed from the start.
    # The others hit the request that arms them (the third of the listings) or one
    # running beside it.
    number = 1 if key == "ValidationException" else 3
    attempts = _arm_on_send(sync.api, "ListSigningJobs", number, lambda: arm(emulator.faults))
    started = time.monotonic()

    report = sync.sync()

    assert report.kind == kind and report.outcome == "succeeded"
    assert attempts() > number
    assert emulator.errors[key] == 1, dict(emulator.errors)  # the fault happened, once
    assert sum(report.figures.api_errors.values()) >= 1  # and the run saw it
    assert _runs(pg_warehouse)[-1]["api_errors"] == report.figures.api_errors
    rows = assert_matches_truth(pg_warehouse.engine, world)
    assert len(rows) == len(world.listed_jobs())
    if key == "hang":
        assert time.monotonic() - started < 4.5  # a timeout and a retry, not the hang
    if key == "ValidationException":
        # the refused listing was read again from its first page, not cut short
        assert report.figures.api_errors.get("ValidationException") == 1


def test_a_body_nested_too_deeply_for_json_is_a_malformed_response() -> None:
    """A 200 whose JSON nests deeper than the parser's recursion limit is a malformed
    answer (counted, retried, then MalformedResponse), not a RecursionError."""
    body = b'{"jobs": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}"
    requests = []

    class Deep(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Deep)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host, port = server.server_address[:2]
        source = SourceConfig(
            name="deep", region="us-east-1", endpoint_url=f"http://{host!s}:{port}"
        )
        settings = load_settings(environ={}, aws_max_attempts=2)
        api = SignerApi(source, settings, session=boto3.Session())
        with pytest.raises(MalformedResponse):
            list(api.list_jobs({}))
        assert api.errors["MalformedResponse"] >= 1
        assert len(requests) == 2  # retried once, as configured
    finally:
        server.shutdown()
        server.server_close()


# -- database faults ----------------------------------------------------------------------


@contextlib.contextmanager
def _backend_pids(engine: Engine) -> Iterator[set[int]]:
    """The PostgreSQL backend pid of every connection ``engine`` opens from now on."""
    engine.dispose()
    pids: set[int] = set()

    def remember(dbapi_connection: Any, _record: Any) -> None:
        pids.add(dbapi_connection.info.backend_pid)

    event.listen(engine, "connect", remember)
    try:
        yield pids
    finally:
        event.remove(engine, "connect", remember)


@pytest.fixture
def admin() -> Iterator[Engine]:
    engine = create_engine(PG_URL)
    yield engine
    engine.dispose()


def _terminate(admin: Engine, pids: set[int]) -> list[int]:
    with admin.connect() as connection:
        return [
            pid
            for pid in sorted(pids)
            if connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
        ]


def test_writer_connections_terminated_between_pages(
    pg_warehouse: Warehouse, emulator: EmulatorServer, admin: Engine
) -> None:
    """Every connection of the run (the pooled writer connections and the one holding the
    source lock) is terminated after a few pages: the run reconnects and succeeds, or
    fails cleanly; the next run converges."""
    world = emulator.world
    world.seed_organisation(JOBS)
    settings = load_settings(environ=pg_warehouse.env, batch_size=50, concurrency=1)
    killed: list[int] = []
    with _backend_pids(pg_warehouse.engine) as pids:

        def progress(pages: int, _jobs: int) -> None:
            if pages == 3 and not killed:
                killed.extend(_terminate(admin, pids))

        sync = make_sync(pg_warehouse, emulator, settings=settings)
        sync.progress = progress
        try:
            report = sync.sync()
        except SyncFailed:
            _assert_failed_cleanly(pg_warehouse, None)
        else:
            assert report.outcome == "succeeded"
            assert_matches_truth(pg_warehouse.engine, world)
    assert len(killed) >= 2  # a writer connection and the lock's

    report = make_sync(pg_warehouse, emulator).sync()
    assert report.outcome == "succeeded"
    assert_matches_truth(pg_warehouse.engine, world)


def test_writer_connection_terminated_inside_a_write_transaction(
    pg_warehouse: Warehouse, emulator: EmulatorServer, admin: Engine
) -> None:
    """The writer is made to wait on a table lock in the middle of a batch's transaction
    and is terminated there: the run fails cleanly (or retries and succeeds), and the next
    run converges with nothing lost or duplicated."""
    world = emulator.world
    world.seed_organisation(JOBS)
    make_sync(pg_warehouse, emulator).sync()  # a watermark that must survive the failure
    _change_the_world(world, random.Random(5))
    state_before = _state(pg_warehouse)
    schema = pg_warehouse.settings.db_schema
    settings = load_settings(environ=pg_warehouse.env, batch_size=10)
    victims: list[str] = []
    armed = threading.Event()

    def block_then_kill() -> None:
        """Hold an exclusive lock on signing_jobs until a connection of the run waits for
        it, terminate that connection, then let go (after 10 s at most)."""
        holder = admin.connect()
        transaction = holder.begin()
        try:
            holder.execute(text(f'LOCK TABLE "{schema}".signing_jobs IN ACCESS EXCLUSIVE MODE'))
            me = holder.execute(text("SELECT pg_backend_pid()")).scalar_one()
            armed.set()
            deadline = time.monotonic() + 10
            with admin.connect() as watcher:
                while time.monotonic() < deadline and not victims:
                    waiting = watcher.execute(
                        text(
                            "SELECT pid, query FROM pg_stat_activity "
                            "WHERE :me = ANY(pg_blocking_pids(pid))"
                        ),
                        {"me": me},
                    ).all()
                    for pid, query in waiting:
                        watcher.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                        victims.append(query)
                    watcher.commit()
                    time.sleep(0.01)
        finally:
            transaction.rollback()
            holder.close()

    def progress(pages: int, _jobs: int) -> None:
        if pages == 1 and not armed.is_set():
            threading.Thread(target=block_then_kill, daemon=True).start()
            assert armed.wait(5)

    sync = make_sync(pg_warehouse, emulator, settings=settings)
    sync.progress = progress
    try:
        report = sync.sync()
    except SyncFailed as exc:
        assert "terminating connection" in str(exc) or "AdminShutdown" in str(exc), exc
        _assert_failed_cleanly(pg_warehouse, state_before)
    else:
        assert report.outcome == "succeeded"
        assert_matches_truth(pg_warehouse.engine, world)
    assert victims, "no connection of the run ever waited on the lock"

    report = make_sync(pg_warehouse, emulator).sync()
    assert report.outcome == "succeeded" and report.kind == "incremental"
    assert_matches_truth(pg_warehouse.engine, world)
    with pg_warehouse.engine.connect() as connection:
        duplicates = connection.execute(
            text(
                "SELECT count(*) FROM (SELECT job_id FROM signing_job_events "
                "WHERE kind = 'first_seen' GROUP BY job_id HAVING count(*) > 1) AS d"
            )
        ).scalar_one()
    assert duplicates == 0


def test_a_run_that_lost_its_source_lock_does_not_succeed(
    pg_warehouse: Warehouse, emulator: EmulatorServer, admin: Engine
) -> None:
    world = emulator.world
    world.seed_organisation(JOBS)
    settings = load_settings(environ=pg_warehouse.env, batch_size=50, concurrency=1)
    other_process = make_engine(pg_warehouse.settings)
    taken: list[bool] = []
    with _backend_pids(pg_warehouse.engine) as pids:

        def progress(pages: int, _jobs: int) -> None:
            if pages == 3 and not taken:
                _terminate(admin, pids)
                with source_lock(other_process, "main") as got:
                    taken.append(got is not None)

        sync: SourceSync = make_sync(pg_warehouse, emulator, settings=settings)
        sync.progress = progress
        try:
            with pytest.raises(SyncFailed):
                sync.sync()
        finally:
            other_process.dispose()
    assert taken == [True]  # another process could take the lock while the run went on
    assert _state(pg_warehouse) is None


def test_backfills_of_two_sources_at_once_leave_each_other_alone(
    pg_warehouse: Warehouse, emulator: EmulatorServer
) -> None:
    world = emulator.world
    world.seed_organisation(JOBS)
    other_world = World(seed=8, month_rule="calendar")
    other_world.seed_organisation(200)
    settings = load_settings(environ=pg_warehouse.env, batch_size=25, concurrency=1)
    others: list[str] = []
    with EmulatorServer(other_world) as other_server:

        def progress(pages: int, _jobs: int) -> None:
            if pages == 3 and not others:  # the other source's backfill, start to end
                sync = make_sync(pg_warehouse, other_server, "other", settings=settings)
                others.append(sync.backfill().outcome)

        first = make_sync(pg_warehouse, emulator, "main", settings=settings)
        first.progress = progress
        report = first.backfill()
    assert others == ["succeeded"]
    assert_matches_truth(pg_warehouse.engine, other_world, "other")
    assert report.outcome == "succeeded"
    assert report.stats.removed == 0, f"{report.stats.removed} listed jobs marked removed"
    assert_matches_truth(pg_warehouse.engine, world, "main")
