"""The low-privilege logins user SQL runs as: the database is the boundary, not a parser.

Per database, two login roles: ``<db>_reader`` (``SELECT`` on the tables of the database's
own schemas, read-only by default) and ``<db>_writer`` (plus ``INSERT``/``UPDATE``/``DELETE``
and sequences: DML, no DDL). Neither is a superuser nor a member of any predefined role:
not ``pg_execute_server_program``, ``pg_read_server_files`` or ``pg_write_server_files``,
so ``COPY ... PROGRAM``, ``pg_read_file`` or ``SET ROLE postgres`` fail whatever the
statement; and not ``pg_read_all_data`` either, which would expose ``pg_authid`` (the
password hashes). Grants are renewed at every start and default privileges cover the
tables the administrative login creates later (migrations). They are created by
the role's service at start-up with its configured (administrative) login; their
passwords are derived from that login's password, so every replica of a service derives
the same ones, and reach the server only as SCRAM-SHA-256 verifiers (``multidb.scram``).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import secrets
from collections.abc import Iterable

import asyncpg
import msgspec

from multidb.scram import scram_sha256_verifier
from multidb.settings import DatabaseSettings, Settings

log = logging.getLogger("multidb.execute_logins")


class ExecuteLogin(msgspec.Struct, frozen=True, kw_only=True):
    username: str
    password: str


class ExecuteLogins(msgspec.Struct, frozen=True, kw_only=True):
    reader: ExecuteLogin
    writer: ExecuteLogin


class LoginLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Role defaults of the execute logins: a floor beneath the per-transaction ``SET LOCAL``,
    so that no statement of theirs can take the server's disk, memory or connections."""

    statement_timeout_ms: int
    work_mem_kb: int
    temp_file_limit_kb: int
    idle_in_transaction_ms: int
    connection_limit: int

    @classmethod
    def from_settings(cls, settings: Settings) -> LoginLimits:
        return cls(
            statement_timeout_ms=settings.execute_timeout_ms,
            work_mem_kb=settings.execute_work_mem_kb,
            temp_file_limit_kb=settings.execute_temp_file_limit_kb,
            idle_in_transaction_ms=settings.execute_idle_in_transaction_ms,
            connection_limit=settings.execute_connection_limit,
        )

    def role_settings(self) -> dict[str, str]:
        return {
            "statement_timeout": f"{self.statement_timeout_ms}ms",
            "work_mem": f"{self.work_mem_kb}kB",
            "temp_file_limit": "-1"
            if self.temp_file_limit_kb < 0
            else f"{self.temp_file_limit_kb}kB",
            "idle_in_transaction_session_timeout": f"{self.idle_in_transaction_ms}ms",
            # A statement whose client went away stops at the next check, not at its end.
            "client_connection_check_interval": "1s",
        }


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def derive_logins(database: DatabaseSettings) -> ExecuteLogins:
    """Names and passwords of the execute logins for ``database``."""
    # With no admin password (trust auth) there is nothing secret to derive from.
    key = database.password.encode() or secrets.token_bytes(32)

    def login(kind: str) -> ExecuteLogin:
        username = f"{database.database}_{kind}"[:63]
        password = hmac.new(key, f"multidb-execute:{username}".encode(), hashlib.sha256).hexdigest()
        return ExecuteLogin(username=username, password=password)

    return ExecuteLogins(reader=login("reader"), writer=login("writer"))


SCHEMAS_SQL = """
SELECT nspname FROM pg_namespace
WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'
"""

MEMBERSHIPS_SQL = """
SELECT granted.rolname FROM pg_auth_members m
JOIN pg_roles granted ON granted.oid = m.roleid
JOIN pg_roles member ON member.oid = m.member
WHERE member.rolname = $1
"""

READER_GRANTS = (
    "GRANT USAGE ON SCHEMA {schema} TO {login}",
    "GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {login}",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO {login}",
)
WRITER_GRANTS = (
    *READER_GRANTS,
    "GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {login}",
    "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {schema} TO {login}",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT INSERT, UPDATE, DELETE ON TABLES TO {login}",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT USAGE, SELECT, UPDATE ON SEQUENCES"
    " TO {login}",
)


