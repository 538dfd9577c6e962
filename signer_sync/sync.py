"""The sync engine: backfill and incremental runs of one source.

Listings are paged concurrently (boto3 clients are thread-safe) into a bounded queue;
one writer drains it in batches, so fetching and writing overlap and memory does not
grow with the number of jobs. The watermark moves only after everything is committed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from signer_sync.config import Settings, SourceConfig
from signer_sync.errors import SignerSyncError, SourceBusy, SyncFailed, first_line
from signer_sync.planning import (
    ExpiryBand,
    ExpiryWindow,
    ValidityRange,
    nominal_range,
    partition_expiry,
    plan_bands,
    profile_key,
    validity_ranges,
)
from signer_sync.records import (
    Rejection,
    SigningJob,
    SigningProfile,
    map_describe_item,
    map_list_item,
    map_profile,
)
from signer_sync.source import Interrupted, Page, SignerApi, counter_delta
from signer_sync.warehouse.state import (
    RunFigures,
    SourceLock,
    Watermark,
    abandon_stale_runs,
    finish_run,
    load_watermark,
    save_pending,
    save_watermark,
    source_lock,
    start_run,
)
from signer_sync.warehouse.writer import (
    JobWriter,
    WriteStats,
    expiry_edges,
    in_progress_job_ids,
    merge_ranges,
    revoked_without_details,
    statuses_without_expiry,
    utcnow,
)

log = logging.getLogger(__name__)

#: At most this many jobs are looked up with DescribeSigningJob in one run.
DESCRIBE_LIMIT = 20_000
#: Revoked jobs without a revocation record looked up again per run.
HEAL_LIMIT = 200


#: A window listing may be split in two for idle pagers after this many pages (each split
#: reads those pages again, so early).
SPLIT_WITHIN_PAGES = 1
#: Bounds of the expiry axis for bisection: the API forgets jobs after two years, and no
#: validity exceeds 135 months. Windows at both ends stay open, so nothing relies on them.
_OLDEST_EXPIRY = timedelta(days=800)
_LATEST_EXPIRY = timedelta(days=135 * 31 + 60)
_COVERED_STATUSES = ("InProgress", "Failed")


@dataclass(frozen=True)
class Listing:
    """One ListSigningJobs listing of a run: a name for logs, its filters, and the expiry
    window it reads, if any (such a listing can be split in two while it runs)."""

    name: str
    filters: dict[str, Any]
    window: ExpiryWindow | None = None

    @classmethod
    def of_window(cls, name: str, window: ExpiryWindow) -> Listing:
        return cls(name, window.filters(), window)

    def halves(self) -> list[Listing]:
        split = self.window.halves() if self.window is not None else None
        if split is None:
            return []
        return [Listing.of_window(f"{self.name}/{i}", half) for i, half in enumerate(split, 1)]


@dataclass
class RunReport:
    """The outcome of one run of one source."""

    source: str
    kind: str
    run_id: int | None = None
    outcome: str = "running"
    figures: RunFigures = field(default_factory=RunFigures)
    seconds: float = 0.0
    watermark: datetime | None = None
    error: str | None = None
    listings: int = 0

    @property
    def stats(self) -> WriteStats:
        return self.figures.stats

    def summary(self) -> str:
        s = self.stats
        calls = sum(self.figures.api_calls.values())
        text = (
            f"{self.source}: {self.kind} {self.outcome}: {s.inserted} new, {s.updated} changed, "
            f"{s.unchanged} unchanged, {s.rejected} rejected"
        )
        if self.kind == "backfill":
            text += f", {s.removed} removed from the API"
        text += f"; {calls} API calls in {self.seconds:.1f}s"
        if self.error:
            text += f" ({self.error})"
        return text


Progress = Callable[[int, int], None]
"""Called with (pages, jobs) after each page is written."""


class SourceSync:
    """Runs of one source against one warehouse."""

    def __init__(
        self,
        settings: Settings,
        source: SourceConfig,
        engine: Engine,
        *,
        api: SignerApi | None = None,
        clock: Callable[[], datetime] = utcnow,
        stop: threading.Event | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.engine = engine
        self._api = api
        self.clock = clock
        self.stop = stop or threading.Event()
        self.progress = progress
        self._describer = _Describer(self._describe, settings.concurrency, self.stop)

    @property
    def api(self) -> SignerApi:
        if self._api is None:
            self._api = SignerApi(self.source, self.settings)
        return self._api

    # -- entry points --------------------------------------------------------------------

    def sync(self) -> RunReport:
        """An incremental run; the first run of a source (no watermark) is a backfill."""
        return self._locked("incremental")

    def backfill(self) -> RunReport:
        return self._locked("backfill")

    def _locked(self, kind: str) -> RunReport:
        with source_lock(self.engine, self.source.name) as lock:
            if lock is None:
                raise SourceBusy(
                    f"source {self.source.name!r} is being synced by another process; skipped"
                )
            abandon_stale_runs(self.engine, self.source.name)
            watermark = load_watermark(self.engine, self.source.name)
            if kind == "incremental" and watermark.at is None:
                kind = "backfill"
            return self._run(kind, watermark, lock)

    def _run(self, kind: str, watermark: Watermark, lock: SourceLock) -> RunReport:
        started = time.monotonic()
        now = self.clock()
        report = RunReport(self.source.name, kind)
        report.run_id = start_run(self.engine, self.source.name, kind, now)
        writer = JobWriter(
            self.engine, source=self.source.name, run_id=report.run_id, clock=self.clock
        )
        api: SignerApi | None = None
        calls_before: dict[str, int] = {}
        errors_before: dict[str, int] = {}
        self._describer = _Describer(self._describe, self.settings.concurrency, self.stop)
        try:
            # Inside the try: a role that cannot be assumed is a recorded, failed run.
            api = self.api
            calls_before, errors_before = dict(api.calls), dict(api.errors)
            if kind == "backfill":
                new_mark = self._backfill(writer, watermark, now, report, lock)
            else:
                new_mark = self._incremental(writer, watermark, now, report)
            report.outcome = "succeeded"
        except Interrupted:
            report.outcome = "interrupted"
            report.error = "stopped by a signal before the run finished"
        except Exception as exc:  # noqa: BLE001 - every failure is recorded, then raised
            report.outcome = "failed"
            report.error = _one_line(exc, self.settings)
        finally:
            self._describer.close()
        if api is not None:
            report.figures.api_calls = counter_delta(api.calls, calls_before)
            report.figures.api_errors = counter_delta(api.errors, errors_before)
        report.seconds = time.monotonic() - started
        if report.outcome == "succeeded":
            # Only now, with every row committed, does the watermark move, and only if no
            # other process could have run this source meanwhile; the run's end is recorded
            # in the same transaction, so the two never disagree.
            try:
                _still_held(lock)
                with self.engine.begin() as connection:
                    save_watermark(connection, self.source.name, new_mark, report.run_id)
                    finish_run(connection, report.run_id, "succeeded", report.figures)
                report.watermark = new_mark.at
                return report
            except Exception as exc:  # noqa: BLE001
                report.outcome = "failed"
                report.error = _one_line(exc, self.settings)
        try:
            with self.engine.begin() as connection:
                finish_run(connection, report.run_id, report.outcome, report.figures, report.error)
        except Exception as exc:  # noqa: BLE001 - the database may be the thing that failed
            log.warning(
                "could not record the end of run %s: %s",
                report.run_id,
                _one_line(exc, self.settings),
            )
        if report.outcome == "failed":
            raise SyncFailed(f"{self.source.name}: {kind} failed: {report.error}", report=report)
        return report

    # -- the two kinds of run ------------------------------------------------------------

    def _backfill(
        self,
        writer: JobWriter,
        watermark: Watermark,
        now: datetime,
        report: RunReport,
        lock: SourceLock,
    ) -> Watermark:
        writer.clear_seen()
        in_progress_before = self._remember_pending(watermark)
        self._sync_profiles(writer)
        listings, covered = self._backfill_listings(now)
        outcome = self._read(writer, listings, report, record_seen=True)
        _still_held(lock)  # what this run saw is only complete if nobody else ran meanwhile
        report.stats.removed = writer.mark_removed(covered_statuses=covered)
        self._follow_up(writer, in_progress_before, outcome, report)
        ranges = merge_ranges(dict(watermark.ranges), outcome.observed)
        return Watermark(at=now, ranges=ranges, runs=watermark.runs + 1, last_kind="backfill")

    def _incremental(
        self, writer: JobWriter, watermark: Watermark, now: datetime, report: RunReport
    ) -> Watermark:
        assert watermark.at is not None
        in_progress_before = self._remember_pending(watermark)
        nominal, calendar = self._sync_profiles(writer)
        ranges = validity_ranges(nominal, watermark.ranges, calendar_units=calendar)
        listings = self.plan(watermark, now, ranges)
        outcome = self._read(writer, listings, report, record_seen=False)
        self._follow_up(writer, in_progress_before, outcome, report)
        ranges_after = merge_ranges(dict(watermark.ranges), outcome.observed)
        return Watermark(
            at=now, ranges=ranges_after, runs=watermark.runs + 1, last_kind="incremental"
        )

    def _remember_pending(self, watermark: Watermark) -> set[str]:
        """The jobs in progress now (and those an unfinished run left undescribed): each
        that leaves InProgress during this run is described at its end."""
        pending = in_progress_job_ids(self.engine, self.source.name) | set(watermark.pending)
        if watermark.at is not None:
            save_pending(
                self.engine, self.source.name, replace(watermark, pending=tuple(sorted(pending)))
            )
        return pending

    def _backfill_listings(self, now: datetime) -> tuple[list[Listing], tuple[str, ...] | None]:
        """A complete listing: serial, or disjoint expiry windows (cut at the quantiles of
        what the warehouse holds, bisected while pagers are idle) plus one listing per
        status that has no expiry. Returns the listings and, when partitioned, the statuses
        listed by status (what reconciliation may judge besides jobs with an expiry)."""
        if self.settings.concurrency == 1 or not self.settings.backfill_partitions:
            return [Listing("all jobs", {})], None
        edges = expiry_edges(self.engine, self.source.name, 4 * self.settings.concurrency)
        windows = partition_expiry(edges, now - _OLDEST_EXPIRY, now + _LATEST_EXPIRY)
        listings = [
            Listing.of_window(f"expiry window {i + 1}", window) for i, window in enumerate(windows)
        ]
        statuses = sorted(
            set(_COVERED_STATUSES) | set(statuses_without_expiry(self.engine, self.source.name))
        )
        listings += [Listing(f"status {status}", {"status": status}) for status in statuses]
        return listings, tuple(statuses)

    def plan(
        self, watermark: Watermark, now: datetime, ranges: Iterable[ValidityRange]
    ) -> list[Listing]:
        """The listings of an incremental run (see :mod:`signer_sync.planning`)."""
        assert watermark.at is not None
        bands: list[ExpiryBand] = plan_bands(watermark.at, now, ranges, self.settings.expiry_margin)
        listings = [
            Listing.of_window(
                f"expiry band {i + 1}/{len(bands)}",
                ExpiryWindow(
                    band.expires_after, band.expires_before, band.expires_after, band.expires_before
                ),
            )
            for i, band in enumerate(bands)
        ]
        listings.append(Listing("in progress", {"status": "InProgress"}))
        if (watermark.runs + 1) % self.settings.failed_every == 0:
            listings.append(Listing("failed", {"status": "Failed"}))
        if (watermark.runs + 1) % self.settings.revoked_every == 0:
            listings.append(Listing("revoked", {"isRevoked": True}))
        return listings

    # -- steps ---------------------------------------------------------------------------

    def _sync_profiles(self, writer: JobWriter) -> tuple[dict[str, ValidityRange], dict[str, bool]]:
        """Store every profile version; return their nominal validity ranges."""
        profiles: list[SigningProfile] = []
        rejections: list[Rejection] = []
        for item in self.api.list_profiles():
            if self.stop.is_set():
                raise Interrupted("stopped while listing profiles")
            mapped = map_profile(item)
            (rejections if isinstance(mapped, Rejection) else profiles).append(mapped)  # type: ignore[arg-type]
        writer.write_profiles(profiles, self.api.region)
        writer.write_rejections(rejections, "ListSigningProfiles")
        nominal: dict[str, ValidityRange] = {}
        calendar: dict[str, bool] = {}
        for profile in profiles:
            values = profile.values
            key = profile_key(values.get("profile_name"), values.get("profile_version"))
            period = nominal_range(values.get("validity_value"), values.get("validity_type"))
            if period is not None:
                nominal[key] = period
                calendar[key] = str(values.get("validity_type")).upper() != "DAYS"
        return nominal, calendar

    def _read(
        self,
        writer: JobWriter,
        listings: Sequence[Listing],
        report: RunReport,
        *,
        record_seen: bool,
    ) -> _ReadOutcome:
        """Page every listing concurrently and write the jobs in batches.

        Pagers run on daemon threads and hand pages to this thread through a bounded queue,
        so fetching and writing overlap and memory stays flat. While there are fewer than
        two listings per pager, a window listing is abandoned after its first page for its
        two halves (bisection); the
        pages it already read are written, and read again by a half, harmlessly.
        """
        outcome = _ReadOutcome()
        report.listings = len(listings)
        workers = self.settings.concurrency
        pages: queue.Queue[tuple[str, Page] | BaseException] = queue.Queue(maxsize=workers * 4)
        todo: queue.Queue[Listing] = queue.Queue()
        for listing in listings:
            todo.put(listing)
        abort = threading.Event()
        stop = _Either(self.stop, abort)
        lock = threading.Lock()
        state = {"outstanding": len(listings)}

        def deliver(item: tuple[str, Page] | BaseException) -> None:
            while not abort.is_set():
                try:
                    pages.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue

        def wants_more() -> bool:
            # Enough listings to keep every pager busy until the end, whatever the timing.
            with lock:
                return state["outstanding"] < 2 * workers

        def read(listing: Listing) -> None:
            iterator = self.api.list_jobs(listing.filters, stop=stop)
            try:
                for number, page in enumerate(iterator, 1):
                    deliver((listing.name, page))
                    if page.more and number <= SPLIT_WITHIN_PAGES and wants_more():
                        halves = listing.halves()
                        if halves:
                            with lock:
                                state["outstanding"] += len(halves)
                                report.listings += len(halves)
                            for half in halves:
                                todo.put(half)
                            return
            finally:
                iterator.close()

        def pager() -> None:
            # Daemon threads, never joined: a request hanging in flight cannot hold up
            # the end of a run; after ``abort`` a pager only finishes its current call.
            while not abort.is_set():
                try:
                    listing = todo.get(timeout=0.05)
                except queue.Empty:
                    with lock:
                        if state["outstanding"] == 0:
                            return
                    continue
                try:
                    read(listing)
                except BaseException as exc:  # noqa: BLE001 - handed to the writer thread
                    deliver(exc)
                finally:
                    with lock:
                        state["outstanding"] -= 1

        for number in range(workers):
            name = f"pager-{self.source.name}-{number}"
            threading.Thread(target=pager, name=name, daemon=True).start()

        batch: list[SigningJob] = []
        rejections: list[Rejection] = []
        failure: BaseException | None = None
        try:
            while True:
                try:
                    item = pages.get(timeout=0.1)
                except queue.Empty:
                    if self.stop.is_set():
                        failure = Interrupted("stopped while a page was in flight")
                        break
                    with lock:
                        if state["outstanding"] == 0 and pages.empty():
                            break
                    continue
                if isinstance(item, BaseException):
                    failure = item
                    break
                _, page = item
                report.figures.pages += 1
                for raw in page.jobs:
                    mapped = map_list_item(raw, region=self.api.region, source=self.source.name)
                    if isinstance(mapped, Rejection):
                        rejections.append(mapped)
                        continue
                    batch.append(mapped)
                    if mapped.values.get("status") == "InProgress":
                        outcome.listed_in_progress.add(mapped.job_id)
                if len(batch) >= self.settings.batch_size:
                    self._flush(writer, batch, rejections, report, outcome, record_seen)
                    batch, rejections = [], []
                if self.progress is not None:
                    self.progress(report.figures.pages, outcome.jobs + len(batch))
        finally:
            abort.set()  # pagers still running stop at their next page
        # Whatever was fetched is committed, also when the run was interrupted or failed.
        self._flush(writer, batch, rejections, report, outcome, record_seen)
        if failure is not None:
            raise failure
        return outcome

    def _flush(
        self,
        writer: JobWriter,
        batch: list[SigningJob],
        rejections: list[Rejection],
        report: RunReport,
        outcome: _ReadOutcome,
        record_seen: bool,
    ) -> None:
        if rejections:
            report.stats.rejected += writer.write_rejections(rejections, "ListSigningJobs")
        if not batch:
            return
        result = writer.write_jobs(batch, record_seen=record_seen)
        report.stats.add(result.stats)
        outcome.jobs += len(batch)
        outcome.newly_revoked.update(result.newly_revoked)
        # Fetch their revocation records while the listing goes on.
        self._describer.submit(result.newly_revoked)
        merge_ranges(outcome.observed, result.observed)

    def _follow_up(
        self,
        writer: JobWriter,
        in_progress_before: set[str],
        outcome: _ReadOutcome,
        report: RunReport,
    ) -> None:
        """DescribeSigningJob for jobs that left InProgress and for new revocations, to fill
        ``completed_at``, ``status_reason`` and the revocation record."""
        wanted = (in_progress_before - outcome.listed_in_progress) | outcome.newly_revoked
        # Heal a few revoked jobs whose record an earlier run could not fetch; a bounded
        # number, so an implementation that never returns one cannot make runs grow.
        wanted |= set(revoked_without_details(self.engine, self.source.name, HEAL_LIMIT))
        self._describer.submit(sorted(wanted))
        found: list[SigningJob] = []
        rejections: list[Rejection] = []
        for item in self._describer.results():
            if item is None:
                continue
            mapped = map_describe_item(item)
            if isinstance(mapped, Rejection):
                rejections.append(mapped)
            else:
                found.append(mapped)
        for start in range(0, len(found), self.settings.batch_size):
            result = writer.write_jobs(found[start : start + self.settings.batch_size])
            report.stats.updated += result.stats.updated
            report.stats.inserted += result.stats.inserted
        report.stats.rejected += writer.write_rejections(rejections, "DescribeSigningJob")

    def _describe(self, job_id: str) -> dict[str, Any] | None:
        if self.stop.is_set():
            raise Interrupted("stopped during DescribeSigningJob look-ups")
        return self.api.describe_job(job_id)


class _Describer:
    """DescribeSigningJob look-ups on a small pool, started as soon as a job needs one,
    at most DESCRIBE_LIMIT a run, each job once."""

    def __init__(
        self,
        describe: Callable[[str], dict[str, Any] | None],
        workers: int,
        stop: threading.Event,
    ) -> None:
        self._describe = describe
        self._workers = workers
        self._stop = stop
        self._pool: ThreadPoolExecutor | None = None
        self._futures: dict[str, Future[dict[str, Any] | None]] = {}

    def submit(self, job_ids: Iterable[str]) -> None:
        for job_id in job_ids:
            if job_id in self._futures or len(self._futures) >= DESCRIBE_LIMIT:
                continue
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="describe")
            self._futures[job_id] = self._pool.submit(self._describe, job_id)

    def results(self) -> Iterator[dict[str, Any] | None]:
        """Each answer in turn; a stop signal does not wait for requests in flight."""
        for future in self._futures.values():
            while True:
                try:
                    yield future.result(timeout=0.2)
                    break
                except FutureTimeout:
                    if self._stop.is_set():
                        raise Interrupted("stopped during DescribeSigningJob look-ups") from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class _ReadOutcome:
    jobs: int = 0
    newly_revoked: set[str] = field(default_factory=set)
    listed_in_progress: set[str] = field(default_factory=set)
    observed: dict[str, ValidityRange] = field(default_factory=dict)


class _Either(threading.Event):
    """Set when either of two events is set (the run's stop signal or an internal abort)."""

    def __init__(self, first: threading.Event, second: threading.Event) -> None:
        super().__init__()
        self._first, self._second = first, second

    def is_set(self) -> bool:
        return self._first.is_set() or self._second.is_set()


def _still_held(lock: SourceLock) -> None:
    if not lock.held():
        raise SyncFailed(
            "lost the source lock during the run (its database connection ended); "
            "another process may have synced this source, so this run does not count"
        )


def _one_line(exc: BaseException, settings: Settings) -> str:
    """An error as one line, with the database password never in it."""
    if isinstance(exc, SignerSyncError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {first_line(exc)}"
    password = settings.url.password
    if password:
        text = text.replace(str(password), "***")
    return text[:500]
