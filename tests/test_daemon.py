"""The daemon as it runs in production: ``python -m signer_sync run`` as a subprocess, the
emulated Signer API over HTTP in this process, real PostgreSQL, a one-second interval.

Plus the pure parts: the back-off schedule and the health verdicts.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, func, select, text

from signer_sync.config import load_settings
from signer_sync.daemon import MAX_BACKOFF_INTERVALS, backoff_skips
from signer_sync.daemon import Daemon as DaemonUnderTest
from signer_sync.emulator.server import EmulatorServer, Faults
from signer_sync.emulator.world import World
from signer_sync.observability import Metrics, SourceState, assess_health, assess_source
from signer_sync.warehouse.db import make_engine, migrate
from signer_sync.warehouse.schema import signing_job_events, signing_jobs, sync_runs, sync_state
from tests.conftest import AWS_ENV, PG_URL, Warehouse, assert_matches_truth

T = TypeVar("T")
SECRET = AWS_ENV["AWS_SECRET_ACCESS_KEY"]


# -- helpers ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], T], timeout: float, what: str, every: float = 0.1) -> T:
    """Poll ``check`` until it returns a truthy value without raising AssertionError."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = value
        except AssertionError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}: {last}")
        time.sleep(every)


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path
    source: str

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), bytes(exc.read())

    def health(self) -> tuple[int, dict[str, Any]]:
        status, body = self.get("/healthz")
        return status, json.loads(body)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample as {(name, sorted labels): value}."""
        status, body = self.get("/metrics")
        assert status == 200
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        return sum(
            value
            for (sample, sample_labels), value in self.metrics().items()
            if sample == name and set(labels.items()) <= set(sample_labels)
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 10.0) -> tuple[int, float]:
        """SIGTERM; the exit code and how long the exit took."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout + 5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"no exit {timeout + 5}s after SIGTERM:\n{self.log()}") from None
        return code, time.monotonic() - started


@dataclass
class Launcher:
    tmp_path: Path
    started: list[Daemon] = field(default_factory=list)

    def start(self, env: dict[str, str], source: str = "", *, wait: bool = True) -> Daemon:
        port = free_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNER_SYNC_", "AWS_"))}
        base.update(AWS_ENV)
        base.update(
            {
                "AWS_CONFIG_FILE": "/nonexistent/aws-config",
                "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
                "SIGNER_SYNC_INTERVAL": "1s",
                "SIGNER_SYNC_BACKFILL_CRON": "off",
                "SIGNER_SYNC_AWS_MAX_ATTEMPTS": "2",
                "SIGNER_SYNC_REQUESTS_PER_SECOND": "5000",
                "SIGNER_SYNC_HTTP_ADDR": f"127.0.0.1:{port}",
            }
        )
        base.update(env)
        log_path = self.tmp_path / f"daemon-{len(self.started)}.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "signer_sync", "run"],
                env=base,
                cwd=self.tmp_path,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        daemon = Daemon(proc, f"http://127.0.0.1:{port}", log_path, source)
        self.started.append(daemon)
        if wait:
            self.wait_listening(daemon)
        return daemon

    def wait_listening(self, daemon: Daemon) -> None:
        wait_until(lambda: self._listening(daemon), 20, "the daemon's HTTP listener")

    @staticmethod
    def _listening(daemon: Daemon) -> bool:
        assert daemon.proc.poll() is None, f"daemon exited:\n{daemon.log()}"
        try:
            daemon.get("/")
        except OSError:
            return False
        return True


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    launch = Launcher(tmp_path)
    yield launch
    for daemon in launch.started:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()
        print(f"--- {daemon.log_path.name} (source {daemon.source}) ---\n{daemon.log()[-6000:]}")


