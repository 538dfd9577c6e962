"""A read-only PostgreSQL role for the people who query the warehouse.

``grant_readonly`` gives a role exactly this: USAGE on the warehouse schema and SELECT on
every table and view in it, now and (through default privileges) on tables created later
by the user that runs the migrations. Everything else the role held there is revoked: no
INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES or TRIGGER, no CREATE in the schema. The
result is checked with ``has_table_privilege`` before it is committed, so a role that could
still write through a membership or an ownership is refused, not silently "granted".

All SQL is composed with psycopg's ``sql`` module: the schema and role are validated
identifiers quoted as identifiers, and a password travels only as a literal - pre-hashed
to a SCRAM-SHA-256 verifier when it is printable ASCII, so that the cleartext appears in no
statement, server log or ``pg_stat_statements``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Any, cast

import psycopg
from psycopg import sql
from sqlalchemy import Engine

from signer_sync.config import IDENTIFIER_RE, Settings
from signer_sync.errors import ConfigError, SchemaOutOfDate
from signer_sync.warehouse.db import translate_errors

#: Role names PostgreSQL reserves, or that mean something else where a role is expected.
_RESERVED_ROLES = frozenset(
    {"public", "none", "all", "current_user", "session_user", "current_role"}
)
#: What a read-only role must not hold on any relation of the schema.
_WRITE_PRIVILEGES = "INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER"
SCRAM_ITERATIONS = 4096


def grant_readonly(
    engine: Engine, settings: Settings, role: str, password: str | None = None
) -> list[str]:
    """Create or update ``role`` so that it can read the warehouse and change nothing.

    A missing role is created NOLOGIN, or LOGIN with ``password``; an existing role gets
    LOGIN and the new password when one is given, and keeps its login otherwise. Returns
    the relations (tables and views) the role can now read, sorted.

    Raises :class:`ConfigError` on SQLite, for a role name that is not a plain lower-case
    identifier (or is reserved, a superuser, or the user signer-sync connects as), when the
    connecting user may not create roles, and when the role would still be able to write.
    Nothing is changed unless everything succeeds (one transaction).
    """
    if settings.is_sqlite or engine.dialect.name != "postgresql":
        raise ConfigError(
            "grant-readonly: roles and grants exist on PostgreSQL only",
            hint="a SQLite warehouse is made read-only with file permissions",
        )
    if not IDENTIFIER_RE.match(role) or role in _RESERVED_ROLES or role.startswith("pg_"):
        raise ConfigError(
            f"role: {role!r} is not a usable role name: lower-case letters, digits and '_', "
            "starting with a letter or '_', at most 63 characters, not reserved"
        )
    if password is not None and (password == "" or "\x00" in password):
        raise ConfigError("password: must be non-empty text without NUL characters")
    schema = settings.db_schema
    with translate_errors(settings), engine.begin() as connection:
        raw = cast(psycopg.Connection[Any], connection.connection.driver_connection)
        with raw.cursor() as cursor:
            try:
                return _grant(cursor, schema, role, password)
            except psycopg.errors.InsufficientPrivilege as exc:
                raise ConfigError(
                    f"grant-readonly: the database user may not do this: "
                    f"{exc.diag.message_primary or type(exc).__name__}",
                    hint="run it as the user that owns the schema, with CREATEROLE (or "
                    "create the role beforehand)",
                ) from None


def _grant(cursor: psycopg.Cursor[Any], schema: str, role: str, password: str | None) -> list[str]:
    cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
    if cursor.fetchone() is None:
        raise SchemaOutOfDate(f'the warehouse has no schema "{schema}" yet')
    cursor.execute("SELECT current_user")
    current = cast(tuple[str], cursor.fetchone())[0]
    if role == current:
        raise ConfigError(f"role: {role!r} is the user signer-sync connects as; choose another")
    cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,))
    found = cursor.fetchone()
    if found is not None and found[0]:
        raise ConfigError(
            f"role: {role!r} is a superuser, which no grant can make read-only; choose another"
        )

    name = sql.Identifier(role)
    space = sql.Identifier(schema)
    login = (
        sql.SQL("LOGIN PASSWORD {}").format(sql.Literal(_password_for_server(password)))
        if password is not None
        else None
    )
    if found is None:
        cursor.execute(
            sql.SQL(
                "CREATE ROLE {} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION INHERIT {}"
            ).format(name, login if login is not None else sql.SQL("NOLOGIN"))
        )
    elif login is not None:
        cursor.execute(sql.SQL("ALTER ROLE {} {}").format(name, login))

    statements = [
        # first take everything away, then give back exactly USAGE and SELECT
        "REVOKE ALL ON ALL TABLES IN SCHEMA {space} FROM {name}",
        "REVOKE ALL ON ALL SEQUENCES IN SCHEMA {space} FROM {name}",
        "REVOKE ALL ON ALL ROUTINES IN SCHEMA {space} FROM {name}",
        "REVOKE ALL ON SCHEMA {space} FROM {name}",
        "GRANT USAGE ON SCHEMA {space} TO {name}",
        "GRANT SELECT ON ALL TABLES IN SCHEMA {space} TO {name}",  # views included
        # tables the migrating user (this user) creates later
        "ALTER DEFAULT PRIVILEGES IN SCHEMA {space} REVOKE ALL ON TABLES FROM {name}",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA {space} REVOKE ALL ON SEQUENCES FROM {name}",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA {space} REVOKE ALL ON ROUTINES FROM {name}",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA {space} GRANT SELECT ON TABLES TO {name}",
    ]
    for statement in statements:
        cursor.execute(sql.SQL(statement).format(space=space, name=name))

    # Check the outcome as PostgreSQL sees it: memberships, ownership and PUBLIC count.
    cursor.execute(
        "SELECT c.relname, has_table_privilege(%(role)s, c.oid, 'SELECT'), "
        "has_table_privilege(%(role)s, c.oid, %(write)s) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p', 'v', 'm', 'f') "
        "ORDER BY c.relname",
        {"role": role, "schema": schema, "write": _WRITE_PRIVILEGES},
    )
    relations = cursor.fetchall()
    writable = [relation for relation, _, write in relations if write]
    unreadable = [relation for relation, read, _ in relations if not read]
    cursor.execute("SELECT has_schema_privilege(%s, %s, 'CREATE')", (role, schema))
    creates = bool(cast(tuple[bool], cursor.fetchone())[0])
    if writable or creates:
        what = ", ".join(writable) + (" (and CREATE in the schema)" if creates else "")
        raise ConfigError(
            f"role: {role!r} could still change {what} after the grants, through a role "
            "it is a member of, an ownership or a grant to PUBLIC; nothing was changed",
            hint=f"revoke that membership or ownership, or choose another role than {role!r}",
        )
    if unreadable:
        raise ConfigError(f"role: {role!r} cannot read {', '.join(unreadable)} after the grants")
    return [relation for relation, _, _ in relations]


def _password_for_server(password: str) -> str:
    """What goes into ``PASSWORD '...'``: a SCRAM-SHA-256 verifier when the password is
    printable ASCII (where SASLprep changes nothing, so the verifier is exactly what the
    server would compute), else the password itself for the server to hash."""
    if password.isascii() and password.isprintable():
        return scram_sha_256(password)
    return password


def scram_sha_256(
    password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS
) -> str:
    """A PostgreSQL SCRAM-SHA-256 password verifier (RFC 5802, RFC 7677), as ``psql``'s
    ``\\password`` sends it: ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>``."""
    salt = os.urandom(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"
