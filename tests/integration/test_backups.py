"""Backups through a role service: real pg_dump/pg_restore against the real database."""

from __future__ import annotations

import asyncio
import stat
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from multidb import migrations
from multidb.plugins import get_roles
from multidb.settings import Settings, load_settings
from tests.conftest import ADMIN, API_KEY, JWT_SECRET, bearer

pytestmark = pytest.mark.anyio
WAIT_S = 60.0


@pytest.fixture
def backup_settings(database_env: dict[str, str], tmp_path: Path) -> Settings:
    env = {
        **database_env,
        "API_KEYS": API_KEY,
        "JWT_SECRET": JWT_SECRET,
        "MULTI_DB_BACKUP_DIR": str(tmp_path / "backups"),
    }
    return load_settings(env, get_roles())


async def _finished(client: AsyncTestClient[Any], backup_id: str, until: str) -> dict[str, Any]:
    """The manifest once ``until`` (a status, "verified" or "drilled") is reached."""
    deadline = time.monotonic() + WAIT_S
    while True:
        answer = await client.get(f"/backups/{backup_id}", headers=ADMIN)
        assert answer.status_code == 200, answer.text
        manifest: dict[str, Any] = answer.json()
        done = {
            "failed": manifest["status"] == "failed",
            "verified": manifest.get("verification") is not None,
            "drilled": manifest.get("last_drill") is not None,
        }
        if done["failed"] or done.get(until):
            return manifest
        assert time.monotonic() < deadline, f"backup {backup_id} still {manifest['status']}"
        await asyncio.sleep(0.1)


async def _backup(client: AsyncTestClient[Any]) -> dict[str, Any]:
    answer = await client.post("/backups", headers=ADMIN)
    assert answer.status_code == 202, answer.text
    started = answer.json()
    assert started["operation"] == "backup"
    return await _finished(client, started["id"], "verified")


async def test_a_backup_is_a_verified_pg_dump_with_its_manifest(
    service_client: Any, backup_settings: Settings
) -> None:
    async with service_client("default", backup_settings) as client:
        inserted = await client.post(
            "/execute",
            headers=ADMIN,
            json={
                "query": "INSERT INTO users (username, email, hashed_password) "
                "SELECT 'backup-' || g, 'backup-' || g || '@example.com', 'x' "
                "FROM generate_series(1, 7) g ON CONFLICT DO NOTHING",
                "read_only": False,
            },
        )
        assert inserted.status_code == 200, inserted.text
        try:
            await _backup_holds_the_new_users(client, backup_settings)
        finally:
            # Other tests count the users table: leave it as it was.
            removed = await client.post(
                "/execute",
                headers=ADMIN,
                json={
                    "query": "DELETE FROM users WHERE username LIKE 'backup-%'",
                    "read_only": False,
                },
            )
            assert removed.status_code == 200, removed.text


async def _backup_holds_the_new_users(
    client: AsyncTestClient[Any], backup_settings: Settings
) -> None:
    """The backup counted the users the test added, in its own snapshot."""
    manifest = await _backup(client)
    assert manifest["status"] == "ok", manifest
    assert manifest["verification"]["passed"] is True
    assert len(manifest["sha256"]) == 64
    assert manifest["size_bytes"] > 0
    assert manifest["alembic_revision"] == migrations.head_revision(get_roles()["default"])
    assert manifest["row_counts"]["public.users"] >= 7
    assert manifest["pg_dump_version"].startswith(manifest["server_version"].split(".")[0])
    folder = Path(backup_settings.backups.directory) / "default"
    dump = folder / manifest["file"]
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600
    assert dump.stat().st_size == manifest["size_bytes"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [manifest["file"], manifest["file"].replace(".dump", ".manifest.json")]
    )

    info = (await client.get("/backup/info", headers=ADMIN)).json()
    last = info["backups"]["last_backup"]
    assert last["id"] == manifest["id"]
    assert last["verified"] is True
    assert last["size_bytes"] == manifest["size_bytes"]
    listed = (await client.get("/backups", headers=ADMIN)).json()
    assert [b["id"] for b in listed["backups"]] == [manifest["id"]]


