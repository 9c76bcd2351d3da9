"""Read-only execute holds against tricks, not just INSERT; write mode cannot do DDL or escape.

Every attempt runs through the real analytics service against its real database. After
each one, a plain write must still be refused and the canary data must be untouched.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from multidb.execute_logins import derive_logins
from multidb.settings import Settings
from tests.conftest import ADMIN, bearer

PWNED = Path("/tmp/multidb-pwned")
PROBE_WRITE = {"query": "INSERT INTO system_metrics (name, value) VALUES ('probe', 1)"}

READ_ONLY_BYPASS_ATTEMPTS = [
    "INSERT INTO system_metrics (name, value) VALUES ('pwned', 1)",
    "UPDATE system_metrics SET value = -1",
    "DELETE FROM system_metrics",
    "TRUNCATE system_metrics",
    "WITH gone AS (DELETE FROM system_metrics RETURNING *) SELECT count(*) FROM gone",
    "WITH up AS (UPDATE system_metrics SET value = -1 RETURNING 1) SELECT * FROM up",
    "SELECT * FROM system_metrics FOR UPDATE",
    "SELECT set_config('default_transaction_read_only', 'off', false)",
    "SELECT set_config('transaction_read_only', 'off', false)",
    "SET transaction_read_only = off",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
    "COMMIT; INSERT INTO system_metrics (name, value) VALUES ('pwned', 1)",
    "ROLLBACK; DELETE FROM system_metrics",
    "SELECT 1; DELETE FROM system_metrics",
    "COMMIT",
    "DO $$ BEGIN INSERT INTO system_metrics (name, value) VALUES ('pwned', 1); END $$",
    "DO $$ BEGIN COMMIT; INSERT INTO system_metrics (name, value) VALUES ('pwned', 1); END $$",
    "COPY (SELECT 1) TO PROGRAM 'touch /tmp/multidb-pwned'",
    "COPY system_metrics FROM PROGRAM 'echo 1'",
    "COPY system_metrics TO '/tmp/multidb-pwned'",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT pg_ls_dir('.')",
    "SELECT lo_export(lo_from_bytea(0, 'x'), '/tmp/multidb-pwned')",
    "SELECT lo_import('/etc/passwd')",
    "SELECT rolname, rolpassword FROM pg_authid",
    "SELECT usename, passwd FROM pg_shadow",
    "SET ROLE postgres",
    "SET SESSION AUTHORIZATION postgres",
    "SELECT set_config('role', 'postgres', false)",
    "CREATE TABLE pwned (id int)",
    "CREATE TEMP TABLE pwned AS SELECT 1",
    "DROP TABLE system_metrics",
    "ALTER TABLE system_metrics ADD COLUMN pwned int",
    "ALTER SYSTEM SET statement_timeout = 0",
    "SELECT pg_reload_conf()",
    "CREATE EXTENSION IF NOT EXISTS dblink",
    "SELECT nextval('system_metrics_id_seq')",
    "SELECT setval('system_metrics_id_seq', 1000)",
    "PREPARE TRANSACTION 'pwned'",
    "LOCK TABLE system_metrics IN ACCESS EXCLUSIVE MODE",
    "GRANT ALL ON system_metrics TO PUBLIC",
    "ALTER ROLE CURRENT_USER SET default_transaction_read_only = off",
    "CREATE FUNCTION pwned() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'postgres'",
    "VACUUM system_metrics",
]

# Reads of the server's files or of password hashes change nothing, so the snapshot cannot
# catch them: the database itself must refuse them (insufficient_privilege).
SERVER_READS = {
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT pg_ls_dir('.')",
    "SELECT rolname, rolpassword FROM pg_authid",
    "SELECT usename, passwd FROM pg_shadow",
}
PERMISSION_DENIED = "42501"

WRITE_MODE_ESCAPES = [
    "DROP TABLE system_metrics",
    "TRUNCATE system_metrics",
    "CREATE TABLE pwned (id int)",
    "ALTER TABLE system_metrics ADD COLUMN pwned int",
    "COPY (SELECT 1) TO PROGRAM 'touch /tmp/multidb-pwned'",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT rolname, rolpassword FROM pg_authid",
    "SET ROLE postgres",
    "ALTER ROLE CURRENT_USER SUPERUSER",
    "GRANT pg_execute_server_program TO CURRENT_USER",
    "COMMIT; DROP TABLE system_metrics",
]


async def _admin(settings: Settings) -> asyncpg.Connection:
    db = settings.databases["analytics"]
    return await db.connect()


async def _snapshot(conn: asyncpg.Connection) -> dict[str, Any]:
    return {
        "rows": [
            tuple(r)
            for r in await conn.fetch("SELECT id, name, value FROM system_metrics ORDER BY id")
        ],
        "columns": await conn.fetchval(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'system_metrics'"
        ),
        "tables": await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"),
        "sequence": await conn.fetchval("SELECT last_value FROM system_metrics_id_seq"),
        "roles": [
            tuple(r)
            for r in await conn.fetch(
                "SELECT rolname, rolsuper, rolcreaterole, rolconfig::text FROM pg_roles ORDER BY rolname"
            )
        ],
        "members": await conn.fetchval("SELECT count(*) FROM pg_auth_members"),
        "largeobjects": await conn.fetchval("SELECT count(*) FROM pg_largeobject_metadata"),
        "functions": await conn.fetchval("SELECT count(*) FROM pg_proc WHERE proname = 'pwned'"),
        "prepared": await conn.fetchval("SELECT count(*) FROM pg_prepared_xacts"),
        "system": await conn.fetchval(
            "SELECT count(*) FROM pg_file_settings WHERE sourcefile LIKE '%auto%'"
        ),
    }


@pytest.fixture
async def analytics(service_client: Any, settings: Settings) -> AsyncIterator[Any]:
    conn = await _admin(settings)
    await conn.execute("TRUNCATE system_metrics RESTART IDENTITY")
    await conn.execute("INSERT INTO system_metrics (name, value, unit) VALUES ('canary', 42, 'ms')")
    await conn.close()
    PWNED.unlink(missing_ok=True)
    async with service_client("analytics") as client:
        yield client


@pytest.mark.parametrize("query", READ_ONLY_BYPASS_ATTEMPTS)
async def test_read_only_bypass_attempt_changes_nothing(
    analytics: Any, settings: Settings, query: str
) -> None:
    conn = await _admin(settings)
    before = await _snapshot(conn)
    response = await analytics.post("/execute", json={"query": query}, headers=ADMIN)
    assert response.status_code in {200, 400, 403}, response.text
    assert "traceback" not in response.text.lower()
    if query in SERVER_READS:
        assert response.status_code == 400, response.text
        assert response.json()["sqlstate"] == PERMISSION_DENIED, response.text
    # The same connection pool must still refuse a plain write afterwards.
    probe = await analytics.post("/execute", json=PROBE_WRITE, headers=ADMIN)
    assert probe.status_code == 400
    assert probe.json()["sqlstate"] == "25006"
    assert await _snapshot(conn) == before
    assert not PWNED.exists()
    await conn.close()


@pytest.mark.parametrize("query", WRITE_MODE_ESCAPES)
async def test_write_mode_cannot_escape_to_ddl_or_the_server(
    analytics: Any, settings: Settings, query: str
) -> None:
    conn = await _admin(settings)
    before = await _snapshot(conn)
    body = {"query": query, "read_only": False}
    response = await analytics.post("/execute", json=body, headers=ADMIN)
    assert response.status_code in {400, 403}, response.text
    assert await _snapshot(conn) == before
    assert not PWNED.exists()
    await conn.close()


async def test_write_scope_and_flag_allow_dml(analytics: Any, settings: Settings) -> None:
    body = {
        "query": "INSERT INTO system_metrics (name, value) VALUES (:name, :value)",
        "params": {"name": "written", "value": 7.5},
        "read_only": False,
    }
    response = await analytics.post("/execute", json=body, headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json()["row_count"] == 1
    assert response.json()["status"] == "INSERT 0 1"
    conn = await _admin(settings)
    assert await conn.fetchval("SELECT value FROM system_metrics WHERE name = 'written'") == 7.5
    await conn.close()


async def test_write_without_write_scope_is_forbidden(analytics: Any, settings: Settings) -> None:
    body = {"query": "DELETE FROM system_metrics", "read_only": False}
    response = await analytics.post("/execute", json=body, headers=bearer("db:execute"))
    assert response.status_code == 403
    assert "db:write" in response.json()["detail"]
    conn = await _admin(settings)
    assert await conn.fetchval("SELECT count(*) FROM system_metrics") == 1
    await conn.close()


async def test_statement_timeout_cancels_the_backend_query(
    analytics: Any, settings: Settings
) -> None:
    response = await analytics.post(
        "/execute", json={"query": "SELECT pg_sleep(30) AS slept"}, headers=ADMIN
    )
    assert response.status_code == 504
    assert "1500 ms" in response.json()["detail"]
    conn = await _admin(settings)
    # Cancelled in the server, not merely abandoned by the client.
    running = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%' AND state = 'active'"
    )
    assert running == 0
    await conn.close()


async def test_session_settings_do_not_leak_into_the_next_request(
    analytics: Any, settings: Settings
) -> None:
    """A caller's session state (a committed setting, a session lock) dies with its request.

    Checked from outside, on every connection of the database: an execute pool that kept a
    connection without resetting it would show the setting or hold the lock while idle.
    """
    leaked_name = "leaked-by-a-caller"
    written = await analytics.post(
        "/execute",
        json={"query": f"SELECT set_config('application_name', '{leaked_name}', false)"}
        | {"read_only": False},  # committed: a rollback would undo it without any reset
        headers=ADMIN,
    )
    assert written.status_code == 200, written.text
    locked = await analytics.post(
        "/execute", json={"query": "SELECT pg_advisory_lock(4242)"}, headers=ADMIN
    )
    assert locked.status_code == 200, locked.text

    conn = await _admin(settings)
    try:

        async def leftovers() -> tuple[int, int]:
            named = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", leaked_name
            )
            locks = await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242"
            )
            return named, locks

        deadline = asyncio.get_running_loop().time() + 5
        while (found := await leftovers()) != (0, 0):
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"session state outlived its request (setting, lock): {found}")
            await asyncio.sleep(0.05)
    finally:
        await conn.close()

    # And the next callers, whichever pooled connection they get, see the defaults.
    for read_only in (False, True, False, True):
        seen = await analytics.post(
            "/execute",
            json={"query": "SELECT current_setting('application_name')", "read_only": read_only},
            headers=ADMIN,
        )
        assert seen.status_code == 200, seen.text
        assert seen.json()["result"] != [[leaked_name]]


async def test_a_membership_granted_by_hand_is_taken_back_at_start(
    service_client: Any, settings: Settings
) -> None:
    reader = derive_logins(settings.databases["analytics"]).reader.username
    conn = await _admin(settings)
    try:
        await conn.execute(f'GRANT pg_read_server_files TO "{reader}"')
        async with service_client("analytics") as client:
            response = await client.post(
                "/execute", json={"query": "SELECT pg_read_file('/etc/passwd')"}, headers=ADMIN
            )
        assert response.status_code == 400, response.text
        assert response.json()["sqlstate"] == PERMISSION_DENIED
        granted = await conn.fetchval(
            "SELECT pg_has_role($1, 'pg_read_server_files', 'MEMBER')", reader
        )
        assert granted is False
    finally:
        await conn.execute(f'REVOKE pg_read_server_files FROM "{reader}"')
        await conn.close()
