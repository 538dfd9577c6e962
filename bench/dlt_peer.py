"""signer-sync's write path vs dlt (merge on job_id) on the same 100,000 rows.

Every load runs in its own subprocess (``--child``) so its peak RSS can be measured: the
child builds the rows (synthetic_jobs, same seed), notes its RSS, then loads them fresh
and again with every 10th job's revocation flipped (is_revoked and raw.isRevoked), sampling
RSS with psutil in a thread. dlt: ``dlt.pipeline(destination=dlt.destinations.postgres(...),
dataset_name=<scratch>)``, ``write_disposition="merge"``, ``primary_key="job_id"``, ``raw``
declared as a json column (otherwise dlt would flatten it into columns and child tables).
signer-sync: JobWriter.write_jobs in batches of 1000 (the default batch_size).
dlt telemetry is off (RUNTIME__DLTHUB_TELEMETRY=false).

    python -m bench.dlt_peer           # 100k rows, 2 rounds (each: dlt, signer-sync)
    python -m bench.dlt_peer --quick   # 5k rows, 1 round
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from bench.common import (
    PG_URL,
    PeakRss,
    median,
    mib,
    publish,
    ratio,
    scratch_warehouse,
    synthetic_jobs,
)
from bench.write_path import changed_copy

os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")


def child(kind: str, rows: int) -> dict[str, Any]:
    logging.basicConfig(level=logging.WARNING)
    _, jobs = synthetic_jobs(rows)
    jobs = jobs[:rows]
    passes = {"fresh": jobs, "changed_10pct": changed_copy(jobs)}
    out: dict[str, Any] = {}
    if kind == "dlt":
        import dlt
        from sqlalchemy import create_engine, text

        schema = f"bench_dlt_{uuid.uuid4().hex[:10]}"
        # dlt insists on a password; the server trusts local connections and ignores it.
        url = PG_URL.replace("postgresql+psycopg://", "postgresql://").replace(
            "postgres@", "postgres:unused@"
        )
        with tempfile.TemporaryDirectory() as pipelines_dir:
            pipeline = dlt.pipeline(
                pipeline_name=schema,
                destination=dlt.destinations.postgres(url),
                dataset_name=schema,
                pipelines_dir=pipelines_dir,
            )
            try:
                for name, data in passes.items():
                    records = [{"job_id": job.job_id, **job.values} for job in data]
                    with PeakRss() as rss:
                        start = time.perf_counter()
                        pipeline.run(
                            records,
                            table_name="signing_jobs",
                            write_disposition="merge",
                            primary_key="job_id",
                            columns={"raw": {"data_type": "json"}},
                        )
                        out[name] = time.perf_counter() - start
                    out[f"{name}_rss_start"], out[f"{name}_rss_peak"] = rss.start, rss.peak
                    del records
            finally:
                admin = create_engine(PG_URL)
                with admin.begin() as connection:
                    for name in (schema, f"{schema}_staging"):
                        connection.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
                admin.dispose()
    else:
        from signer_sync.warehouse.state import start_run
        from signer_sync.warehouse.writer import JobWriter

        with scratch_warehouse() as (_settings, engine):
            run_id = start_run(engine, "bench", "backfill", datetime.now(UTC))
            writer = JobWriter(engine, source="bench", run_id=run_id)
            for name, data in passes.items():
                with PeakRss() as rss:
                    start = time.perf_counter()
                    for offset in range(0, len(data), 1000):
                        writer.write_jobs(data[offset : offset + 1000])
                    out[name] = time.perf_counter() - start
                out[f"{name}_rss_start"], out[f"{name}_rss_peak"] = rss.start, rss.peak
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=("dlt", "ss"))
    parser.add_argument("--json", help="also write the raw measurements here")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.rows)))
        return
    if args.quick:
        args.rows, args.rounds = 5_000, 1
    results: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for number in range(args.rounds):
        order = ("dlt", "ss") if number % 2 == 0 else ("ss", "dlt")
        for kind in order:
            done = subprocess.run(
                [sys.executable, "-m", "bench.dlt_peer", "--child", kind, "--rows", str(args.rows)],
                check=True,
                capture_output=True,
                text=True,
            )
            results[kind].append(json.loads(done.stdout.strip().splitlines()[-1]))
        shown = {
            k: f"{v[-1]['fresh']:.1f}s/{v[-1]['changed_10pct']:.1f}s" for k, v in results.items()
        }
        print(f"# round {number + 1}/{args.rounds} (fresh/changed): {shown}", flush=True)
    labels = {"dlt": "dlt merge (primary_key=job_id)", "ss": "signer-sync write_jobs, batch 1000"}
    table = []
    for kind in ("dlt", "ss"):
        for name in ("fresh", "changed_10pct"):
            runs = results[kind]
            secs = [r[name] for r in runs]
            speedup = [
                ratio(d[name], s[name]) for d, s in zip(results["dlt"], results["ss"], strict=True)
            ]
            table.append(
                [
                    labels[kind],
                    name,
                    args.rounds,
                    f"{median(secs):.2f}",
                    f"{args.rows / median(secs):,.0f}",
                    f"{mib(median([r[name + '_rss_start'] for r in runs])):.0f}",
                    f"{mib(median([r[name + '_rss_peak'] for r in runs])):.0f}",
                    f"{mib(median([r[name + '_rss_peak'] - r[name + '_rss_start'] for r in runs])):.0f}",  # noqa: E501
                    "1.00" if kind == "dlt" else f"{median(speedup):.1f}x",
                ]
            )
    print()
    print(f"{args.rows} rows, {args.rounds} rounds (each load in its own subprocess)")
    publish(
        [
            "loader",
            "pass",
            "rounds",
            "median s",
            "rows/s",
            "RSS before MiB",
            "peak RSS MiB",
            "peak - before MiB",
            "speed-up vs dlt (median per-round ratio)",
        ],
        table,
        results,
        args.json,
    )


if __name__ == "__main__":
    main()