def unique(prefix: str) -> str:
    """Source names are lock names across the whole database: tests must not share them."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def single_source_env(wh: Warehouse, server: EmulatorServer, name: str) -> dict[str, str]:
    return {
        **wh.env,
        "SIGNER_SYNC_SOURCE_NAME": name,
        "SIGNER_SYNC_REGION": server.world.region,
        "SIGNER_SYNC_ENDPOINT_URL": server.url,
    }


def runs_of(wh: Warehouse, source: str) -> list[dict[str, Any]]:
    with wh.engine.connect() as connection:
        rows = connection.execute(
            select(sync_runs).where(sync_runs.c.source == source).order_by(sync_runs.c.run_id)
        ).mappings()
        return [dict(row) for row in rows]


def matches(wh: Warehouse, world: World, source: str) -> bool:
    rows = assert_matches_truth(wh.engine, world, source)
    assert len(rows) == len(world.listed_jobs()), "rows the API does not list"
    return True


def seeded_world(seed: int, jobs: int, **kwargs: Any) -> World:
    world = World(seed=seed, month_rule="calendar", **kwargs)
    world.seed_organisation(jobs)
    return world


# -- the daemon end to end ---------------------------------------------------------------


@pytest.mark.slow
def test_daemon_syncs_on_schedule_reports_health_and_metrics_and_stops_on_sigterm(
    pg_warehouse: Warehouse, launcher: Launcher
) -> None:
    wh = pg_warehouse
    name = unique("daemon")
    world = seeded_world(11, 300)
    with EmulatorServer(world) as server:
        daemon = launcher.start(single_source_env(wh, server, name), name)

        # The run at start is a backfill; after it the warehouse equals the API.
        wait_until(lambda: matches(wh, world, name), 45, "the first sync")
        status, body = daemon.health()
        assert status == 200 and body["sources"][name]["state"] == "ok", body

        # New work in the account shows up within a tick or two.
        fresh = [world.add_job("lambda_prod") for _ in range(5)]
        fresh.append(world.add_job("lambda_dev", status="Failed"))
        revoked = world.revoke_job(world.listed_jobs()[0].job_id, "Superseded")
        wait_until(lambda: matches(wh, world, name), 10, "the new jobs and the revocation")
        rows = {r["job_id"]: r for r in job_rows(wh, name)}
        assert all(job.job_id in rows for job in fresh)
        assert rows[revoked.job_id]["revoked_at"] == revoked.revoked_at

        # /metrics carries what the runs did, consistent with sync_runs and the rows.
        def metrics_agree() -> bool:
            finished = [r for r in runs_of(wh, name) if r["outcome"] != "running"]
            listed = sum((r["api_calls"] or {}).get("ListSigningJobs", 0) for r in finished)
            inserted = sum(r["rows_inserted"] or 0 for r in finished)
            assert daemon.metric("signer_sync_rows_total", source=name, kind="inserted") == inserted
            assert (
                daemon.metric(
                    "signer_sync_api_calls_total", source=name, operation="ListSigningJobs"
                )
                == listed
            )
            return inserted == len(world.listed_jobs())

        wait_until(metrics_agree, 10, "metrics to match sync_runs")
        assert daemon.metric("signer_sync_runs_total", source=name, outcome="succeeded") >= 2
        assert daemon.metric("signer_sync_runs_total", source=name, outcome="failed") == 0
        last_success = daemon.metric("signer_sync_last_success_timestamp_seconds", source=name)
        assert abs(time.time() - last_success) < 30
        assert 0 <= daemon.metric("signer_sync_watermark_lag_seconds", source=name) < 30
        assert daemon.metric("signer_sync_run_duration_seconds_count", source=name) >= 2

        # The API goes away: runs fail, the daemon stays up, /healthz turns 503 and says why.
        server.faults = Faults(error_rate=1.0)

        def unhealthy() -> dict[str, Any]:
            # While a failing run is still retrying, the reason is that it commits nothing;
            # once it has failed, the reason is its error.
            status, body = daemon.health()
            reason = body.get("sources", {}).get(name, {}).get("reason") or ""
            return body if status == 503 and "InternalServiceErrorException" in reason else {}

        body = wait_until(unhealthy, 60, "/healthz to report the outage", every=0.25)
        assert body["stale_sources"] == [name]
        assert "InternalServiceErrorException" in body["sources"][name]["reason"]
        assert body["sources"][name]["consecutive_failures"] >= 1
        assert daemon.proc.poll() is None
        assert daemon.metric("signer_sync_runs_total", source=name, outcome="failed") >= 1
        assert daemon.metric("signer_sync_consecutive_failures", source=name) >= 1
        errors = daemon.metric(
            "signer_sync_api_errors_total", source=name, code="InternalServiceErrorException"
        )
        assert errors >= 1
        assert SECRET not in json.dumps(body) and SECRET not in daemon.get("/metrics")[1].decode()

        # It comes back: the back-off is at most a few intervals here, then 200 again.
        server.faults = Faults()

        def recovered() -> bool:
            status, body = daemon.health()
            return status == 200 and body["sources"][name]["state"] == "ok"

        wait_until(recovered, 40, "/healthz to recover", every=0.25)
        assert daemon.metric("signer_sync_consecutive_failures", source=name) == 0
        wait_until(lambda: matches(wh, world, name), 10, "the warehouse after the outage")

        # SIGTERM in the middle of a (slowed down) run: it commits, records itself
        # interrupted, and the process exits 0 within ten seconds.
        server.faults = Faults(latency_ms=800)
        before = max(r["run_id"] for r in runs_of(wh, name))

        def running_run() -> int | None:
            running = [r for r in runs_of(wh, name) if r["outcome"] == "running"]
            return running[-1]["run_id"] if running and running[-1]["run_id"] > before else None

        run_id = wait_until(running_run, 10, "a run to be in progress", every=0.05)
        code, seconds = daemon.terminate()
        assert code == 0, daemon.log()
        assert seconds < 10
        outcomes = {r["run_id"]: r["outcome"] for r in runs_of(wh, name)}
        assert "running" not in outcomes.values()
        assert outcomes[run_id] == "interrupted"

    log = daemon.log()
    assert "Traceback" not in log
    assert SECRET not in log
    assert "daemon stopped" in log


def job_rows(wh: Warehouse, source: str) -> list[dict[str, Any]]:
    with wh.engine.connect() as connection:
        query = select(signing_jobs).where(signing_jobs.c.source == source)
        return [dict(row) for row in connection.execute(query).mappings()]


@pytest.mark.slow
def test_two_daemons_on_one_database_never_sync_a_source_twice_at_once(
    pg_warehouse: Warehouse, launcher: Launcher
) -> None:
    wh = pg_warehouse
    name = unique("replicas")
    world = seeded_world(12, 100)
    # Slow answers make every run about as long as the interval: the replicas' ticks collide.
    with EmulatorServer(world, faults=Faults(latency_ms=150)) as server:
        env = single_source_env(wh, server, name)
        first, second = launcher.start(env, name), launcher.start(env, name)
        wait_until(lambda: matches(wh, world, name), 45, "the first sync")
        for _ in range(10):
            world.add_job("containers")
        wait_until(lambda: matches(wh, world, name), 15, "the new jobs")
        wait_until(lambda: len(runs_of(wh, name)) >= 6, 15, "a few more runs")
        busy = sum(
            d.metric("signer_sync_skipped_runs_total", source=name, reason="busy")
            for d in (first, second)
        )
        hosts = {r["host"] for r in runs_of(wh, name)}
        assert busy >= 1, f"the replicas never met: the test proves nothing ({hosts})"
        for daemon in (first, second):
            assert daemon.health()[0] == 200
        for daemon in (first, second):
            code, seconds = daemon.terminate()
            assert code == 0 and seconds < 10, daemon.log()

    runs = runs_of(wh, name)
    assert all(r["outcome"] in ("succeeded", "interrupted") for r in runs), runs
    spans = sorted((r["started_at"], r["finished_at"]) for r in runs)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start, f"two runs of {name} overlapped: {spans}"
    with wh.engine.connect() as connection:
        duplicates = connection.execute(
            select(signing_job_events.c.job_id)
            .where(signing_job_events.c.kind == "first_seen")
            .group_by(signing_job_events.c.job_id)
            .having(func.count() > 1)
        ).all()
    assert duplicates == []
    matches(wh, world, name)


@pytest.mark.slow
def test_two_accounts_in_one_toml_keep_their_rows_and_watermarks_apart(
    pg_warehouse: Warehouse, launcher: Launcher, tmp_path: Path
) -> None:
    wh = pg_warehouse
    worlds = {
        unique("acct-us"): seeded_world(21, 200),
        unique("acct-eu"): seeded_world(22, 150, region="eu-west-1", account_id="210987654321"),
    }
    us_world, eu_world = worlds.values()
    with EmulatorServer(us_world) as us, EmulatorServer(eu_world) as eu:
        servers = dict(zip(worlds, (us, eu), strict=True))
        config = tmp_path / "signer-sync.toml"
        config.write_text(
            "".join(
                f'[[sources]]\nname = "{name}"\nregion = "{world.region}"\n'
                f'endpoint_url = "{servers[name].url}"\nrequests_per_second = 5000\n\n'
                for name, world in worlds.items()
            )
        )
        daemon = launcher.start({**wh.env, "SIGNER_SYNC_CONFIG": str(config)})
        for name, world in worlds.items():
            wait_until(lambda n=name, w=world: matches(wh, w, n), 45, f"the first sync of {name}")
        eu_name = list(worlds)[1]
        added = eu_world.add_job("firmware_release")
        wait_until(lambda: matches(wh, eu_world, eu_name), 10, "the new job of one account")
        assert daemon.health()[0] == 200
        for name in worlds:
            assert daemon.metric("signer_sync_runs_total", source=name, outcome="succeeded") >= 1
        code, _ = daemon.terminate()
        assert code == 0, daemon.log()

    with wh.engine.connect() as connection:
        state = connection.execute(select(sync_state)).mappings().all()
        run_sources = dict(connection.execute(select(sync_runs.c.run_id, sync_runs.c.source)).all())
        regions = dict(
            connection.execute(
                select(signing_jobs.c.source, func.min(signing_jobs.c.region)).group_by(
                    signing_jobs.c.source
                )
            ).all()
        )
        added_source = connection.execute(
            select(signing_jobs.c.source).where(signing_jobs.c.job_id == added.job_id)
        ).scalar_one()
    assert sorted(row["source"] for row in state) == sorted(worlds)
    for row in state:
        assert row["watermark"] is not None
        assert run_sources[row["run_id"]] == row["source"]  # each mark from its own run
    assert regions == {name: world.region for name, world in worlds.items()}
    assert added_source == eu_name
    for name, world in worlds.items():
        matches(wh, world, name)


@pytest.mark.slow
def test_unreachable_database_at_start_keeps_the_daemon_up_and_health_says_why(
    launcher: Launcher,
) -> None:
    password = "pa55-very-secret"
    url = f"postgresql+psycopg://signer:{password}@127.0.0.1:1/warehouse"
    name = unique("nodb")
    daemon = launcher.start(
        {
            "SIGNER_SYNC_DATABASE_URL": url,
            "SIGNER_SYNC_SOURCE_NAME": name,
            "SIGNER_SYNC_REGION": "us-east-1",
            "SIGNER_SYNC_ENDPOINT_URL": "http://127.0.0.1:9",
        },
        name,
    )

    def unhealthy() -> dict[str, Any]:
        status, body = daemon.health()
        return body if status == 503 else {}

    body = wait_until(unhealthy, 15, "/healthz to report the database", every=0.25)
    reason = body["sources"][name]["reason"]
    assert "database unreachable" in reason and "127.0.0.1:1" in reason
    assert body["database"]["reachable"] is False
    assert daemon.metric("signer_sync_database_up") == 0
    assert daemon.proc.poll() is None
    code, seconds = daemon.terminate()
    assert code == 0 and seconds < 10
    everything = json.dumps(body) + daemon.log()
    assert password not in everything and SECRET not in everything
    assert "Traceback" not in everything


@pytest.mark.slow
def test_daemon_started_before_migrate_waits_and_then_syncs(launcher: Launcher) -> None:
    """The docker-compose race: the daemon is up before the schema exists."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    env = {"SIGNER_SYNC_DATABASE_URL": PG_URL, "SIGNER_SYNC_DB_SCHEMA": schema}
    settings = load_settings(environ=env)
    engine = make_engine(settings)
    name = unique("late")
    world = seeded_world(31, 100)
    try:
        with EmulatorServer(world) as server:
            wh = Warehouse(settings, engine, env)
            daemon = launcher.start(single_source_env(wh, server, name), name)

            def waiting() -> bool:
                status, body = daemon.health()
                error = body["sources"][name]["last_error"] or ""
                return status == 503 and "warehouse not ready" in error

            wait_until(waiting, 15, "the daemon to report the missing schema", every=0.25)
            migrate(engine, settings)
            wait_until(lambda: matches(wh, world, name), 25, "the sync after migrate")
            assert wait_until(lambda: daemon.health()[0] == 200, 10, "health after migrate")
            code, _ = daemon.terminate()
            assert code == 0
    finally:
        engine.dispose()
        admin = create_engine(PG_URL)
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


