"""``signer-sync demo``: the whole product on its embedded defaults, without AWS.

Starts the emulator in-process with a synthetic organisation, migrates the configured
warehouse (the SQLite file ``signer-sync.db`` unless told otherwise), backfills it, and
answers three questions in plain SQL, showing the SQL.
"""

from __future__ import annotations

import boto3
from rich.console import Console
from rich.table import Table
from sqlalchemy import text

from signer_sync.config import Settings, SourceConfig
from signer_sync.emulator.server import EmulatorServer
from signer_sync.emulator.world import World
from signer_sync.source import SignerApi
from signer_sync.sync import SourceSync
from signer_sync.warehouse.db import describe_target, make_engine, migrate

#: Three questions people ask, in SQL that runs unchanged on PostgreSQL and SQLite.
QUESTIONS: dict[str, str] = {
    "Which signatures expire next (not revoked)?": """
SELECT profile_name, substr(job_id, 1, 8) AS job, signature_expires_at, days_left
FROM signing_jobs_expiring
LIMIT 5""",
    "What was revoked, when, and why?": """
SELECT substr(job_id, 1, 8) AS job, profile_name, revoked_at, revocation_reason
FROM signing_jobs
WHERE is_revoked
ORDER BY revoked_at DESC
LIMIT 5""",
    "How many jobs did each profile sign, by status?": """
SELECT profile_name, status, COUNT(*) AS jobs
FROM signing_jobs
GROUP BY profile_name, status
ORDER BY profile_name, status""",
}


def run_demo(settings: Settings, *, jobs: int, seed: int, console: Console) -> None:
    if not console.is_terminal:
        console = Console(soft_wrap=True, width=120)  # whole tables in logs and pipes
    world = World(seed)
    world.seed_organisation(jobs)
    with EmulatorServer(world) as server:
        console.print(
            f"[bold]1.[/] AWS Signer emulator on {server.url}: "
            f"{len(world.listed_jobs())} signing jobs, {len(world.profiles())} profile versions"
        )
        engine = make_engine(settings)
        migrate(engine, settings)
        console.print(f"[bold]2.[/] warehouse migrated: {describe_target(settings)}")
        source = SourceConfig(
            name="demo", region=world.region, endpoint_url=server.url, requests_per_second=1000
        )
        session = boto3.Session(
            aws_access_key_id="demo",
            aws_secret_access_key="demo",  # noqa: S106 - the emulator ignores credentials
            region_name=world.region,
        )
        api = SignerApi(source, settings, session=session)
        report = SourceSync(settings, source, engine, api=api).backfill()
        console.print(f"[bold]3.[/] backfill: {report.summary()}", highlight=False)
        report = SourceSync(settings, source, engine, api=api).sync()
        console.print(
            f"[bold]4.[/] incremental sync right after: {report.summary()}", highlight=False
        )
    console.print("[bold]5.[/] questions answered in plain SQL on the synced tables and views:\n")
    with engine.connect() as connection:
        for question, query in QUESTIONS.items():
            sql = query.strip()
            console.print(f"[bold cyan]{question}[/]")
            console.print(sql, style="dim", highlight=False)
            result = connection.execute(text(sql))
            table = Table(*result.keys())
            for row in result:
                table.add_row(*("" if value is None else str(value) for value in row))
            console.print(table)
    engine.dispose()
    console.print(
        "Explore it yourself: the tables signing_jobs, signing_job_events, signing_profiles, "
        "sync_runs and the views signing_jobs_expiring, signing_jobs_daily."
    )
