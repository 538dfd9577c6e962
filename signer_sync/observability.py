"""Metrics and health of the daemon: Prometheus text on ``/metrics``, JSON on ``/healthz``.

Health is computed from the daemon's own memory of its runs (:class:`SourceState`), never
from the warehouse, so ``/healthz`` still answers, and says why, when the database is the
thing that is down. Nothing here ever carries a secret: errors arrive already redacted
and metrics hold only source names, operations, codes and numbers.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from signer_sync import __version__
from signer_sync.source import THROTTLE_CODES

#: A source is stale when its last successful sync is older than this many intervals.
STALE_AFTER_INTERVALS = 3

RUN_KINDS = ("incremental", "backfill")
RUN_OUTCOMES = ("succeeded", "failed", "interrupted")
ROW_KINDS = ("inserted", "updated", "unchanged", "rejected", "removed")
SKIP_REASONS = ("busy", "backoff", "overlap", "missed")
_DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)


class Metrics:
    """Every ``signer_sync_*`` metric, in a registry of its own (no process/GC noise
    from the global one, and tests can hold several daemons' metrics apart)."""

    def __init__(self, sources: Iterable[str] = ()) -> None:
        # ``*_created`` series double the output and no dashboard uses them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs = Counter(
            "signer_sync_runs",
            "Finished runs by source, kind (incremental, backfill) and outcome "
            "(succeeded, failed, interrupted).",
            ["source", "kind", "outcome"],
            registry=r,
        )
        self.skipped = Counter(
            "signer_sync_skipped_runs",
            "Scheduled runs that did not start: busy (another replica holds the source), "
            "backoff (after consecutive failures), overlap (a run of the source is still "
            "going), missed (the scheduler woke too late).",
            ["source", "reason"],
            registry=r,
        )
        self.duration = Histogram(
            "signer_sync_run_duration_seconds",
            "Wall time of finished runs.",
            ["source", "kind"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.rows = Counter(
            "signer_sync_rows",
            "Job rows handled by runs: inserted, updated, unchanged, rejected, removed "
            "(marked removed from the API).",
            ["source", "kind"],
            registry=r,
        )
        self.api_calls = Counter(
            "signer_sync_api_calls",
            "HTTP requests to the Signer API (retries included) by operation.",
            ["source", "operation"],
            registry=r,
        )
        self.api_errors = Counter(
            "signer_sync_api_errors",
            "Failed Signer API requests by error code (retried ones included).",
            ["source", "code"],
            registry=r,
        )
        self.throttles = Counter(
            "signer_sync_api_throttles",
            "Signer API requests answered with a throttling error.",
            ["source"],
            registry=r,
        )
        self.last_success = Gauge(
            "signer_sync_last_success_timestamp_seconds",
            "Unix time at which the last successful run of the source finished.",
            ["source"],
            registry=r,
        )
        self.watermark_lag = Gauge(
            "signer_sync_watermark_lag_seconds",
            "Age of the source's watermark: how far behind the API the warehouse may be.",
            ["source"],
            registry=r,
        )
        self.consecutive_failures = Gauge(
            "signer_sync_consecutive_failures",
            "Failed runs of the source since its last success.",
            ["source"],
            registry=r,
        )
        self.in_progress = Gauge(
            "signer_sync_run_in_progress",
            "1 while a run of the source is going on in this process.",
            ["source"],
            registry=r,
        )
        self.database_up = Gauge(
            "signer_sync_database_up",
            "0 while the last attempt to use the warehouse failed, else 1.",
            registry=r,
        )
        self.build_info = Gauge(
            "signer_sync_build_info", "Always 1; the version as a label.", ["version"], registry=r
        )
        self.build_info.labels(__version__).set(1)
        self.database_up.set(1)
        self._watermarks: dict[str, datetime] = {}
        self._lock = threading.Lock()
        for source in sources:
            self.add_source(source)

    def add_source(self, source: str) -> None:
        """Create the source's series at zero so that rates and alerts work from the start."""
        for kind in RUN_KINDS:
            self.duration.labels(source, kind)
            for outcome in RUN_OUTCOMES:
                self.runs.labels(source, kind, outcome)
        for reason in SKIP_REASONS:
            self.skipped.labels(source, reason)
        for kind in ROW_KINDS:
            self.rows.labels(source, kind)
        self.throttles.labels(source)
        self.consecutive_failures.labels(source).set(0)
        self.in_progress.labels(source).set(0)

    # -- recording -----------------------------------------------------------------------

    def record_run(
        self,
        source: str,
        kind: str,
        outcome: str,
        seconds: float,
        *,
        rows: Mapping[str, int] | None = None,
        api_calls: Mapping[str, int] | None = None,
        api_errors: Mapping[str, int] | None = None,
    ) -> None:
        """One finished run (any outcome) with what it did."""
        self.runs.labels(source, kind, outcome).inc()
        self.duration.labels(source, kind).observe(max(seconds, 0.0))
        for name, count in (rows or {}).items():
            if count > 0 and name in ROW_KINDS:
                self.rows.labels(source, name).inc(count)
        for operation, count in (api_calls or {}).items():
            if count > 0:
                self.api_calls.labels(source, operation).inc(count)
        for code, count in (api_errors or {}).items():
            if count > 0:
                self.api_errors.labels(source, code).inc(count)
                if code in THROTTLE_CODES:
                    self.throttles.labels(source).inc(count)

    def record_skip(self, source: str, reason: str) -> None:
        self.skipped.labels(source, reason).inc()

    def record_success(self, source: str, at: float, watermark: datetime | None) -> None:
        self.last_success.labels(source).set(at)
        self.consecutive_failures.labels(source).set(0)
        if watermark is not None:
            with self._lock:
                new = source not in self._watermarks
                self._watermarks[source] = watermark
            if new:
                self.watermark_lag.labels(source).set_function(lambda: self._lag(source))

    def set_failures(self, source: str, count: int) -> None:
        self.consecutive_failures.labels(source).set(count)

    def set_in_progress(self, source: str, running: bool) -> None:
        self.in_progress.labels(source).set(1 if running else 0)

    def set_database_up(self, up: bool) -> None:
        self.database_up.set(1 if up else 0)

    def _lag(self, source: str) -> float:
        with self._lock:
            mark = self._watermarks.get(source)
        if mark is None:
            return float("nan")
        return max(0.0, time.time() - mark.timestamp())

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        data: bytes = generate_latest(self.registry)
        return data


# -- health --------------------------------------------------------------------------------


@dataclass
class SourceState:
    """What the daemon remembers about one source's runs (its only input for health)."""

    name: str
    last_success: datetime | None = None
    last_failure: datetime | None = None
    last_error: str | None = None
    last_outcome: str | None = None
    consecutive_failures: int = 0
    skip_remaining: int = 0
    """Scheduled incremental runs still to skip (back-off)."""
    running_kind: str | None = None
    running_since: datetime | None = None
    last_progress: datetime | None = None
    """When the run in progress last committed a page."""
    last_busy: datetime | None = None
    """When another replica was last found holding this source's lock."""
    watermark: datetime | None = None

    def copy(self) -> SourceState:
        return replace(self)


@dataclass(frozen=True)
class SourceHealth:
    source: str
    healthy: bool
    state: str
    """ok, syncing, busy elsewhere, starting or stale."""
    reason: str | None
    last_success: datetime | None
    consecutive_failures: int
    last_error: str | None

    def to_json(self, now: datetime) -> dict[str, Any]:
        age = (now - self.last_success).total_seconds() if self.last_success else None
        return {
            "healthy": self.healthy,
            "state": self.state,
            "reason": self.reason,
            "last_success": _iso(self.last_success),
            "last_success_age_seconds": None if age is None else round(age, 3),
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error,
        }


@dataclass(frozen=True)
class HealthReport:
    healthy: bool
    checked_at: datetime
    stale_after: timedelta
    sources: tuple[SourceHealth, ...] = ()
    database_error: str | None = None
    stopping: bool = False

    @property
    def stale(self) -> list[str]:
        return [s.source for s in self.sources if not s.healthy]

    def to_json(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.healthy else "unhealthy",
            "checked_at": _iso(self.checked_at),
            "stale_after_seconds": self.stale_after.total_seconds(),
            "stale_sources": self.stale,
            "database": {
                "reachable": self.database_error is None,
                "error": self.database_error,
            },
            "stopping": self.stopping,
            "sources": {s.source: s.to_json(self.checked_at) for s in self.sources},
        }


def assess_source(
    state: SourceState,
    *,
    now: datetime,
    stale_after: timedelta,
    daemon_started: datetime,
    database_error: str | None = None,
) -> SourceHealth:
    """Is one source healthy, and if not, why?

    Healthy when its last successful sync is younger than ``stale_after``; also while a
    run of it commits pages (a first backfill may take longer than three intervals),
    while another replica holds it, and, before any failure, during the first
    ``stale_after`` after the daemon started.
    """

    def fresh(at: datetime | None) -> bool:
        return at is not None and now - at < stale_after

    def verdict(healthy: bool, status: str, reason: str | None = None) -> SourceHealth:
        return SourceHealth(
            source=state.name,
            healthy=healthy,
            state=status,
            reason=reason,
            last_success=state.last_success,
            consecutive_failures=state.consecutive_failures,
            last_error=state.last_error,
        )

    if fresh(state.last_success):
        return verdict(True, "ok")
    if state.running_kind is not None and fresh(state.last_progress):
        return verdict(True, "syncing")
    if fresh(state.last_busy):
        return verdict(True, "busy elsewhere", "another replica holds this source")
    if state.last_success is None and state.last_failure is None and fresh(daemon_started):
        return verdict(True, "starting")
    if database_error is not None and state.last_error == database_error:
        reason = database_error
    elif state.last_error is not None and state.last_outcome == "failed":
        reason = state.last_error
    elif state.last_success is None:
        reason = "never synced"
    elif state.running_kind is not None:
        reason = (
            f"a {state.running_kind} run has committed nothing for over {format_span(stale_after)}"
        )
    else:
        reason = f"no successful sync for {format_span(now - state.last_success)}"
    if state.last_success is None and reason != "never synced":
        reason = f"never synced: {reason}"
    return verdict(False, "stale", reason)


def assess_health(
    states: Iterable[SourceState],
    *,
    now: datetime,
    interval: timedelta,
    daemon_started: datetime,
    database_error: str | None = None,
    stopping: bool = False,
) -> HealthReport:
    """Healthy when every source is (see :func:`assess_source`)."""
    stale_after = interval * STALE_AFTER_INTERVALS
    sources = tuple(
        assess_source(
            state,
            now=now,
            stale_after=stale_after,
            daemon_started=daemon_started,
            database_error=database_error,
        )
        for state in states
    )
    return HealthReport(
        healthy=all(s.healthy for s in sources),
        checked_at=now,
        stale_after=stale_after,
        sources=sources,
        database_error=database_error,
        stopping=stopping,
    )


def _iso(at: datetime | None) -> str | None:
    return at.isoformat().replace("+00:00", "Z") if at is not None else None


def format_span(delta: timedelta) -> str:
    """A duration the way people say it: 45s, 12m, 5h, 3d."""
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172_800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


# -- the HTTP listener ---------------------------------------------------------------------


def parse_address(addr: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) into a bindable pair."""
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    return host, int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    metrics: Metrics
    health: Callable[[], HealthReport]

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A scraper that hangs up early is not worth a traceback."""


class _Handler(BaseHTTPRequestHandler):
    server_version = "signer-sync"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would drown the logs."""

    def do_GET(self) -> None:
        server = cast(_Server, self.server)
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        try:
            if path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, server.metrics.render())
            elif path == "/healthz":
                report = server.health()
                body = json.dumps(report.to_json(), indent=2).encode()
                self._send(200 if report.healthy else 503, "application/json", body)
            elif path == "/":
                self._send(200, "text/plain; charset=utf-8", b"signer-sync: /metrics /healthz\n")
            else:
                self._send(404, "application/json", b'{"error": "not found"}')
        except Exception:  # noqa: BLE001 - a scrape must never take the daemon down
            with contextlib.suppress(Exception):
                self._send(500, "application/json", b'{"error": "internal error"}')

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)


class ObservabilityServer:
    """``/metrics`` and ``/healthz`` on a stdlib HTTP server in a daemon thread."""

    def __init__(self, addr: str, metrics: Metrics, health: Callable[[], HealthReport]) -> None:
        self.addr = addr
        self.metrics = metrics
        self.health = health
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ObservabilityServer:
        """Bind and serve; raises OSError when the address cannot be bound."""
        host, port = parse_address(self.addr)

        class Server(_Server):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        httpd = Server((host, port), _Handler)
        httpd.metrics = self.metrics
        httpd.health = self.health
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="observability-http",
            daemon=True,
        )
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("not started")
        host, port = self._httpd.server_address[:2]
        shown = host.decode() if isinstance(host, bytes) else str(host)
        return f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}"

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2)