async def _ensure_login(
    conn: asyncpg.Connection,
    login: ExecuteLogin,
    grants: tuple[str, ...],
    limits: LoginLimits,
) -> None:
    name = _quote(login.username)
    exists = await conn.fetchval("SELECT true FROM pg_roles WHERE rolname = $1", login.username)
    if not exists:
        # Another replica may create it a moment before us.
        with contextlib.suppress(asyncpg.DuplicateObjectError):
            await conn.execute(f"CREATE ROLE {name} LOGIN")
    # The password travels as a SCRAM verifier made here (as psql's \password does): the
    # statement, which a server may log (log_statement) or keep (pg_stat_statements),
    # never holds it. The verifier is base64, '$', ':' and digits, the limit an int: both
    # are safe to inline.
    verifier = scram_sha256_verifier(login.password)
    await conn.execute(
        f"ALTER ROLE {name} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
        f"NOBYPASSRLS INHERIT CONNECTION LIMIT {int(limits.connection_limit)} "
        f"PASSWORD '{verifier}'"
    )
    # A membership granted by hand (pg_read_server_files, a superuser's role...) would hand
    # the login what it must never have: take every one back.
    for granted in await conn.fetch(MEMBERSHIPS_SQL, login.username):
        role = granted["rolname"]
        await _if_allowed(conn, f"REVOKE {_quote(role)} FROM {name}", f"revoke {role} from")
    for parameter, value in limits.role_settings().items():
        # temp_file_limit is a superuser setting: without one, say so rather than fail.
        statement = f"ALTER ROLE {name} SET {parameter} = '{value}'"
        await _if_allowed(conn, statement, f"set {parameter} for")
    for schema in await conn.fetch(SCHEMAS_SQL):
        for grant in grants:
            await conn.execute(grant.format(schema=_quote(schema["nspname"]), login=name))


async def _if_allowed(conn: asyncpg.Connection, statement: str, what: str) -> None:
    """Run ``statement``; when the configured login may not, warn and carry on."""
    try:
        async with conn.transaction():  # a savepoint: one refusal keeps the rest
            await conn.execute(statement)
    except asyncpg.InsufficientPrivilegeError:
        log.warning("cannot %s an execute login: the configured login lacks the privilege", what)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def revoke_system_tables_sql(logins: ExecuteLogins, tables: Iterable[str]) -> str:
    """One statement taking every privilege on ``tables`` from the execute logins.

    The schema-wide grants and default privileges above cover every table, the system's
    own included; this takes those back. A table or login that does not exist (yet) is
    skipped, so it runs after every provisioning and after every migration alike.
    """
    table_array = ", ".join(_literal(table) for table in tables)
    login_array = ", ".join(_literal(login.username) for login in (logins.reader, logins.writer))
    return f"""
DO $multidb$
DECLARE tbl text; login text;
BEGIN
  FOREACH tbl IN ARRAY ARRAY[{table_array}]::text[] LOOP
    FOREACH login IN ARRAY ARRAY[{login_array}]::text[] LOOP
      IF to_regclass(tbl) IS NOT NULL
         AND EXISTS (SELECT FROM pg_roles WHERE rolname = login) THEN
        EXECUTE format('REVOKE ALL ON TABLE %s FROM %I', to_regclass(tbl), login);
      END IF;
    END LOOP;
  END LOOP;
END $multidb$
"""


async def provision_execute_logins(
    conn: asyncpg.Connection,
    database: DatabaseSettings,
    limits: LoginLimits,
    system_tables: Iterable[str],
) -> ExecuteLogins:
    """Create or update the execute logins with ``conn`` (needs CREATEROLE); return them.

    ``system_tables`` are kept out of their reach (see :func:`revoke_system_tables_sql`).
    """
    logins = derive_logins(database)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('multidb-execute-logins'))")
        await _ensure_login(conn, logins.reader, READER_GRANTS, limits)
        await conn.execute(
            f"ALTER ROLE {_quote(logins.reader.username)} SET default_transaction_read_only = on"
        )
        await _ensure_login(conn, logins.writer, WRITER_GRANTS, limits)
        await conn.execute(revoke_system_tables_sql(logins, system_tables))
    return logins