# -- the schedule and one tick, in process ------------------------------------------------


def _daemon_settings(wh: Warehouse, server: EmulatorServer, name: str, **extra: str) -> Any:
    return load_settings(
        environ={**single_source_env(wh, server, name), "SIGNER_SYNC_HTTP_ADDR": "", **extra}
    )


def test_schedule_has_an_interval_job_at_start_and_a_cron_backfill_per_source(
    tmp_path: Path,
) -> None:
    config = tmp_path / "two.toml"
    config.write_text(
        '[[sources]]\nname = "a"\nregion = "us-east-1"\n\n'
        '[[sources]]\nname = "b"\nregion = "eu-west-1"\n'
    )
    environ = {"SIGNER_SYNC_INTERVAL": "2m", "SIGNER_SYNC_BACKFILL_CRON": "17 3 * * *"}
    settings = load_settings(config, environ=environ)
    daemon = DaemonUnderTest(settings, settings.source_configs())
    jobs = {job.id: job for job in daemon.scheduler.get_jobs()}
    assert set(jobs) == {"incremental:a", "incremental:b", "backfill:a", "backfill:b"}
    for name in ("a", "b"):
        tick = jobs[f"incremental:{name}"]
        assert isinstance(tick.trigger, IntervalTrigger)
        assert tick.trigger.interval == timedelta(minutes=2)
        assert 0 < tick.trigger.jitter <= 12
        assert abs((tick.next_run_time - datetime.now(UTC)).total_seconds()) < 5  # at start
        assert (tick.max_instances, tick.coalesce, tick.misfire_grace_time) == (1, True, 120)
        backfill = jobs[f"backfill:{name}"]
        assert isinstance(backfill.trigger, CronTrigger)
        assert "hour='3', minute='17'" in str(backfill.trigger)
        assert (backfill.max_instances, backfill.coalesce) == (1, True)
        assert backfill.args[1] == "backfill" and tick.args[1] == "incremental"

    off = load_settings(config, environ={"SIGNER_SYNC_BACKFILL_CRON": "off"})
    daemon = DaemonUnderTest(off, off.select_sources("b"))
    assert [job.id for job in daemon.scheduler.get_jobs()] == ["incremental:b"]


