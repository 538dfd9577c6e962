"""Secrets never leave the process: runs that fail on purpose, through the command line
as a user runs it, with distinctive secret values everywhere a secret can be configured
(AWS secret key and session token, the database password - also in its URL-encoded form -
and a source's external id in a TOML file). Their output (stdout and stderr, text and
JSON logs, with and without --debug) and what they store (sync_runs, rejected_records,
sync_state) must contain none of them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from signer_sync.emulator.server import EmulatorServer, Faults
from tests.conftest import PG_URL, Warehouse

# Each secret carries a hex core found nowhere else, so that a partial or re-escaped leak
# (JSON, URL encoding, repr) is caught as well as a verbatim one.
SECRET_KEY = "AWSSECRET-9f3c1e7a-never-print"
SESSION_TOKEN = "SESSIONTOKEN-5b2d8c4e-never-print"
DB_PASSWORD = "Pw#7Q!x/c0ffee42@db:never-print"
EXTERNAL_ID = "ExtId-3a9c77e1-never-print"
CORES = ("9f3c1e7a", "5b2d8c4e", "c0ffee42", "3a9c77e1")
SECRETS = (SECRET_KEY, SESSION_TOKEN, DB_PASSWORD, quote(DB_PASSWORD, safe=""), EXTERNAL_ID)

TEXT: tuple[str, ...] = ()
DEBUG: tuple[str, ...] = ("--debug",)
JSON: tuple[str, ...] = ("--log-format", "json")
DEBUG_JSON: tuple[str, ...] = ("--debug", "--log-format", "json")
ROLE_ARN = "arn:aws:iam::111111111111:role/SignerSyncRead"


def _url_with_password(url: str, user: str | None = None) -> str:
    """The test database's URL with DB_PASSWORD (URL-encoded) as the password, and
    optionally another user. The local server trusts its users: the password is unused."""
    parsed = make_url(url)
    return (
        f"{parsed.drivername}://{user or parsed.username}:{quote(DB_PASSWORD, safe='')}"
        f"@{parsed.host}:{parsed.port or 5432}/{parsed.database}"
    )


@dataclass
class Result:
    args: Sequence[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run(*args: str, env: dict[str, str], cwd: Path) -> Result:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNER_SYNC_", "AWS_"))}
    base.update(
        AWS_ACCESS_KEY_ID="AKIATESTTESTTESTTEST",
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_SESSION_TOKEN=SESSION_TOKEN,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE="/nonexistent/aws-config",
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent/aws-credentials",
    )
    base.update(env)
    done = subprocess.run(
        [sys.executable, "-m", "signer_sync", *args],
        env=base,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Result(args, done.returncode, done.stdout, done.stderr)


def run_modes(
    modes: Sequence[tuple[str, ...]], *args: str, env: dict[str, str], cwd: Path, parallel: bool
) -> list[Result]:
    """The same command under each of ``modes`` (log format, --debug); at once unless the
    runs would contend for a source's lock. Each run costs a Python start-up (~1.5 s)."""

    def one(mode: tuple[str, ...]) -> Result:
        return run(*mode, *args, env=env, cwd=cwd)

    if not parallel:
        return [one(mode) for mode in modes]
    with ThreadPoolExecutor(len(modes)) as pool:
        return list(pool.map(one, modes))


def assert_no_secret(where: str, value: str) -> None:
    for secret in (*SECRETS, *CORES):
        assert secret not in value, f"{secret!r} appears in {where}:\n{value[-3000:]}"


def assert_clean(results: Sequence[Result], *, code: int, says: str) -> None:
    for result in results:
        where = " ".join(result.args)
        assert result.returncode == code, f"{where}: exit {result.returncode}\n{result.stderr}"
        assert says in result.stderr, f"{where}: {says!r} not in\n{result.stderr}"
        assert_no_secret(f"the output of {where}", result.output)
        if "--debug" not in result.args:  # one line and a hint, never a traceback
            assert "Traceback" not in result.stderr, f"{where}:\n{result.stderr}"


