"""The execute logins' passwords reach PostgreSQL only as SCRAM verifiers made client-side.

On a throw-away cluster whose statement log this test reads: every statement the
provisioning sends is logged (``log_statement = all``), and neither login's password
appears in the log, while the logins connect with them.
"""

from __future__ import annotations

import asyncpg
import pytest

from multidb.execute_logins import LoginLimits, derive_logins, provision_execute_logins
from multidb.roles import RoleSpec
from multidb_devstack.embedded import EmbeddedPostgres

LIMITS = LoginLimits(
    statement_timeout_ms=1000,
    work_mem_kb=4096,
    temp_file_limit_kb=1024,
    idle_in_transaction_ms=1000,
    connection_limit=5,
)


async def test_passwords_are_sent_as_scram_verifiers_and_never_logged(
    spare_cluster: EmbeddedPostgres, roles: dict[str, RoleSpec]
) -> None:
    database = spare_cluster.database_settings(roles["archive"])
    logins = derive_logins(database)
    server_log = spare_cluster.pgdata / "server.log"
    conn = await database.connect()
    try:
        await conn.execute("SET log_statement = 'all'")  # this session: every statement
        await provision_execute_logins(conn, database, LIMITS, roles["archive"].system_tables)
        stored = {
            row["rolname"]: row["rolpassword"]
            for row in await conn.fetch(
                "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY($1::text[])",
                [logins.reader.username, logins.writer.username],
            )
        }
    finally:
        await conn.close()

    assert set(stored) == {logins.reader.username, logins.writer.username}
    for verifier in stored.values():
        assert verifier.startswith("SCRAM-SHA-256$4096:"), verifier

    log = server_log.read_text(errors="replace")
    assert "ALTER ROLE" in log, "the statements were logged"
    assert "PASSWORD 'SCRAM-SHA-256$4096:" in log, "what was sent is a verifier"
    for login in (logins.reader, logins.writer):
        assert login.password not in log

    for login in (logins.reader, logins.writer):
        as_login = await asyncpg.connect(
            **{**database.connect_arguments, "user": login.username, "password": login.password}
        )
        try:
            assert await as_login.fetchval("SELECT current_user") == login.username
        finally:
            await as_login.close()
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(
            **{**database.connect_arguments, "user": logins.reader.username, "password": "wrong"}
        )
