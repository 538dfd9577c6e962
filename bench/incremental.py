"""Incremental cost with 1,000,000 jobs in the warehouse and 100 new jobs in the API.

Setup (not timed): an emulator process seeded with N jobs (frozen clock), one backfill
into a scratch PostgreSQL schema with concurrency 8 at 0 ms latency, then one incremental
run to settle. Each measured run: advance the world clock 10 minutes, add 100 jobs created
since the previous run (world.add_random_jobs), run SourceSync.sync() with the world's
clock. Two settings, interleaved run by run on the same warehouse: the defaults
(failed_every=1, revoked_every=1: status=Failed and isRevoked=true are listed every run,
without a time filter), and failed_every=revoked_every=10000. ListSigningJobs calls are
counted by kind of listing (SignerApi.list_jobs wrapped); the emulator's own answering
time is read from the emulator process, because its listings scan every stored job for
each filtered page (a cost of the emulator, not of AWS or of signer-sync).

    python -m bench.incremental           # 1,000,000 jobs, 5 runs per setting
    python -m bench.incremental --quick   # 20,000 jobs, 2 runs per setting
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections import Counter, defaultdict
from collections.abc import Generator, Mapping
from datetime import datetime
from typing import Any

from bench.common import (
    EmulatorProcess,
    dummy_aws_env,
    make_source_sync,
    median,
    publish,
    scratch_warehouse,
)
from signer_sync.config import load_settings


def kind_of(filters: Mapping[str, Any]) -> str:
    if "signatureExpiresAfter" in filters or "signatureExpiresBefore" in filters:
        return "expiry bands"
    if filters.get("isRevoked"):
        return "isRevoked=true"
    if "status" in filters:
        return f"status={filters['status']}"
    return "unfiltered"


def counting(api: Any, counts: Counter[str], listings: Counter[str]) -> None:
    """Wrap api.list_jobs to count pages (one ListSigningJobs call each) per kind."""
    original = api.list_jobs

    def list_jobs(filters: Mapping[str, Any], **kwargs: Any) -> Generator[Any, None, None]:
        kind = kind_of(filters)
        listings[kind] += 1
        for page in original(filters, **kwargs):
            counts[kind] += 1
            yield page

    api.list_jobs = list_jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--new", type=int, default=100)
    parser.add_argument(
        "--wait-for",
        metavar="PATH",
        help="after the (untimed) setup, wait until PATH exists before the measured runs",
    )
    parser.add_argument("--json", help="also write the raw measurements here")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.runs = 20_000, 2
    logging.basicConfig(level=logging.WARNING)
    dummy_aws_env()
    configs = {
        "defaults (failed_every=1, revoked_every=1)": {},
        "failed_every=revoked_every=10000": {"failed_every": 10_000, "revoked_every": 10_000},
    }
    results: dict[str, list[dict[str, Any]]] = defaultdict(list)
    started = time.perf_counter()
    with EmulatorProcess(args.jobs) as emu:
        print(
            f"# emulator seeded with {emu.listed} listed jobs in "
            f"{time.perf_counter() - started:.0f}s",
            flush=True,
        )
        now = datetime.fromisoformat(emu.now)
        with scratch_warehouse(concurrency=8) as (settings, engine):

            def sync_for(overrides: dict[str, Any]) -> Any:
                run_settings = settings
                if overrides:
                    run_settings = load_settings(
                        environ={
                            "SIGNER_SYNC_DATABASE_URL": settings.url.render_as_string(False),
                            "SIGNER_SYNC_DB_SCHEMA": settings.db_schema,
                        },
                        concurrency=8,
                        **overrides,
                    )
                return make_source_sync(
                    run_settings, engine, emu.url, emu.region, clock=lambda: now
                )

            start = time.perf_counter()
            report = sync_for({}).backfill()
            print(
                f"# backfill: {report.summary()} ({time.perf_counter() - start:.0f}s wall)",
                flush=True,
            )
            report = sync_for({}).sync()
            print(f"# settling run: {report.summary()}", flush=True)
            if args.wait_for:
                print(f"# waiting for {args.wait_for}", flush=True)
                while not os.path.exists(args.wait_for):
                    time.sleep(2)
            for number in range(args.runs):
                for name, overrides in configs.items():
                    since = now
                    now = datetime.fromisoformat(emu.command("advance 600")["now"])
                    emu.command(f"add {args.new} {since.isoformat()}")
                    sync = sync_for(overrides)
                    counts: Counter[str] = Counter()
                    listings: Counter[str] = Counter()
                    counting(sync.api, counts, listings)
                    emu.command("reset")
                    start = time.perf_counter()
                    report = sync.sync()
                    seconds = time.perf_counter() - start
                    busy = emu.busy()
                    stats = report.stats
                    results[name].append(
                        {
                            "seconds": seconds,
                            "emulator_busy": busy.get("wall", 0.0),
                            "calls": dict(report.figures.api_calls),
                            "list_calls_by_kind": dict(counts),
                            "listings_by_kind": dict(listings),
                            "inserted": stats.inserted,
                            "updated": stats.updated,
                            "unchanged": stats.unchanged,
                            "kind": report.kind,
                        }
                    )
                    print(
                        f"# run {number + 1}/{args.runs} [{name}]: {seconds:.2f}s, "
                        f"emulator busy {busy.get('wall', 0.0):.2f}s, {dict(counts)}, "
                        f"{report.summary()}",
                        flush=True,
                    )
    table = []
    kinds = ["expiry bands", "status=InProgress", "status=Failed", "isRevoked=true"]
    for name, runs in results.items():
        list_calls = [r["calls"].get("ListSigningJobs", 0) for r in runs]
        row = [
            name,
            len(runs),
            f"{median([r['seconds'] for r in runs]):.2f}",
            f"{median([r['emulator_busy'] for r in runs]):.2f}",
            f"{median([r['seconds'] - r['emulator_busy'] for r in runs]):.2f}",
            f"{median(list_calls):g}",
        ]
        row += [f"{median([r['list_calls_by_kind'].get(k, 0) for r in runs]):g}" for k in kinds]
        row += [
            f"{median([r['calls'].get('DescribeSigningJob', 0) for r in runs]):g}",
            f"{median([r['inserted'] for r in runs]):g}",
        ]
        table.append(row)
    print()
    print(f"{args.jobs} jobs seeded, {args.new} new jobs per run")
    publish(
        [
            "settings",
            "runs",
            "median s/run",
            "emulator busy s",
            "s minus emulator",
            "ListSigningJobs",
            *(f"of which {k}" for k in kinds),
            "DescribeSigningJob",
            "rows inserted",
        ],
        table,
        results,
        args.json,
    )


if __name__ == "__main__":
    main()