def assert_tables_clean(engine_url: str, schema: str) -> int:
    """Every stored row of the run tables, as text, is free of secrets; returns how many."""
    from sqlalchemy import create_engine

    engine = create_engine(engine_url)
    rows = 0
    try:
        with engine.connect() as connection:
            for table in ("sync_runs", "rejected_records", "sync_state"):
                for (row,) in connection.execute(
                    text(f'SELECT row_to_json(t)::text FROM "{schema}".{table} AS t')
                ):
                    assert_no_secret(f"{schema}.{table}", row)
                    rows += 1
    finally:
        engine.dispose()
    return rows


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return tmp_path / "signer-sync.toml"


# -- the database ---------------------------------------------------------------------


def test_unreachable_database_with_a_password(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://signer:{quote(DB_PASSWORD, safe='')}@127.0.0.1:1/warehouse"
    env = {"SIGNER_SYNC_DATABASE_URL": url}
    results = run_modes((TEXT, DEBUG), "sync", env=env, cwd=tmp_path, parallel=True)
    assert_clean(results, code=2, says="127.0.0.1:1")
    assert not list(tmp_path.iterdir())  # nothing written


def test_real_server_refusing_a_user_with_a_password(tmp_path: Path) -> None:
    env = {"SIGNER_SYNC_DATABASE_URL": _url_with_password(PG_URL, user="no_such_signer_role")}
    results = [
        run(*JSON, "migrate", env=env, cwd=tmp_path),
        run(*DEBUG_JSON, "sync", env=env, cwd=tmp_path),
    ]
    assert_clean(results, code=2, says="no_such_signer_role")


def test_bad_config_files_and_variables_never_echo_a_secret(tmp_path: Path) -> None:
    """Refused settings are named, never shown: a TOML syntax error on the very line that
    holds a secret; secrets beside bad settings, in the wrong field, under an unknown key;
    a database URL with a password that does not parse."""
    unterminated = tmp_path / "unterminated.toml"
    unterminated.write_text(f'[[sources]]\nname = "p"\nexternal_id = "{EXTERNAL_ID}\n')
    misplaced = tmp_path / "misplaced.toml"
    misplaced.write_text(
        f'database_url = "{_url_with_password(PG_URL)}"\n'
        'db_schema = "x; drop table y"\n'
        "[[sources]]\n"
        'name = "prod"\n'
        f'external_id = "{EXTERNAL_ID}"\n'
        f'role_arn = "{EXTERNAL_ID}"\n'
        "requests_per_second = -1\n"
        f'mystery = "{EXTERNAL_ID}"\n'
    )
    bad_url = f"postgresql+psycopg://u:{quote(DB_PASSWORD, safe='')}@db:port/x"
    jobs: list[tuple[tuple[str, ...], dict[str, str], str]] = [
        ((*TEXT, "--config", str(unterminated)), {}, "not valid TOML"),
        ((*DEBUG_JSON, "--config", str(misplaced)), {}, "db_schema"),
        (DEBUG, {"SIGNER_SYNC_DATABASE_URL": bad_url}, "SIGNER_SYNC_DATABASE_URL"),
    ]
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(lambda job: run(*job[0], "sync", env=job[1], cwd=tmp_path), jobs))
    for (_, _, says), result in zip(jobs, results, strict=True):
        assert_clean([result], code=2, says=says)
    named = results[1].stderr
    for setting in ("role_arn", "requests_per_second", "mystery: unknown setting"):
        assert setting in named, named


# -- the API ------------------------------------------------------------------------------


