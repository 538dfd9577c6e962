"""Command line: ``signer-sync migrate | backfill | sync | demo | emulator | ...``.

Exit codes: 0 success, 1 a sync failed, 2 bad usage or configuration. Errors are one
line plus a hint; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from signer_sync import __version__
from signer_sync.config import Settings, load_settings
from signer_sync.errors import ConfigError, SignerSyncError, SourceBusy, SyncFailed
from signer_sync.logs import (
    configure_logging,
    get_logger,
    register_environment_secrets,
    register_secrets,
)
from signer_sync.sync import RunReport, SourceSync
from signer_sync.warehouse.db import describe_target, make_engine, migrate, open_warehouse

app = typer.Typer(
    name="signer-sync",
    help="Keep a complete, current and permanent inventory of AWS Signer signing jobs in SQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)
log = get_logger("signer_sync.cli")


@dataclass
class Globals:
    config: Path | None
    debug: bool
    log_format: str | None

    def settings(self, **overrides: Any) -> Settings:
        settings = load_settings(self.config, **overrides)
        register_secrets(_secret_values(settings))
        configure_logging(
            self.log_format or settings.log_format, "DEBUG" if self.debug else settings.log_level
        )
        return settings


def _secret_values(settings: Settings) -> list[str | None]:
    values: list[str | None] = [settings.url.password and str(settings.url.password)]
    for source in settings.source_configs():
        if source.external_id is not None:
            values.append(source.external_id.get_secret_value())
    return values


def _version(value: bool) -> None:
    if value:
        out.print(f"signer-sync {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", envvar="SIGNER_SYNC_CONFIG", help="TOML configuration file."
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Debug logs and tracebacks.")] = False,
    log_format: Annotated[
        str | None,
        typer.Option(
            "--log-format", help="text or json (default: SIGNER_SYNC_LOG_FORMAT or text)."
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    if log_format not in (None, "text", "json"):
        raise typer.BadParameter("must be text or json", param_hint="--log-format")
    register_environment_secrets()
    configure_logging(log_format or "text", "DEBUG" if debug else "WARNING")
    ctx.obj = Globals(config=config, debug=debug, log_format=log_format)


SourceOption = Annotated[
    str | None, typer.Option("--source", "-s", help="Only this source (default: every source).")
]


@app.command("migrate")
def migrate_command(ctx: typer.Context) -> None:
    """Create or upgrade the warehouse schema to the newest revision."""
    settings = ctx.obj.settings()
    engine = make_engine(settings, pool=False)
    migrate(engine, settings)
    out.print(f"warehouse is up to date ({describe_target(settings)})")


@app.command("backfill")
def backfill_command(ctx: typer.Context, source: SourceOption = None) -> None:
    """List every job of each source, upsert them all, and mark what the API forgot."""
    _run_sources(ctx.obj.settings(), source, "backfill")


@app.command("sync")
def sync_command(ctx: typer.Context, source: SourceOption = None) -> None:
    """One incremental run for each source (a backfill the first time), then exit."""
    _run_sources(ctx.obj.settings(), source, "sync")


def _run_sources(settings: Settings, name: str | None, kind: str) -> None:
    sources = settings.select_sources(name)
    engine = open_warehouse(settings)
    failed = 0
    for source in sources:
        try:
            with _progress(source.name) as progress:
                runner = SourceSync(settings, source, engine, progress=progress)
                report = runner.backfill() if kind == "backfill" else runner.sync()
        except SourceBusy as exc:
            err.print(f"[yellow]skipped[/]: {escape(str(exc))}", highlight=False)
            continue
        except SyncFailed as exc:
            failed += 1
            err.print(f"[red]error[/]: {escape(str(exc))}", highlight=False)
            continue
        _report(report)
    engine.dispose()
    if failed:
        raise typer.Exit(1)


def _report(report: RunReport) -> None:
    out.print(report.summary(), highlight=False)
    log.info("run finished", **_figures(report))


def _figures(report: RunReport) -> dict[str, Any]:
    stats = report.stats
    return {
        "source": report.source,
        "kind": report.kind,
        "outcome": report.outcome,
        "run_id": report.run_id,
        "inserted": stats.inserted,
        "updated": stats.updated,
        "unchanged": stats.unchanged,
        "rejected": stats.rejected,
        "removed": stats.removed,
        "api_calls": sum(report.figures.api_calls.values()),
        "pages": report.figures.pages,
        "seconds": round(report.seconds, 3),
    }


@contextmanager
def _progress(source: str) -> Iterator[Callable[[int, int], None] | None]:
    """A live line on a terminal; nothing when output is not a TTY."""
    if not err.is_terminal:
        yield None
        return
    columns = (
        TextColumn(f"[bold]{source}[/]"),
        BarColumn(bar_width=None),
        TextColumn(
            "{task.fields[pages]} pages, {task.fields[jobs]} jobs, {task.fields[rate]} jobs/s"
        ),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("sync", total=None, pages=0, jobs=0, rate=0)

        def update(pages: int, jobs: int) -> None:
            elapsed = bar.tasks[0].elapsed or 1e-9
            bar.update(task, pages=pages, jobs=jobs, rate=int(jobs / elapsed))

        yield update


@app.command("demo")
def demo_command(
    ctx: typer.Context,
    jobs: Annotated[
        int, typer.Option(min=1, max=200_000, help="Jobs in the synthetic organisation.")
    ] = 3000,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic organisation.")] = 1,
) -> None:
    """Zero-setup tour: an emulated AWS Signer, a migrated warehouse, a backfill, answers."""
    from signer_sync.demo import run_demo

    run_demo(ctx.obj.settings(), jobs=jobs, seed=seed, console=out)


@app.command("emulator")
def emulator_command(
    port: Annotated[int, typer.Option(min=0, max=65535)] = 4566,
    host: Annotated[
        str, typer.Option(help="Address to bind (loopback unless told otherwise).")
    ] = "127.0.0.1",
    jobs: Annotated[int, typer.Option(min=0, max=2_000_000)] = 5000,
    seed: Annotated[int, typer.Option()] = 1,
    latency_ms: Annotated[float, typer.Option(min=0)] = 0.0,
    throttle_rate: Annotated[float, typer.Option(min=0, max=1)] = 0.0,
    error_rate: Annotated[float, typer.Option(min=0, max=1)] = 0.0,
) -> None:
    """Run the local AWS Signer API emulator with a synthetic organisation."""
    from signer_sync.emulator.cli import serve

    serve(
        port=port,
        host=host,
        jobs=jobs,
        seed=seed,
        latency_ms=latency_ms,
        throttle_rate=throttle_rate,
        error_rate=error_rate,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: one clear line instead of a traceback, and the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        # Without standalone mode an Exit raised by a command comes back as its code.
        code = app(args=args, prog_name="signer-sync", standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors: unknown option, bad value, ...
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            err.print(f"error: {escape(exc.format_message())}", highlight=False)
        sys.exit(2)
    except SignerSyncError as exc:
        if debug:
            traceback.print_exc()
        err.print(f"[red]error[/]: {escape(str(exc))}", highlight=False)
        if exc.hint:
            err.print(f"hint: {exc.hint}", highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


# -- the daemon and its status (appended: issue 4) ---------------------------------------


@app.command("run")
def run_command(ctx: typer.Context, source: SourceOption = None) -> None:
    """Run as a daemon: an incremental sync of each source every interval (one at start),
    a backfill on the cron schedule, /metrics and /healthz on SIGNER_SYNC_HTTP_ADDR.

    Failures are retried with back-off; SIGTERM or SIGINT stops within ten seconds."""
    from signer_sync.daemon import run_daemon

    settings = ctx.obj.settings()
    code = run_daemon(settings, settings.select_sources(source))
    if code:
        raise typer.Exit(code)


@app.command("status")
def status_command(
    ctx: typer.Context,
    source: SourceOption = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Machine-readable JSON on stdout.")
    ] = False,
) -> None:
    """Per source: last run, watermark, lag and rows; warehouse totals.

    Exits 1 when a source has no successful run within three intervals (or never synced)."""
    import json

    from signer_sync.status import collect_status, render_text

    settings = ctx.obj.settings()
    sources = settings.select_sources(source)
    engine = open_warehouse(settings, pool=False)
    try:
        report = collect_status(engine, settings, sources)
    finally:
        engine.dispose()
    if json_output:
        sys.stdout.write(json.dumps(report.to_json(), indent=2) + "\n")
    else:
        render_text(report, out)
    if not report.healthy:
        raise typer.Exit(1)


@app.command("grant-readonly")
def grant_readonly_command(
    ctx: typer.Context,
    role: Annotated[str, typer.Argument(help="The PostgreSQL role to create or update.")],
    login: Annotated[
        bool,
        typer.Option(
            "--login",
            help="Let the role log in: asks for its password (hidden), or reads it from "
            "standard input when that is not a terminal.",
        ),
    ] = False,
) -> None:
    """Create or update a PostgreSQL role that can read the synced tables and views and
    nothing else, for analysts and BI tools."""
    from signer_sync.warehouse.grants import grant_readonly

    settings = ctx.obj.settings()
    if settings.is_sqlite:
        raise ConfigError(
            "grant-readonly: roles exist on PostgreSQL only; a SQLite warehouse is a file "
            "(give readers a copy, or open it read-only)"
        )
    password: str | None = None
    if login:
        if sys.stdin.isatty():
            password = typer.prompt(
                f"password for {role}", hide_input=True, confirmation_prompt=True
            )
        else:
            password = sys.stdin.readline().rstrip("\n")
        register_secrets([password])
    engine = open_warehouse(settings)
    try:
        readable = grant_readonly(engine, settings, role, password)
    finally:
        engine.dispose()
    out.print(f"role {role} can read {len(readable)} tables and views: {', '.join(readable)}")
