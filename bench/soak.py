"""Soak: the daemon runs for a while against the emulator with faults switched on and
off, while the emulated account keeps changing; then faults stop, one last sync runs,
and the warehouse is compared with the API's truth.

Reports runs, failed runs recovered, the daemon's memory and its database connections at
start and end, and rows lost (must be 0). Not a timed test: a benchmark-style script.

    python -m bench.soak                 # 10 minutes
    python -m bench.soak --minutes 2     # a shorter look
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from itertools import pairwise
from pathlib import Path

from sqlalchemy import func, select, text

from bench.common import scratch_warehouse
from signer_sync.emulator.server import EmulatorServer, Faults
from signer_sync.emulator.world import World
from signer_sync.warehouse.schema import signing_jobs, sync_runs

AWS = {
    "AWS_ACCESS_KEY_ID": "AKIASOAKSOAKSOAKSOAK",
    "AWS_SECRET_ACCESS_KEY": "soak-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
FAULT_PHASES = [
    ("calm", Faults()),
    ("throttling storm", Faults(throttle_rate=0.5, seed=1)),
    ("5xx burst", Faults(error_rate=0.3, seed=2)),
    ("slow API", Faults(latency_ms=150)),
    ("API down", Faults(error_rate=1.0, seed=3)),
    ("resets", Faults(reset_next=5, truncate_next=3, invalid_json_next=3)),
]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _connections(engine: object) -> int:
    with engine.connect() as connection:  # type: ignore[attr-defined]
        return int(
            connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'signer-sync' "
                    "AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        )


def _restart_postgres() -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        capture_output=True,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--phase-seconds", type=float, default=30.0)
    parser.add_argument(
        "--restart-postgres",
        action="store_true",
        help="restart the local PostgreSQL cluster once per cycle of phases (disturbs every "
        "other user of the server: run alone)",
    )
    args = parser.parse_args()
    rng = random.Random(7)
    world = World(seed=5)
    world.seed_organisation(args.jobs)
    with scratch_warehouse() as (settings, engine), EmulatorServer(world) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNER_SYNC_", "AWS_"))}
        env.update(AWS)
        env.update(
            SIGNER_SYNC_DATABASE_URL=settings.database_url.get_secret_value(),
            SIGNER_SYNC_DB_SCHEMA=settings.db_schema,
            SIGNER_SYNC_ENDPOINT_URL=server.url,
            SIGNER_SYNC_REGION=world.region,
            SIGNER_SYNC_INTERVAL="3s",
            SIGNER_SYNC_BACKFILL_CRON="*/2 * * * *",
            SIGNER_SYNC_HTTP_ADDR=f"127.0.0.1:{_free_port()}",
            SIGNER_SYNC_AWS_MAX_ATTEMPTS="3",
            SIGNER_SYNC_AWS_READ_TIMEOUT="5",
            SIGNER_SYNC_REQUESTS_PER_SECOND="500",
            SIGNER_SYNC_LOG_LEVEL="WARNING",
        )
        daemon = subprocess.Popen(
            [sys.executable, "-m", "signer_sync", "run"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(8)  # start-up and the first backfill
        start_rss, start_connections = _rss_mb(daemon.pid), _connections(engine)
        deadline = time.monotonic() + args.minutes * 60
        phase = 0
        changes = 0
        restarts = 0
        while time.monotonic() < deadline:
            name, faults = FAULT_PHASES[phase % len(FAULT_PHASES)]
            server.faults = faults
            print(f"{time.strftime('%H:%M:%S')} phase: {name}", flush=True)
            if args.restart_postgres and phase % len(FAULT_PHASES) == 0 and phase:
                print(f"{time.strftime('%H:%M:%S')} restarting PostgreSQL", flush=True)
                _restart_postgres()
                restarts += 1
            phase_end = min(deadline, time.monotonic() + args.phase_seconds)
            while time.monotonic() < phase_end:
                since = world.now - timedelta(seconds=2)
                world.add_random_jobs(rng.randint(1, 20), since=since)
                listed = world.listed_jobs()
                running = [j for j in listed if j.status == "InProgress"]
                for job in running[:2]:
                    world.complete_job(job.job_id)
                fresh = [j for j in listed if j.status == "Succeeded" and not j.is_revoked]
                world.revoke_job(rng.choice(fresh).job_id)
                changes += 1
                time.sleep(1)
            phase += 1
        server.faults = Faults()
        end_rss, end_connections = _rss_mb(daemon.pid), _connections(engine)
        time.sleep(12)  # a few calm runs to converge
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=30)
        truth = {job.job_id: job for job in world.listed_jobs()}
        with engine.connect() as connection:
            rows = {
                row.job_id: row
                for row in connection.execute(
                    select(signing_jobs.c.job_id, signing_jobs.c.status, signing_jobs.c.is_revoked)
                )
            }
            outcomes = dict(
                connection.execute(
                    select(sync_runs.c.outcome, func.count()).group_by(sync_runs.c.outcome)
                ).all()
            )
            ordered = [
                row.outcome
                for row in connection.execute(
                    select(sync_runs.c.outcome).order_by(sync_runs.c.run_id)
                )
            ]
        lost = [job_id for job_id in truth if job_id not in rows]
        stale = [
            job_id
            for job_id, job in truth.items()
            if job_id in rows
            and (rows[job_id].status, rows[job_id].is_revoked) != (job.status, job.is_revoked)
        ]
        recovered = sum(
            1 for before, after in pairwise(ordered) if before == "failed" and after == "succeeded"
        )
        print()
        print(f"duration           {args.minutes:.1f} min, {phase} fault phases")
        print(f"account changes    {changes} rounds (new jobs, completions, revocations)")
        print(f"postgres restarts  {restarts}")
        print(f"runs               {sum(outcomes.values())} {outcomes}")
        print(f"failures recovered {recovered}")
        print(f"daemon RSS         {start_rss:.0f} MB at start, {end_rss:.0f} MB at end")
        print(f"db connections     {start_connections} at start, {end_connections} at end")
        print(f"jobs in the API    {len(truth)}")
        print(f"rows lost          {len(lost)}")
        print(f"rows stale         {len(stale)}")
        print(f"daemon exit code   {code} after SIGTERM")


if __name__ == "__main__":
    main()
