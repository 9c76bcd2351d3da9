"""The login the mover works through in the default database: it may read, insert and
delete the archivable tables and what moves with them, set back the keys of linked rows,
and read the tables that hold rows back. Nothing else: no DDL, no other table.

Its password is derived from the default database's administrative password, as the
execute logins' are (multidb.execute_logins), so every archive replica and the CLI derive
the same one; it reaches the server only as a SCRAM verifier. Grants are renewed at the
start of every run, so a migration that adds a dependent table is covered by the next run.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets

import asyncpg

from multidb.execute_logins import ExecuteLogin
from multidb.scram import scram_sha256_verifier
from multidb.settings import DatabaseSettings
from multidb_archive.mover.keys import ModelKeys, quote

# Several moving rows at once at most: the mover, a CLI run refused by the lock, a status.
CONNECTION_LIMIT = 4


def derive_login(source: DatabaseSettings) -> ExecuteLogin:
    key = source.password.encode() or secrets.token_bytes(32)
    username = f"{source.database}_archiver"[:63]
    password = hmac.new(key, f"multidb-archiver:{username}".encode(), hashlib.sha256).hexdigest()
    return ExecuteLogin(username=username, password=password)


async def provision(
    conn: asyncpg.Connection, source: DatabaseSettings, plans: list[ModelKeys]
) -> ExecuteLogin:
    """Create or update the mover's login with ``conn`` (the default's administrative login)."""
    login = derive_login(source)
    name = quote(login.username)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('multidb-archiver-login'))")
        exists = await conn.fetchval("SELECT true FROM pg_roles WHERE rolname = $1", login.username)
        if not exists:
            with contextlib.suppress(asyncpg.DuplicateObjectError):
                await conn.execute(f"CREATE ROLE {name} LOGIN")
        verifier = scram_sha256_verifier(login.password)
        await conn.execute(
            f"ALTER ROLE {name} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
            f"NOBYPASSRLS INHERIT CONNECTION LIMIT {CONNECTION_LIMIT} PASSWORD '{verifier}'"
        )
        await conn.execute(
            f"GRANT USAGE ON SCHEMA {quote(await conn.fetchval('SELECT current_schema()'))} "
            f"TO {name}"
        )
        for plan in plans:
            for table in plan.tables:
                await conn.execute(f"GRANT SELECT, INSERT, DELETE ON {quote(table)} TO {name}")
            for table, columns in plan.link_columns.items():
                listed = ", ".join(quote(column) for column in sorted(columns))
                await conn.execute(f"GRANT SELECT, UPDATE ({listed}) ON {quote(table)} TO {name}")
            for table in plan.hold_tables:
                await conn.execute(f"GRANT SELECT ON {quote(table)} TO {name}")
    return login
