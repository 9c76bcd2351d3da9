"""The system's own tables (audit trail, version tables) are out of the execute logins' reach.

A caller holding every scope, ``db:write`` included, can neither read nor change them
through execute, on any role; a migration that (re)creates one does not hand it back.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from multidb import migrations
from multidb.execute_logins import derive_logins
from multidb.plugins import get_roles
from multidb.settings import Settings
from tests.conftest import BUILTIN_ROLES, bearer

WRITER = bearer("db:read", "db:execute", "db:write")
INSUFFICIENT_PRIVILEGE = "42501"


async def _execute(client: Any, query: str, *, read_only: bool) -> Any:
    return await client.post(
        "/execute", json={"query": query, "read_only": read_only}, headers=WRITER
    )


@pytest.mark.parametrize(
    ("query", "read_only"),
    [
        ("SELECT count(*) FROM access_logs", True),
        ("DELETE FROM access_logs", False),
        ("UPDATE access_logs SET error = 'erased'", False),
        (
            "INSERT INTO access_logs (event_id, outcome, status_code) VALUES ('x', 'allowed', 200)",
            False,
        ),
        ("TRUNCATE access_logs", False),
        ("SELECT * FROM access_log_chains", True),
        ("UPDATE access_log_chains SET last_seq = 0", False),
        ("SELECT * FROM backup_drills", True),
        ("DELETE FROM backup_drills", False),
        ("UPDATE backup_drills SET passed = true", False),
        ("SELECT * FROM alembic_version_logging", True),
        ("UPDATE alembic_version_logging SET version_num = 'broken'", False),
        ("DELETE FROM alembic_version_logging", False),
    ],
)
async def test_a_writer_cannot_touch_the_logging_roles_system_tables(
    service_client: Any, query: str, read_only: bool
) -> None:
    async with service_client("logging") as client:
        answer = await _execute(client, query, read_only=read_only)
        assert answer.status_code == 400, answer.text
        assert answer.json()["sqlstate"] == INSUFFICIENT_PRIVILEGE
        assert (await client.get("/readyz")).status_code == 200
        # The application's own tables stay writable.
        ok = await _execute(client, "DELETE FROM error_logs WHERE false", read_only=False)
        assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("role", BUILTIN_ROLES)
async def test_no_roles_version_table_is_reachable(service_client: Any, role: str) -> None:
    async with service_client(role) as client:
        for query, read_only in (
            (f"SELECT version_num FROM alembic_version_{role}", True),
            (f"UPDATE alembic_version_{role} SET version_num = 'x'", False),
        ):
            answer = await _execute(client, query, read_only=read_only)
            assert answer.status_code == 400, answer.text
            assert answer.json()["sqlstate"] == INSUFFICIENT_PRIVILEGE


async def test_a_migration_takes_back_what_default_privileges_gave(
    service_client: Any, settings: Settings
) -> None:
    spec = get_roles()["logging"]
    database = settings.databases["logging"]
    async with service_client("logging") as client:  # provisions the logins
        assert (await client.get("/readyz")).status_code == 200
    logins = derive_logins(database)
    conn = await database.connect()
    try:
        # What ALTER DEFAULT PRIVILEGES does when a migration creates the table anew.
        await conn.execute(
            f'GRANT ALL ON access_logs TO "{logins.reader.username}", "{logins.writer.username}"'
        )
        await asyncio.to_thread(migrations.upgrade, spec, "head", database)
        reachable = await conn.fetchval(
            "SELECT has_table_privilege($1, 'access_logs', 'SELECT')"
            " OR has_table_privilege($2, 'access_logs', 'DELETE')",
            logins.reader.username,
            logins.writer.username,
        )
    finally:
        await conn.close()
    assert reachable is False
