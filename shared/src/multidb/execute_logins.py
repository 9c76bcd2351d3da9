"""The low-privilege logins user SQL runs as: the database is the boundary, not a parser.

Per database, two login roles: ``<db>_reader`` (member of ``pg_read_all_data``, read-only
by default) and ``<db>_writer`` (``pg_read_all_data`` and ``pg_write_all_data``: DML, no
DDL). Neither is a superuser nor a member of ``pg_execute_server_program``,
``pg_read_server_files`` or ``pg_write_server_files``, so ``COPY ... PROGRAM``,
``pg_read_file`` or ``SET ROLE postgres`` fail whatever the statement. They are created by
the role's service at start-up with its configured (administrative) login; their
passwords are derived from that login's password, so every replica of a service derives
the same ones.
"""

from __future__ import annotations

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


async def _ensure_login(conn: asyncpg.Connection, login: ExecuteLogin, grants: tuple[str, ...]) -> None:
    name = _quote(login.username)
    exists = await conn.fetchval("SELECT true FROM pg_roles WHERE rolname = $1", login.username)
    if not exists:
        try:
            await conn.execute(f"CREATE ROLE {name} LOGIN")
        except asyncpg.DuplicateObjectError:
            pass  # another replica created it a moment ago
    # The password is hex we derived, so inlining it as a literal is safe.
    await conn.execute(
        f"ALTER ROLE {name} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
        f"NOBYPASSRLS INHERIT PASSWORD '{login.password}'"
    )
    for grant in grants:
        await conn.execute(f"GRANT {grant} TO {name}")


async def provision_execute_logins(conn: asyncpg.Connection, database: DatabaseSettings) -> ExecuteLogins:
    """Create or update the execute logins with ``conn`` (needs CREATEROLE); return them."""
    logins = derive_logins(database)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('multidb-execute-logins'))")
        await _ensure_login(conn, logins.reader, ("pg_read_all_data",))
        await conn.execute(
            f"ALTER ROLE {_quote(logins.reader.username)} SET default_transaction_read_only = on"
        )
        await _ensure_login(conn, logins.writer, ("pg_read_all_data", "pg_write_all_data"))
    return logins