def test_failing_source_backs_off_then_recovers(pg_warehouse: Warehouse) -> None:
    """The scheduled function itself, tick by tick, against the emulator and PostgreSQL."""
    wh = pg_warehouse
    name = unique("backoff")
    world = seeded_world(41, 60)
    with EmulatorServer(world) as server:
        settings = _daemon_settings(wh, server, name, SIGNER_SYNC_AWS_MAX_ATTEMPTS="1")
        daemon = DaemonUnderTest(settings, settings.source_configs())
        source = settings.source_configs()[0]
        daemon.tick(source, "incremental")
        matches(wh, world, name)

        server.faults = Faults(error_rate=1.0)
        ran: list[bool] = []
        for _ in range(8):
            calls = sum(server.calls.values())
            daemon.tick(source, "incremental")
            ran.append(sum(server.calls.values()) > calls)
        # failures 1 and 2 run back to back; then 1 tick skipped, then 3, then 7 ...
        assert ran == [True, True, False, True, False, False, False, True]
        (state,) = daemon.states()
        assert state.consecutive_failures == 4 and state.skip_remaining == 7
        assert "InternalServiceErrorException" in (state.last_error or "")

        server.faults = Faults()
        added = world.add_job("lambda_dev")
        for _ in range(8):
            daemon.tick(source, "incremental")
        (state,) = daemon.states()
        assert (state.consecutive_failures, state.skip_remaining, state.last_error) == (0, 0, None)
        assert added.job_id in {r["job_id"] for r in job_rows(wh, name)}

        daemon.tick(source, "backfill")  # what the cron job runs
        matches(wh, world, name)
    kinds = [(r["kind"], r["outcome"]) for r in runs_of(wh, name)]
    assert kinds[0] == ("backfill", "succeeded")  # the first run of a source
    assert kinds[1:5] == [("incremental", "failed")] * 4
    assert kinds[-1] == ("backfill", "succeeded")
    text = daemon.metrics.render().decode()
    assert f'signer_sync_skipped_runs_total{{reason="backoff",source="{name}"}} 11.0' in text


