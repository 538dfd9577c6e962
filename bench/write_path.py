"""The write path alone: rows/s into PostgreSQL for 100,000 synthetic jobs.

signer-sync's JobWriter.write_jobs (batches of 1000 and 5000; staging by COPY, compare in
SQL, new rows + first_seen events in one statement) against a plain psycopg COPY of the
same rows into signing_jobs (pre-serialised JSON, ``write_row``; the physical limit). Three
passes each: fresh (empty table), update (every 10th job revoked/unrevoked: is_revoked and
raw.isRevoked change), unchanged (the same rows again). For COPY the update/unchanged
passes are COPY into a temp table + one INSERT ... SELECT ... ON CONFLICT DO UPDATE ...
WHERE ... IS DISTINCT FROM. Each variant gets a fresh scratch schema per round; variants
are interleaved (rotating order) and ratios are taken within a round.

    python -m bench.write_path           # 100k rows, 3 rounds
    python -m bench.write_path --quick   # 10k rows, 1 round
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg

from bench.common import PG_URL, fmt_table, median, ratio, scratch_warehouse, synthetic_jobs
from signer_sync.records import LIST_COLUMNS, SigningJob
from signer_sync.warehouse.state import start_run
from signer_sync.warehouse.writer import JobWriter

PASSES = ("fresh", "update", "unchanged")
COLUMNS = ("job_id", *LIST_COLUMNS)


def changed_copy(jobs: Sequence[SigningJob], every: int = 10) -> list[SigningJob]:
    """The same jobs with every ``every``-th one's revocation flag flipped."""
    out = []
    for number, job in enumerate(jobs):
        if number % every:
            out.append(job)
            continue
        flag = not job.values["is_revoked"]
        raw = dict(job.values["raw"], isRevoked=flag)
        out.append(SigningJob(job.job_id, dict(job.values, is_revoked=flag, raw=raw)))
    return out


def run_signer_sync(passes: dict[str, list[SigningJob]], batch: int) -> dict[str, float]:
    out: dict[str, float] = {}
    with scratch_warehouse() as (_settings, engine):
        run_id = start_run(engine, "bench", "backfill", datetime.now(UTC))
        writer = JobWriter(engine, source="bench", run_id=run_id)
        for name, jobs in passes.items():
            start = time.perf_counter()
            for offset in range(0, len(jobs), batch):
                writer.write_jobs(jobs[offset : offset + batch])
            out[name] = time.perf_counter() - start
    return out


def as_rows(jobs: Sequence[SigningJob]) -> list[tuple[Any, ...]]:
    """Rows ready for COPY; ``raw`` serialised beforehand (not timed)."""
    return [
        tuple(
            job.job_id
            if name == "job_id"
            else json.dumps(job.values["raw"])
            if name == "raw"
            else job.values[name]
            for name in COLUMNS
        )
        for job in jobs
    ]


def run_copy(rows: dict[str, list[tuple[Any, ...]]]) -> dict[str, float]:
    out: dict[str, float] = {}
    columns = ", ".join(COLUMNS)
    set_clause = ", ".join(f"{c} = EXCLUDED.{c}" for c in LIST_COLUMNS)
    current = ", ".join(f"signing_jobs.{c}" for c in LIST_COLUMNS)
    incoming = ", ".join(f"EXCLUDED.{c}" for c in LIST_COLUMNS)
    with scratch_warehouse() as (settings, _engine):
        url = PG_URL.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(url) as conn:
            conn.execute(f'SET search_path TO "{settings.db_schema}"')
            conn.commit()
            for name, data in rows.items():
                now = datetime.now(UTC)
                start = time.perf_counter()
                with conn.transaction(), conn.cursor() as cur:
                    if name == "fresh":
                        statement = (
                            f"COPY signing_jobs ({columns}, first_seen_at, last_changed_at) "
                            "FROM STDIN"
                        )
                        with cur.copy(statement) as copy:
                            for row in data:
                                copy.write_row((*row, now, now))
                    else:
                        cur.execute("CREATE TEMP TABLE stage (LIKE signing_jobs) ON COMMIT DROP")
                        with cur.copy(f"COPY stage ({columns}) FROM STDIN") as copy:
                            for row in data:
                                copy.write_row(row)
                        cur.execute(
                            f"INSERT INTO signing_jobs ({columns}, first_seen_at, last_changed_at)"
                            f" SELECT {columns}, %(now)s, %(now)s FROM stage"
                            f" ON CONFLICT (job_id) DO UPDATE SET {set_clause},"
                            f" last_changed_at = EXCLUDED.last_changed_at"
                            f" WHERE ({current}) IS DISTINCT FROM ({incoming})",
                            {"now": now},
                        )
                out[name] = time.perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the raw measurements here")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.rounds = 10_000, 1
    logging.basicConfig(level=logging.WARNING)
    _, jobs = synthetic_jobs(args.rows)
    jobs = jobs[: args.rows]
    changed = changed_copy(jobs)
    passes = {"fresh": jobs, "update": changed, "unchanged": changed}
    copy_rows = {name: as_rows(data) for name, data in passes.items()}
    count = len(jobs)
    variants = ("copy", "ss1000", "ss5000")
    results: dict[str, list[dict[str, float]]] = defaultdict(list)
    for number in range(args.rounds):
        shift = number % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            if variant == "copy":
                results[variant].append(run_copy(copy_rows))
            else:
                results[variant].append(run_signer_sync(passes, int(variant[2:])))
        shown = {v: {p: f"{s:.2f}" for p, s in r[-1].items()} for v, r in results.items()}
        print(f"# round {number + 1}/{args.rounds}: seconds {shown}", flush=True)
    labels = {
        "copy": "plain COPY (fresh) / COPY + one INSERT..ON CONFLICT (update, unchanged)",
        "ss1000": "signer-sync JobWriter.write_jobs, batch 1000",
        "ss5000": "signer-sync JobWriter.write_jobs, batch 5000",
    }
    rows = []
    for variant in variants:
        for name in PASSES:
            secs = [r[name] for r in results[variant]]
            per_round = [
                ratio(c[name], r[name])
                for c, r in zip(results["copy"], results[variant], strict=True)
            ]
            rows.append(
                [
                    labels[variant],
                    name,
                    args.rounds,
                    f"{median(secs):.2f}",
                    f"{count / median(secs):,.0f}",
                    f"{median(per_round) * 100:.0f}%",
                ]
            )
    print()
    print(f"{count} rows, {args.rounds} rounds")
    print(
        fmt_table(
            [
                "variant",
                "pass",
                "rounds",
                "median s",
                "rows/s",
                "rows/s as % of COPY (median of per-round ratios)",
            ],
            rows,
        )
    )
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"rows": count, **results}, out, indent=1)


if __name__ == "__main__":
    main()