async def test_a_drill_restores_into_a_scratch_database_and_compares(
    service_client: Any, backup_settings: Settings
) -> None:
    async with service_client("analytics", backup_settings) as client:
        manifest = await _backup(client)
        answer = await client.post(f"/backups/{manifest['id']}/drill", headers=ADMIN)
        assert answer.status_code == 202, answer.text
        drilled = await _finished(client, manifest["id"], "drilled")
        drill = drilled["last_drill"]
        assert drill["passed"] is True, drill
        assert drill["differences"] == []
        # The scratch database is gone.
        left = await client.post(
            "/execute",
            headers=ADMIN,
            json={
                "query": "SELECT count(*) AS n FROM pg_database WHERE datname LIKE 'multidb_drill_%'"
            },
        )
        assert left.json()["result"] == [[0]]
        info = (await client.get("/backup/info", headers=ADMIN)).json()
        assert info["backups"]["last_backup"]["last_drill"]["passed"] is True
        assert info["backups"]["stale"] is False
        assert info["backups"]["schedule"] == "off"

        metrics = (await client.get("/metrics", headers=ADMIN)).text
        finished = datetime.fromisoformat(drilled["finished_at"]).timestamp()
        assert 'multidb_backup_drill_success{role="analytics"} 1.0' in metrics
        assert (
            f'multidb_backup_size_bytes{{role="analytics"}} {float(drilled["size_bytes"])}'
            in metrics
        )
        line = next(
            row
            for row in metrics.splitlines()
            if row.startswith('multidb_backup_last_success_timestamp_seconds{role="analytics"}')
        )
        assert abs(float(line.split()[-1]) - finished) < 0.01


async def test_one_flipped_byte_fails_verify_and_drill_with_a_reason(
    service_client: Any, backup_settings: Settings
) -> None:
    async with service_client("archive", backup_settings) as client:
        manifest = await _backup(client)
        dump = Path(backup_settings.backups.directory) / "archive" / manifest["file"]
        data = bytearray(dump.read_bytes())
        data[len(data) // 2] ^= 0x01
        dump.write_bytes(bytes(data))

        assert (
            await client.post(f"/backups/{manifest['id']}/verify", headers=ADMIN)
        ).status_code == 202
        deadline = time.monotonic() + WAIT_S
        while True:
            checked = (await client.get(f"/backups/{manifest['id']}", headers=ADMIN)).json()
            if checked["verification"]["checked_at"] != manifest["verification"]["checked_at"]:
                break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert checked["verification"]["passed"] is False
        assert "sha256" in checked["verification"]["error"]

        assert (
            await client.post(f"/backups/{manifest['id']}/drill", headers=ADMIN)
        ).status_code == 202
        drilled = await _finished(client, manifest["id"], "drilled")
        assert drilled["last_drill"]["passed"] is False
        assert "sha256" in drilled["last_drill"]["differences"][0]


async def test_unknown_and_malformed_ids_and_the_scope(
    service_client: Any, backup_settings: Settings
) -> None:
    async with service_client("logging", backup_settings) as client:
        missing = await client.get("/backups/0123456789ab", headers=ADMIN)
        assert missing.status_code == 404
        assert "0123456789ab" in missing.json()["detail"]
        for bad in ("nothex", "0123456789AB", "0123456789abc", "x" * 500):
            answer = await client.get(f"/backups/{bad}", headers=ADMIN)
            assert answer.status_code == 400, (bad, answer.text)
            assert "12 lowercase hex digits" in answer.json()["detail"]
        assert (await client.post("/backups/0123456789ab/drill", headers=ADMIN)).status_code == 404
        assert (await client.post("/backups/zz/verify", headers=ADMIN)).status_code == 400
        assert (await client.post("/backups", headers=bearer("db:read"))).status_code == 403
        assert (await client.get("/backups", headers=bearer("db:execute"))).status_code == 403
        # The logging service's own /backups/drills is not taken for an id.
        drills = await client.get("/backups/drills", headers=ADMIN)
        assert drills.status_code == 200, drills.text


async def test_concurrent_starts_run_exactly_one_backup(
    service_client: Any, backup_settings: Settings
) -> None:
    async with service_client("default", backup_settings) as client:
        answers = await asyncio.gather(*(client.post("/backups", headers=ADMIN) for _ in range(5)))
        codes = sorted(answer.status_code for answer in answers)
        assert codes == [202, 409, 409, 409, 409], [a.text for a in answers]
        conflict = next(a for a in answers if a.status_code == 409)
        assert "running" in conflict.json()["detail"]
        started = next(a for a in answers if a.status_code == 202).json()
        done = await _finished(client, started["id"], "verified")
        assert done["status"] == "ok"
        listed = (await client.get("/backups", headers=ADMIN)).json()["backups"]
        assert len(listed) == 1
