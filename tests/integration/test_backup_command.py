"""``multidb backup`` as a person runs it: a real process against the real database."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from multidb.backups.engine import try_lead
from multidb.plugins import get_roles
from multidb.settings import load_settings

TARGET = "multidb_restore_command_test"


def _multidb(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "multidb.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def command_env(database_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        **database_env,
        "MULTI_DB_BACKUP_DIR": str(tmp_path / "backups"),
        "MULTI_DB_ENV_FILE": os.devnull,
    }


async def _drop(env: dict[str, str]) -> None:
    settings = load_settings(env, get_roles())
    conn = await settings.databases["default"].connect()
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{TARGET}" WITH (FORCE)')
    finally:
        await conn.close()


def test_run_list_drill_and_restore(command_env: dict[str, str]) -> None:
    ran = _multidb(command_env, "backup", "run", "default")
    assert ran.returncode == 0, ran.stderr
    match = re.search(r"^default\s+([0-9a-f]{12})\s+ok\s+.*verified$", ran.stdout, re.MULTILINE)
    assert match, ran.stdout
    backup_id = match[1]

    listed = _multidb(command_env, "backup", "list", "default")
    assert listed.returncode == 0, listed.stderr
    assert backup_id in listed.stdout
    assert "schedule every 1h" not in listed.stdout  # the tests turn schedules off
    assert "schedule off" in listed.stdout

    drilled = _multidb(command_env, "backup", "drill", "default")
    assert drilled.returncode == 0, drilled.stderr
    assert "drill passed" in drilled.stdout

    asyncio.run(_drop(command_env))
    try:
        restored = _multidb(
            command_env, "backup", "restore", "default", backup_id, "--into", TARGET
        )
        assert restored.returncode == 0, restored.stderr
        assert f"restored into '{TARGET}'" in restored.stdout

        again = _multidb(command_env, "backup", "restore", "default", backup_id, "--into", TARGET)
        assert again.returncode == 1
        assert "is not empty" in again.stderr
        assert "public.users" in again.stderr
        assert "--force" in again.stderr

        forced = _multidb(
            command_env, "backup", "restore", "default", backup_id, "--into", TARGET, "--force"
        )
        assert forced.returncode == 0, forced.stderr
    finally:
        asyncio.run(_drop(command_env))


def test_mistakes_are_one_line_and_exit_2(command_env: dict[str, str]) -> None:
    malformed = _multidb(command_env, "backup", "restore", "default", "nothex", "--into", TARGET)
    assert malformed.returncode == 2
    assert "12 lowercase hex digits" in malformed.stderr
    unknown = _multidb(command_env, "backup", "run", "nosuchrole")
    assert unknown.returncode == 2
    assert "unknown role 'nosuchrole'" in unknown.stderr
    missing = _multidb(
        command_env, "backup", "restore", "default", "0123456789ab", "--into", TARGET
    )
    assert missing.returncode == 1
    assert "no backup '0123456789ab'" in missing.stderr
    for answer in (malformed, unknown, missing):
        assert "Traceback" not in answer.stderr


def test_a_role_whose_lock_is_held_is_busy(command_env: dict[str, str]) -> None:
    settings = load_settings(command_env, get_roles())

    async def hold_and_run() -> subprocess.CompletedProcess[str]:
        lock = await try_lead(settings.databases["archive"], "archive")
        assert lock is not None
        try:
            return await asyncio.to_thread(_multidb, command_env, "backup", "run", "archive")
        finally:
            await lock.close()

    busy = asyncio.run(hold_and_run())
    assert busy.returncode == 1
    assert "another backup operation of this role is running" in busy.stderr


def test_restore_refuses_a_target_that_is_a_connection_string(command_env: dict[str, str]) -> None:
    ran = _multidb(command_env, "backup", "run", "archive")
    assert ran.returncode == 0, ran.stderr
    backup_id = ran.stdout.split()[1]
    for target in ("dbname=ocr_identity_db", "postgresql://localhost/ocr_identity_db", " x"):
        refused = _multidb(command_env, "backup", "restore", "archive", backup_id, "--into", target)
        assert refused.returncode == 1, (target, refused.stderr)
        assert "not a usable database name" in refused.stderr
        assert "Traceback" not in refused.stderr
