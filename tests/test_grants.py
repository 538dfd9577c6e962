"""The read-only role: it logs in and reads every table and view of the warehouse, and
can change nothing - no INSERT, UPDATE, DELETE or TRUNCATE, no CREATE TABLE - now and for
tables created later. Roles are cluster-wide: each test uses its own and drops it."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from signer_sync.config import Settings, load_settings
from signer_sync.emulator.server import EmulatorServer
from signer_sync.errors import ConfigError
from signer_sync.warehouse.db import make_engine
from signer_sync.warehouse.grants import grant_readonly, scram_sha_256
from tests.conftest import PG_URL, Warehouse, make_sync

VIEWS = ("signing_jobs_expiring", "signing_jobs_daily")
TABLES = (
    "signing_jobs",
    "signing_job_events",
    "signing_profiles",
    "sync_runs",
    "sync_state",
    "rejected_records",
    "listing_seen",
)
PASSWORD = "it's a \\'quoted' %s $$ pass;word -- 7e1f"


@pytest.fixture
def admin() -> Iterator[Engine]:
    engine = create_engine(PG_URL)
    yield engine
    engine.dispose()


@pytest.fixture
def role(admin: Engine, pg_warehouse: Warehouse) -> Iterator[str]:
    """A role name unique to this test; the role, its grants and default privileges are
    dropped afterwards (before the warehouse schema is)."""
    name = f"ro_{uuid.uuid4().hex[:12]}"
    yield name
    _drop_role(admin, name)


def _drop_role(admin: Engine, name: str) -> None:
    with admin.begin() as connection:
        exists = connection.execute(
            text("SELECT 1 FROM pg_roles WHERE rolname = :name"), {"name": name}
        ).first()
        if exists:
            connection.execute(text(f'DROP OWNED BY "{name}"'))
            connection.execute(text(f'DROP ROLE "{name}"'))


def _as(wh: Warehouse, role: str, password: str = PASSWORD) -> tuple[Settings, Engine]:
    """Settings and an engine that connect as ``role`` (the local server trusts it)."""
    url = make_url(PG_URL).set(username=role, password=password)
    settings = load_settings(
        environ={
            "SIGNER_SYNC_DATABASE_URL": url.render_as_string(hide_password=False),
            "SIGNER_SYNC_DB_SCHEMA": wh.settings.db_schema,
        }
    )
    return settings, make_engine(settings, pool=False)


def _refused(engine: Engine, statement: str) -> None:
    """The statement fails for lack of privilege (and changes nothing)."""
    with pytest.raises(ProgrammingError) as caught, engine.begin() as connection:
        connection.execute(text(statement))
    assert isinstance(caught.value.orig, psycopg.errors.InsufficientPrivilege), caught.value


def _count(engine: Engine, relation: str) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text(f"SELECT count(*) FROM {relation}")).scalar_one())


def test_readonly_role_reads_everything_and_changes_nothing(
    pg_warehouse: Warehouse, emulator: EmulatorServer, role: str
) -> None:
    emulator.world.seed_organisation(150)
    make_sync(pg_warehouse, emulator).sync()
    owner = pg_warehouse.engine
    jobs = _count(owner, "signing_jobs")
    assert jobs > 100

    relations = grant_readonly(owner, pg_warehouse.settings, role, PASSWORD)

    assert set(TABLES) | set(VIEWS) <= set(relations)
    _, reader = _as(pg_warehouse, role)
    try:
        assert _count(reader, "signing_jobs") == jobs
        for relation in (*TABLES, *VIEWS):
            _count(reader, relation)  # SELECT works everywhere
        with reader.connect() as connection:
            expiring = connection.execute(
                text("SELECT job_id, days_left FROM signing_jobs_expiring LIMIT 5")
            ).all()
        assert expiring
        some_job = next(iter(_ids(owner)))
        _refused(reader, "INSERT INTO signing_jobs (job_id) VALUES ('forged')")
        _refused(reader, f"UPDATE signing_jobs SET status = 'Forged' WHERE job_id = '{some_job}'")
        _refused(reader, "DELETE FROM signing_jobs")
        _refused(reader, "TRUNCATE signing_job_events")
        _refused(reader, "UPDATE sync_state SET watermark = NULL")
        _refused(reader, "DELETE FROM sync_runs")
        _refused(reader, "INSERT INTO rejected_records (reason, rejected_at) VALUES ('x', now())")
        _refused(reader, "CREATE TABLE planted (x int)")  # search_path: the warehouse schema
        _refused(reader, f'CREATE TABLE "{pg_warehouse.settings.db_schema}".planted (x int)')
        _refused(reader, f'CREATE VIEW "{pg_warehouse.settings.db_schema}".planted AS SELECT 1')
        _refused(reader, "SELECT job_id FROM signing_jobs LIMIT 1 FOR UPDATE")
    finally:
        reader.dispose()
    assert _count(owner, "signing_jobs") == jobs
    with owner.connect() as connection:
        assert (
            connection.execute(
                text("SELECT count(*) FROM signing_jobs WHERE status = 'Forged'")
            ).scalar_one()
            == 0
        )


def _ids(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.execute(text("SELECT job_id FROM signing_jobs")).scalars())


def test_tables_created_later_are_readable_not_writable(pg_warehouse: Warehouse, role: str) -> None:
    grant_readonly(pg_warehouse.engine, pg_warehouse.settings, role, PASSWORD)
    with pg_warehouse.engine.begin() as connection:  # as a later migration would
        connection.execute(text("CREATE TABLE later_table (x int)"))
        connection.execute(text("INSERT INTO later_table VALUES (1), (2)"))
        connection.execute(text("CREATE VIEW later_view AS SELECT x FROM later_table"))
    _, reader = _as(pg_warehouse, role)
    try:
        assert _count(reader, "later_table") == 2
        assert _count(reader, "later_view") == 2
        _refused(reader, "INSERT INTO later_table VALUES (3)")
        _refused(reader, "DELETE FROM later_table")
    finally:
        reader.dispose()


def test_rerun_takes_back_write_privileges_granted_meanwhile(
    pg_warehouse: Warehouse, admin: Engine, role: str
) -> None:
    settings, engine = pg_warehouse.settings, pg_warehouse.engine
    schema = settings.db_schema
    grant_readonly(engine, settings, role, PASSWORD)
    with admin.begin() as connection:  # someone widens the role by hand
        connection.execute(
            text(f'GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"')
        )
        connection.execute(text(f'GRANT CREATE ON SCHEMA "{schema}" TO "{role}"'))
    _, reader = _as(pg_warehouse, role)
    try:
        with reader.begin() as connection:
            connection.execute(text("INSERT INTO listing_seen VALUES (1, 'widened')"))

        assert grant_readonly(engine, settings, role)  # no password: the login is kept

        _refused(reader, "INSERT INTO listing_seen VALUES (2, 'again')")
        _refused(reader, "DELETE FROM listing_seen")
        _refused(reader, "CREATE TABLE planted (x int)")
        assert _count(reader, "listing_seen") == 1
    finally:
        reader.dispose()
    with admin.connect() as connection:
        can_login = connection.execute(
            text("SELECT rolcanlogin FROM pg_roles WHERE rolname = :r"), {"r": role}
        ).scalar_one()
    assert can_login is True


def test_without_password_a_new_role_cannot_log_in_and_a_password_lets_it(
    pg_warehouse: Warehouse, admin: Engine, role: str
) -> None:
    grant_readonly(pg_warehouse.engine, pg_warehouse.settings, role)
    _, reader = _as(pg_warehouse, role)
    try:
        with pytest.raises(Exception, match="not permitted to log in"):
            _count(reader, "signing_jobs")
        grant_readonly(pg_warehouse.engine, pg_warehouse.settings, role, PASSWORD)
        assert _count(reader, "signing_jobs") == 0
    finally:
        reader.dispose()


def test_the_password_is_stored_as_a_scram_verifier_computed_like_the_server(
    pg_warehouse: Warehouse, admin: Engine, role: str
) -> None:
    """A printable ASCII password is sent pre-hashed (never in cleartext SQL); the
    verifier is exactly what PostgreSQL computes itself for that password and salt."""
    grant_readonly(pg_warehouse.engine, pg_warehouse.settings, role, PASSWORD)
    stored = _verifier(admin, role)
    assert stored.startswith("SCRAM-SHA-256$")
    iterations, salt = _salt(stored)
    assert scram_sha_256(PASSWORD, salt=salt, iterations=iterations) == stored

    # the same algorithm as the server's: let the server hash a password, then recompute
    server_hashed = f"ro_{uuid.uuid4().hex[:12]}"
    try:
        with admin.begin() as connection:
            connection.execute(text("SET LOCAL password_encryption = 'scram-sha-256'"))
            connection.execute(text(f"CREATE ROLE \"{server_hashed}\" PASSWORD 'Plain-7e1f pw!'"))
        by_server = _verifier(admin, server_hashed)
        iterations, salt = _salt(by_server)
        assert scram_sha_256("Plain-7e1f pw!", salt=salt, iterations=iterations) == by_server
    finally:
        _drop_role(admin, server_hashed)

    # a password that is not ASCII is left for the server to hash (SASLprep applies)
    grant_readonly(pg_warehouse.engine, pg_warehouse.settings, role, "pässwörd-ü 7e1f")
    again = _verifier(admin, role)
    assert again.startswith("SCRAM-SHA-256$") and again != stored


def _verifier(admin: Engine, role: str) -> str:
    with admin.connect() as connection:
        return str(
            connection.execute(
                text("SELECT rolpassword FROM pg_authid WHERE rolname = :r"), {"r": role}
            ).scalar_one()
        )


def _salt(verifier: str) -> tuple[int, bytes]:
    head = verifier.split("$")[1]
    iterations, salt = head.split(":")
    return int(iterations), base64.b64decode(salt)


def test_a_role_that_could_still_write_through_a_membership_is_refused(
    pg_warehouse: Warehouse, admin: Engine, role: str
) -> None:
    schema = pg_warehouse.settings.db_schema
    writer = f"rw_{uuid.uuid4().hex[:12]}"
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE ROLE "{writer}" NOLOGIN'))
            connection.execute(text(f'GRANT USAGE ON SCHEMA "{schema}" TO "{writer}"'))
            connection.execute(text(f'GRANT INSERT ON "{schema}".signing_jobs TO "{writer}"'))
            connection.execute(text(f'CREATE ROLE "{role}" NOLOGIN IN ROLE "{writer}"'))
        with pytest.raises(ConfigError, match="signing_jobs") as caught:
            grant_readonly(pg_warehouse.engine, pg_warehouse.settings, role, PASSWORD)
        assert "member" in str(caught.value)
        with admin.connect() as connection:  # one transaction: nothing was changed
            privileges = connection.execute(
                text(
                    "SELECT count(*) FROM information_schema.role_table_grants WHERE grantee = :r"
                ),
                {"r": role},
            ).scalar_one()
            login = connection.execute(
                text("SELECT rolcanlogin FROM pg_roles WHERE rolname = :r"), {"r": role}
            ).scalar_one()
        assert (privileges, login) == (0, False)
    finally:
        _drop_role(admin, role)
        _drop_role(admin, writer)


@pytest.mark.parametrize(
    "name",
    [
        "Robert'); DROP TABLE signing_jobs; --",
        'quoted"role',
        "UpperCase",
        "public",
        "current_user",
        "pg_monitor",
        "a" * 64,
        "",
        "9lives",
    ],
)
def test_role_names_outside_the_identifier_pattern_are_refused(
    pg_warehouse: Warehouse, name: str
) -> None:
    with pytest.raises(ConfigError, match="role"):
        grant_readonly(pg_warehouse.engine, pg_warehouse.settings, name, PASSWORD)


def test_the_connecting_user_and_superusers_are_refused_untouched(
    pg_warehouse: Warehouse, admin: Engine
) -> None:
    with admin.connect() as connection:
        me = connection.execute(text("SELECT current_user")).scalar_one()
        supers = list(
            connection.execute(text("SELECT rolname FROM pg_roles WHERE rolsuper")).scalars()
        )
    for name in {me, *supers}:
        if not name or not name.islower():
            continue
        with pytest.raises(ConfigError, match="role"):
            grant_readonly(pg_warehouse.engine, pg_warehouse.settings, name, PASSWORD)
    # the owner can still write: nothing was revoked from it
    with pg_warehouse.engine.begin() as connection:
        connection.execute(text("INSERT INTO listing_seen VALUES (1, 'still-mine')"))


def test_sqlite_and_a_bad_password_are_configuration_errors(
    tmp_path: Path, pg_warehouse: Warehouse, role: str
) -> None:
    settings = load_settings(environ={"SIGNER_SYNC_DATABASE_URL": f"sqlite:///{tmp_path}/w.db"})
    engine = make_engine(settings)
    try:
        with pytest.raises(ConfigError, match="PostgreSQL"):
            grant_readonly(engine, settings, role, PASSWORD)
    finally:
        engine.dispose()
    for bad in ("", "nul\x00inside"):
        with pytest.raises(ConfigError, match="password"):
            grant_readonly(pg_warehouse.engine, pg_warehouse.settings, role, bad)


def test_grant_readonly_command_reads_the_password_from_stdin(
    pg_warehouse: Warehouse, role: str
) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNER_SYNC_")}
    env.update(pg_warehouse.env)
    result = subprocess.run(
        [sys.executable, "-m", "signer_sync", "grant-readonly", role, "--login"],
        input=PASSWORD + "\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"role {role} can read" in result.stdout and "signing_jobs_expiring" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr
    _, engine = _as(pg_warehouse, role)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM signing_jobs")).scalar() == 0
        _refused(engine, "INSERT INTO signing_jobs (job_id) VALUES ('x')")
    finally:
        engine.dispose()
    sqlite = subprocess.run(
        [sys.executable, "-m", "signer_sync", "grant-readonly", role],
        env={**env, "SIGNER_SYNC_DATABASE_URL": "sqlite:///:memory:"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert sqlite.returncode == 2 and "PostgreSQL only" in sqlite.stderr