def test_listener_address_in_use_is_a_configuration_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNER_SYNC_")}
        env.update(
            SIGNER_SYNC_HTTP_ADDR=f"127.0.0.1:{port}",
            SIGNER_SYNC_DATABASE_URL=f"sqlite:///{tmp_path / 'w.db'}",
        )
        result = subprocess.run(
            [sys.executable, "-m", "signer_sync", "run"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    assert f"SIGNER_SYNC_HTTP_ADDR: cannot listen on 127.0.0.1:{port}" in result.stderr


# -- the pure parts ----------------------------------------------------------------------


def test_backoff_doubles_the_effective_interval_up_to_ten() -> None:
    effective = [backoff_skips(n) + 1 for n in range(0, 9)]
    assert effective == [1, 1, 2, 4, 8, 10, 10, 10, 10]
    assert backoff_skips(10_000) + 1 == MAX_BACKOFF_INTERVALS


NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def _assess(state: SourceState, **kwargs: Any) -> Any:
    options: dict[str, Any] = {
        "now": NOW,
        "stale_after": 3 * MINUTE,
        "daemon_started": NOW - timedelta(hours=1),
    }
    options.update(kwargs)
    return assess_source(state, **options)


def test_health_of_one_source() -> None:
    ok = _assess(SourceState("a", last_success=NOW - 2 * MINUTE))
    assert (ok.healthy, ok.state) == (True, "ok")

    old = _assess(SourceState("a", last_success=NOW - 4 * MINUTE, last_outcome="succeeded"))
    assert not old.healthy and old.reason == "no successful sync for 4m"

    failing = SourceState(
        "a",
        last_success=NOW - 10 * MINUTE,
        last_failure=NOW,
        last_outcome="failed",
        last_error="a: incremental failed: EndpointConnectionError: ...",
        consecutive_failures=4,
    )
    verdict = _assess(failing)
    assert not verdict.healthy and verdict.reason == failing.last_error
    assert verdict.consecutive_failures == 4

    never = _assess(SourceState("a"))
    assert not never.healthy and never.reason == "never synced"
    starting = _assess(SourceState("a"), daemon_started=NOW - MINUTE)
    assert (starting.healthy, starting.state) == (True, "starting")
    failed_at_start = SourceState("a", last_failure=NOW, last_outcome="failed", last_error="boom")
    verdict = _assess(failed_at_start, daemon_started=NOW - MINUTE)
    assert not verdict.healthy and verdict.reason == "never synced: boom"

    # A long first backfill that keeps committing pages is healthy; a stuck one is not.
    syncing = SourceState("a", running_kind="backfill", last_progress=NOW - MINUTE)
    assert _assess(syncing).state == "syncing"
    stuck = SourceState(
        "a",
        last_success=NOW - 9 * MINUTE,
        running_kind="incremental",
        last_progress=NOW - 5 * MINUTE,
    )
    assert "committed nothing" in _assess(stuck).reason

    busy = _assess(SourceState("a", last_busy=NOW - MINUTE))
    assert (busy.healthy, busy.state) == (True, "busy elsewhere")


def test_health_names_the_database_when_it_is_the_cause() -> None:
    down = "database unreachable: PostgreSQL at db:5432/x: connection refused"
    states = [
        SourceState("a", last_success=NOW - MINUTE),
        SourceState(
            "b",
            last_success=NOW - 20 * MINUTE,
            last_outcome="failed",
            last_error=down,
            last_failure=NOW,
        ),
    ]
    report = assess_health(
        states, now=NOW, interval=MINUTE, daemon_started=NOW - MINUTE, database_error=down
    )
    assert not report.healthy and report.stale == ["b"]
    body = report.to_json()
    assert body["status"] == "unhealthy" and body["stale_after_seconds"] == 180
    assert body["database"] == {"reachable": False, "error": down}
    assert body["sources"]["b"]["reason"] == down
    assert body["sources"]["a"]["healthy"] is True
    assert json.loads(json.dumps(body)) == body

    fine = assess_health(states[:1], now=NOW, interval=MINUTE, daemon_started=NOW)
    assert fine.healthy and fine.to_json()["status"] == "ok"


def test_metrics_of_a_run() -> None:
    metrics = Metrics(["a"])
    metrics.record_run(
        "a",
        "incremental",
        "succeeded",
        1.5,
        rows={"inserted": 3, "updated": 2, "unchanged": 7},
        api_calls={"ListSigningJobs": 9, "DescribeSigningJob": 1},
        api_errors={"TooManyRequestsException": 2, "InternalServiceErrorException": 1},
    )
    metrics.record_success("a", 1_700_000_000.0, datetime.now(UTC) - timedelta(seconds=60))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }
    assert all(name.startswith("signer_sync_") for name, _ in samples)

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("signer_sync_runs_total", source="a", kind="incremental", outcome="succeeded") == 1
    assert value("signer_sync_runs_total", source="a", kind="backfill", outcome="failed") == 0
    assert value("signer_sync_rows_total", source="a", kind="inserted") == 3
    assert value("signer_sync_rows_total", source="a", kind="removed") == 0
    assert value("signer_sync_api_calls_total", source="a", operation="ListSigningJobs") == 9
    assert value("signer_sync_api_errors_total", source="a", code="TooManyRequestsException") == 2
    assert value("signer_sync_api_throttles_total", source="a") == 2
    assert value("signer_sync_last_success_timestamp_seconds", source="a") == 1_700_000_000
    assert 59 <= value("signer_sync_watermark_lag_seconds", source="a") < 120
    assert value("signer_sync_run_duration_seconds_count", source="a", kind="incremental") == 1
