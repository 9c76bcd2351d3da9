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
the same ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets

import asyncpg
import msgspec

from multidb.settings import DatabaseSettings


class ExecuteLogin(msgspec.Struct, frozen=True, kw_only=True):
    username: str
    password: str


class ExecuteLogins(msgspec.Struct, frozen=True, kw_only=True):
    reader: ExecuteLogin
    writer: ExecuteLogin


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
    conn: asyncpg.Connection, login: ExecuteLogin, grants: tuple[str, ...]
) -> None:
    name = _quote(login.username)
    exists = await conn.fetchval("SELECT true FROM pg_roles WHERE rolname = $1", login.username)
    if not exists:
        # Another replica may create it a moment before us.
        with contextlib.suppress(asyncpg.DuplicateObjectError):
            await conn.execute(f"CREATE ROLE {name} LOGIN")
    # The password is hex we derived, so inlining it as a literal is safe.
    await conn.execute(
        f"ALTER ROLE {name} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
        f"NOBYPASSRLS INHERIT PASSWORD '{login.password}'"
    )
    for schema in await conn.fetch(SCHEMAS_SQL):
        for grant in grants:
            await conn.execute(grant.format(schema=_quote(schema["nspname"]), login=name))


async def provision_execute_logins(
    conn: asyncpg.Connection, database: DatabaseSettings
) -> ExecuteLogins:
    """Create or update the execute logins with ``conn`` (needs CREATEROLE); return them."""
    logins = derive_logins(database)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('multidb-execute-logins'))")
        await _ensure_login(conn, logins.reader, READER_GRANTS)
        await conn.execute(
            f"ALTER ROLE {_quote(logins.reader.username)} SET default_transaction_read_only = on"
        )
        await _ensure_login(conn, logins.writer, WRITER_GRANTS)
    return logins
