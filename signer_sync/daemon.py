"""``signer-sync run``: the long-running daemon.

An APScheduler 3 ``BlockingScheduler`` runs, for every source, an incremental sync each
``interval`` (one right at start) and a full backfill on ``backfill_cron``, on a thread
pool of ``max_parallel_sources``. The daemon outlives its dependencies: a run that fails
(API down, database down, even at start) is logged and retried, with back-off for a
source that keeps failing; another replica holding a source is simply skipped. SIGTERM
or SIGINT stops every running sync at its next page (it commits what it has and records
itself ``interrupted``) and the process exits 0 within ten seconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, timedelta
from types import FrameType

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.base import SchedulerNotRunningError
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from signer_sync.config import Settings, SourceConfig
from signer_sync.errors import (
    ConfigError,
    DatabaseUnavailable,
    SchemaOutOfDate,
    SignerSyncError,
    SourceBusy,
    first_line,
)
from signer_sync.logs import get_logger, redact
from signer_sync.observability import (
    HealthReport,
    Metrics,
    ObservabilityServer,
    SourceState,
    assess_health,
)
from signer_sync.source import SignerApi, counter_delta
from signer_sync.sync import RunReport, SourceSync
from signer_sync.warehouse.db import describe_target, open_warehouse
from signer_sync.warehouse.writer import utcnow

log = get_logger("signer_sync.daemon")

#: The effective interval of a failing source never grows beyond this many intervals.
MAX_BACKOFF_INTERVALS = 10
#: After SIGTERM, running syncs get this long to commit and record themselves.
SHUTDOWN_SECONDS = 8.5
#: A daily backfill that could not start on time still starts within this many seconds.
BACKFILL_GRACE_SECONDS = 3600


_DATABASE_ERRORS = ("OperationalError", "InterfaceError", "DatabaseUnavailable")


def backoff_skips(consecutive_failures: int) -> int:
    """Scheduled incremental runs to skip after the n-th consecutive failure of a source.

    A single failure is retried at the next tick (a blip should not cost more); from the
    second on the effective interval doubles (2x, 4x, 8x) up to ten intervals, so a
    source that was down for a day is tried again within ten intervals of its return.
    """
    if consecutive_failures <= 1:
        return 0
    factor = 1 << min(consecutive_failures - 1, 16)
    return min(factor, MAX_BACKOFF_INTERVALS) - 1


def jitter_seconds(interval: timedelta) -> float:
    """A tenth of the interval, at most 30 s: replicas and sources drift apart."""
    return min(interval.total_seconds() * 0.1, 30.0)


def misfire_grace_seconds(interval: timedelta) -> int:
    """A tick later than one interval is dropped: the next one is due by then anyway."""
    return max(1, int(interval.total_seconds()))


class Daemon:
    """The scheduler, the runs it starts, and what they leave behind for health."""

    def __init__(
        self,
        settings: Settings,
        sources: Sequence[SourceConfig],
    ) -> None:
        self.settings = settings
        self.sources = tuple(sources)
        self.stop = threading.Event()
        """Shared by every SourceSync this daemon starts: setting it stops them all."""
        self.metrics = Metrics(source.name for source in self.sources)
        self.started_at = utcnow()
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()
        self._database_error: str | None = None
        self._states = {source.name: SourceState(source.name) for source in self.sources}
        self._state_lock = threading.Lock()
        self._source_locks = {source.name: threading.Lock() for source in self.sources}
        self._apis: dict[str, SignerApi] = {}
        self._api_lock = threading.Lock()
        self._running = 0
        self._idle = threading.Condition()
        self._stop_requested_at: float | None = None
        self._signal_name = ""
        self._scheduler_done = threading.Event()
        self.scheduler = self._build_scheduler()

    # -- the schedule --------------------------------------------------------------------

    def _build_scheduler(self) -> BlockingScheduler:
        interval = self.settings.interval
        scheduler = BlockingScheduler(
            executors={"default": ThreadPoolExecutor(self.settings.max_parallel_sources)},
            timezone=UTC,
        )
        cron = self.settings.backfill_cron
        for source in self.sources:
            scheduler.add_job(
                self.tick,
                IntervalTrigger(
                    seconds=interval.total_seconds(),
                    jitter=jitter_seconds(interval),
                    timezone=UTC,
                ),
                args=(source, "incremental"),
                id=f"incremental:{source.name}",
                name=f"incremental sync of {source.name}",
                next_run_time=utcnow(),
                misfire_grace_time=misfire_grace_seconds(interval),
                max_instances=1,
                coalesce=True,
            )
            if cron != "off":
                scheduler.add_job(
                    self.tick,
                    CronTrigger.from_crontab(cron, timezone=UTC),
                    args=(source, "backfill"),
                    id=f"backfill:{source.name}",
                    name=f"backfill of {source.name}",
                    misfire_grace_time=BACKFILL_GRACE_SECONDS,
                    max_instances=1,
                    coalesce=True,
                )
        scheduler.add_listener(self._on_skipped_job, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        return scheduler

    def _on_skipped_job(self, event: JobEvent) -> None:
        _, _, name = str(event.job_id).partition(":")
        if name in self._states:
            reason = "missed" if event.code == EVENT_JOB_MISSED else "overlap"
            self.metrics.record_skip(name, reason)

    # -- one scheduled run ---------------------------------------------------------------

    def tick(self, source: SourceConfig, kind: str) -> None:
        """The scheduled job: back-off and overlap checks, then one run. Never raises."""
        name = source.name
        if self.stop.is_set():
            return
        lock = self._source_locks[name]
        if kind == "incremental":
            with self._state_lock:
                state = self._states[name]
                if state.skip_remaining > 0:
                    state.skip_remaining -= 1
                    self.metrics.record_skip(name, "backoff")
                    log.debug("run skipped: backing off", source=name, left=state.skip_remaining)
                    return
            if not lock.acquire(blocking=False):  # a backfill of this source is going on
                self.metrics.record_skip(name, "overlap")
                return
        else:
            # The daily backfill waits for an incremental run in progress rather than
            # being lost until tomorrow.
            while not lock.acquire(timeout=0.5):
                if self.stop.is_set():
                    return
        try:
            self._run(source, kind)
        except Exception:  # the scheduler must never see an exception
            log.exception("unexpected error around a run", source=name)
        finally:
            lock.release()

    def _run(self, source: SourceConfig, kind: str) -> None:
        name = source.name
        if not self._begin(name, kind):
            return
        started = time.monotonic()
        api: SignerApi | None = None
        calls_before: dict[str, int] = {}
        errors_before: dict[str, int] = {}
        try:
            engine = self._warehouse()
            api = self._api(source)
            calls_before, errors_before = dict(api.calls), dict(api.errors)
            runner = SourceSync(
                self.settings,
                source,
                engine,
                api=api,
                stop=self.stop,
                progress=lambda pages, jobs: self._progress(name),
            )
            report = runner.backfill() if kind == "backfill" else runner.sync()
        except SourceBusy:
            self._busy(name)
        except Exception as exc:  # noqa: BLE001 - every failure is logged and retried
            failed = getattr(exc, "report", None)
            if isinstance(failed, RunReport):  # the run started: its own figures and kind
                kind = failed.kind
                calls, errors = failed.figures.api_calls, failed.figures.api_errors
            else:
                calls = counter_delta(api.calls, calls_before) if api is not None else {}
                errors = counter_delta(api.errors, errors_before) if api is not None else {}
            self._failed(name, kind, exc, time.monotonic() - started, calls, errors)
        else:
            self._finished(report)
        finally:
            self._end(name)

    def _begin(self, name: str, kind: str) -> bool:
        with self._idle:
            if self.stop.is_set():
                return False
            self._running += 1
        with self._state_lock:
            state = self._states[name]
            state.running_kind = kind
            state.running_since = utcnow()
            state.last_progress = None
        self.metrics.set_in_progress(name, True)
        return True

    def _end(self, name: str) -> None:
        with self._state_lock:
            state = self._states[name]
            state.running_kind = None
            state.running_since = None
        self.metrics.set_in_progress(name, False)
        with self._idle:
            self._running -= 1
            self._idle.notify_all()

    def _progress(self, name: str) -> None:
        with self._state_lock:
            self._states[name].last_progress = utcnow()

    def _busy(self, name: str) -> None:
        with self._state_lock:
            self._states[name].last_busy = utcnow()
        self.metrics.record_skip(name, "busy")
        log.info("source is being synced by another replica; skipped", source=name)

    def _finished(self, report: RunReport) -> None:
        name = report.source
        stats = report.stats
        rows = {
            "inserted": stats.inserted,
            "updated": stats.updated,
            "unchanged": stats.unchanged,
            "rejected": stats.rejected,
            "removed": stats.removed,
        }
        self.metrics.record_run(
            name,
            report.kind,
            report.outcome,
            report.seconds,
            rows=rows,
            api_calls=report.figures.api_calls,
            api_errors=report.figures.api_errors,
        )
        self._database_ok()
        now = utcnow()
        if report.outcome == "succeeded":  # metrics first: /healthz never runs ahead of them
            self.metrics.record_success(name, now.timestamp(), report.watermark)
        with self._state_lock:
            state = self._states[name]
            state.last_outcome = report.outcome
            if report.watermark is not None:
                state.watermark = report.watermark
            if report.outcome == "succeeded":
                state.last_success = now
                state.last_error = None
                state.consecutive_failures = 0
                state.skip_remaining = 0
        log.info(
            "run finished",
            source=name,
            kind=report.kind,
            outcome=report.outcome,
            run_id=report.run_id,
            api_calls=sum(report.figures.api_calls.values()),
            pages=report.figures.pages,
            seconds=round(report.seconds, 3),
            **rows,
        )

    def _failed(
        self,
        name: str,
        kind: str,
        exc: BaseException,
        seconds: float,
        calls: Mapping[str, int],
        errors: Mapping[str, int],
    ) -> None:
        message, database = self._describe_failure(exc)
        if database:
            self._database_down(message)
        self.metrics.record_run(name, kind, "failed", seconds, api_calls=calls, api_errors=errors)
        with self._state_lock:
            state = self._states[name]
            state.last_outcome = "failed"
            state.last_failure = utcnow()
            state.last_error = message
            state.consecutive_failures += 1
            failures = state.consecutive_failures
            state.skip_remaining = backoff_skips(failures)
            skips = state.skip_remaining
        self.metrics.set_failures(name, failures)
        log.warning(
            "run failed; will retry",
            source=name,
            kind=kind,
            error=message,
            consecutive_failures=failures,
            next_attempt_in=str(self.settings.interval * (skips + 1)),
        )

    def _describe_failure(self, exc: BaseException) -> tuple[str, bool]:
        """One redacted line for logs and /healthz, and whether the warehouse is to blame."""
        if isinstance(exc, DatabaseUnavailable):
            text = str(exc).removeprefix("cannot reach the warehouse, ")
            return redact(f"database unreachable: {text}"), True
        if isinstance(exc, OperationalError | InterfaceError):
            reason = first_line(exc.orig if exc.orig is not None else exc)
            return (
                redact(f"database unreachable: {describe_target(self.settings)}: {reason}"),
                True,
            )
        if isinstance(exc, SchemaOutOfDate):
            return redact(f"warehouse not ready: {exc} ({exc.hint})"), True
        if isinstance(exc, SignerSyncError):
            # SyncFailed carries the cause as text: "…: OperationalError: …" is the database.
            text = str(exc)
            return redact(text), any(f": {name}: " in text for name in _DATABASE_ERRORS)
        return redact(f"{type(exc).__name__}: {first_line(exc)}"), False

    def _database_down(self, message: str) -> None:
        self._database_error = message
        self.metrics.set_database_up(False)

    def _database_ok(self) -> None:
        self._database_error = None
        self.metrics.set_database_up(True)

    # -- dependencies, opened lazily so that their absence never stops the daemon --------

    def _warehouse(self) -> Engine:
        with self._engine_lock:
            if self._engine is None:
                self._engine = open_warehouse(self.settings)
                self._database_ok()
                log.info("warehouse ready", target=describe_target(self.settings))
            return self._engine

    def _api(self, source: SourceConfig) -> SignerApi:
        """One client per source for the daemon's life: its request rate, slowed down
        after throttling, carries over from run to run."""
        with self._api_lock:
            api = self._apis.get(source.name)
            if api is None:
                api = self._apis[source.name] = SignerApi(source, self.settings)
            return api

    # -- health --------------------------------------------------------------------------

    def states(self) -> list[SourceState]:
        with self._state_lock:
            return [state.copy() for state in self._states.values()]

    def health(self) -> HealthReport:
        return assess_health(
            self.states(),
            now=utcnow(),
            interval=self.settings.interval,
            daemon_started=self.started_at,
            database_error=self._database_error,
            stopping=self.stop.is_set(),
        )

    # -- the process ---------------------------------------------------------------------

    def run(self, *, handle_signals: bool = True) -> int:
        """Serve until SIGTERM/SIGINT; the exit code."""
        server = self._start_http()
        if handle_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, self._on_signal)
        watcher = threading.Thread(target=self._stop_when_asked, name="stopper", daemon=True)
        watcher.start()
        log.info(
            "daemon started",
            sources=[source.name for source in self.sources],
            interval=str(self.settings.interval),
            backfill_cron=self.settings.backfill_cron,
            max_parallel_sources=self.settings.max_parallel_sources,
            http=server.url if server else "off",
        )
        try:
            if not self.stop.is_set():
                self.scheduler.start()
        finally:
            self._scheduler_done.set()
        drained = self._drain()
        if server is not None:
            server.stop()
        if not drained:
            log.error("runs still going at the shutdown deadline; exiting without them")
            logging.shutdown()
            os._exit(0)  # worker threads stuck in I/O would otherwise hold the exit
        if self._engine is not None:
            self._engine.dispose()
        log.info("daemon stopped", signal=self._signal_name)
        return 0

    def request_stop(self, reason: str = "stop requested") -> None:
        if self._stop_requested_at is None:
            self._stop_requested_at = time.monotonic()
            self._signal_name = reason
        self.stop.set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only an assignment and Event.set(): the main thread never waits on ``stop``.
        if self.stop.is_set():
            os._exit(130)  # a second signal: the operator insists
        self.request_stop(signal.Signals(signum).name)

    def _stop_when_asked(self) -> None:
        self.stop.wait()
        with self._idle:
            running = self._running
        log.info(
            "stopping: running syncs commit what they have and record themselves interrupted",
            signal=self._signal_name,
            running=running,
        )
        # The scheduler may not be running yet if the signal came during start-up.
        while not self.scheduler.running and not self._scheduler_done.is_set():
            time.sleep(0.02)
        with contextlib.suppress(SchedulerNotRunningError):
            self.scheduler.shutdown(wait=False)

    def _drain(self) -> bool:
        """Wait for running syncs, up to the shutdown deadline; True when none is left."""
        started = self._stop_requested_at or time.monotonic()
        remaining = max(0.0, started + SHUTDOWN_SECONDS - time.monotonic())
        with self._idle:
            return self._idle.wait_for(lambda: self._running == 0, timeout=remaining)

    def _start_http(self) -> ObservabilityServer | None:
        addr = self.settings.http_addr
        if not addr:
            return None
        server = ObservabilityServer(addr, self.metrics, self.health)
        try:
            return server.start()
        except OSError as exc:
            raise ConfigError(
                f"SIGNER_SYNC_HTTP_ADDR: cannot listen on {addr}: {exc.strerror or exc}",
                hint="choose another host:port, or set it empty to turn /metrics off",
            ) from None


def run_daemon(settings: Settings, sources: Sequence[SourceConfig]) -> int:
    """``signer-sync run``."""
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        # "skipped: maximum number of running instances reached" is the expected fate of a
        # tick during a long run; it is counted in signer_sync_skipped_runs_total instead.
        logging.getLogger("apscheduler").setLevel(logging.ERROR)
    return Daemon(settings, sources).run()