def test_api_answering_errors_with_secrets_everywhere(
    pg_warehouse: Warehouse, emulator: EmulatorServer, tmp_path: Path, config_file: Path
) -> None:
    """A successful backfill, then failing syncs, of a source configured in a TOML file
    with an external id, over a database URL with a password (and the AWS secret key and
    session token in the environment): nothing printed or stored carries a secret."""
    emulator.world.seed_organisation(200)
    emulator.world.add_raw_item({"status": "Succeeded", "note": "no jobId: quarantined"})
    schema = pg_warehouse.settings.db_schema
    config_file.write_text(
        f'database_url = "{_url_with_password(PG_URL)}"\n'
        f'db_schema = "{schema}"\n'
        "aws_max_attempts = 2\n"
        "backfill_partitions = false\n"  # the raw item is served to plain listings only
        "[[sources]]\n"
        'name = "prod"\n'
        'region = "us-east-1"\n'
        f'external_id = "{EXTERNAL_ID}"\n'
        f'endpoint_url = "{emulator.url}"\n'
        "requests_per_second = 5000\n"
    )
    args = ("--config", str(config_file))

    first = run(*DEBUG_JSON, *args, "backfill", env={}, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "1 rejected" in first.stdout
    assert_no_secret("a successful backfill's output", first.output)

    emulator.faults = Faults(error_rate=1.0)
    modes = (TEXT, DEBUG_JSON)
    results = run_modes(modes, *args, "sync", env={}, cwd=tmp_path, parallel=False)
    assert_clean(results, code=1, says="InternalServiceErrorException")
    assert emulator.errors["InternalServiceErrorException"] >= 2 * len(modes)
    stored = assert_tables_clean(PG_URL, schema)
    assert stored >= 1 + len(modes) + 1 + 1  # runs, the rejected item, the watermark
    with pg_warehouse.engine.connect() as connection:
        failed = connection.execute(
            text("SELECT count(*) FROM sync_runs WHERE outcome = 'failed' AND error <> ''")
        ).scalar_one()
        rejected = connection.execute(text("SELECT count(*) FROM rejected_records")).scalar_one()
    assert (failed, rejected) == (len(modes), 1)


def _role_config(path: Path, database_url: str, schema: str, emulator: EmulatorServer) -> None:
    path.write_text(
        f'database_url = "{database_url}"\n'
        f'db_schema = "{schema}"\n'
        "[[sources]]\n"
        'name = "prod"\n'
        'region = "us-east-1"\n'
        f'role_arn = "{ROLE_ARN}"\n'
        f'external_id = "{EXTERNAL_ID}"\n'
        f'endpoint_url = "{emulator.url}"\n'
        "[[sources]]\n"
        'name = "dev"\n'
        'region = "us-east-1"\n'
        f'endpoint_url = "{emulator.url}"\n'
    )


#: STS is the emulator, which knows no AssumeRole: every AssumeRole fails.
STS_ENV = {"AWS_MAX_ATTEMPTS": "2"}


def test_role_that_cannot_be_assumed(
    pg_warehouse: Warehouse, emulator: EmulatorServer, tmp_path: Path, config_file: Path
) -> None:
    """One line that names the source and the role, never the external id or the
    credentials that signed the AssumeRole request."""
    _role_config(config_file, _url_with_password(PG_URL), pg_warehouse.settings.db_schema, emulator)
    env = dict(STS_ENV, AWS_ENDPOINT_URL_STS=emulator.url)
    args = ("--config", str(config_file), "sync", "--source", "prod")
    results = run_modes((JSON, DEBUG), *args, env=env, cwd=tmp_path, parallel=False)
    assert_clean(results, code=1, says=ROLE_ARN)
    for result in results:
        assert "'prod'" in result.stderr and "cannot assume" in result.stderr


def test_a_role_that_cannot_be_assumed_is_a_recorded_failed_run_and_others_still_run(
    pg_warehouse: Warehouse, emulator: EmulatorServer, tmp_path: Path, config_file: Path
) -> None:
    emulator.world.seed_organisation(50)
    _role_config(config_file, _url_with_password(PG_URL), pg_warehouse.settings.db_schema, emulator)
    env = dict(STS_ENV, AWS_ENDPOINT_URL_STS=emulator.url)
    result = run("--config", str(config_file), "sync", env=env, cwd=tmp_path)
    assert_no_secret("the output", result.output)
    assert "cannot assume" in result.stderr
    with pg_warehouse.engine.connect() as connection:
        outcomes = dict(connection.execute(text("SELECT source, outcome FROM sync_runs")).all())
    assert outcomes == {"prod": "failed", "dev": "succeeded"}, result.stderr
    assert result.returncode == 1
    assert "dev: backfill succeeded" in result.stdout
