"""The archive mover against real databases: what moves, what moves with it, what stays,
and that a round trip (archive, then unarchive) gives back exactly the rows it took."""

from __future__ import annotations

import asyncpg
import pytest

from multidb.jobs import LOCK_SPACE
from multidb.settings import Settings
from multidb_archive.mover import (
    Mover,
    MoverBusyError,
    MoverError,
    RunRequest,
    batches,
    load_archive_settings,
)
from multidb_archive.mover.engine import LOCK_KEY
from multidb_archive.mover.login import derive_login
from tests.archiving import mover_databases, seed, snapshot

pytestmark = pytest.mark.anyio


def _mover(env: dict[str, str], settings: Settings) -> Mover:
    return Mover(
        settings.databases["default"], settings.databases["archive"], load_archive_settings(env)
    )


async def _count(settings: Settings, role: str, sql: str) -> int:
    conn = await settings.databases[role].connect()
    try:
        value: int = await conn.fetchval(sql)
        return value
    finally:
        await conn.close()


async def test_a_round_trip_moves_everything_and_gives_back_identical_rows(
    database_env: dict[str, str],
) -> None:
    async with mover_databases(database_env) as (env, settings):
        made = await seed(settings.databases["default"], users=3)
        await seed(settings.databases["default"], users=2, old=False)
        before = await snapshot(settings.databases["default"])
        mover = _mover(env, settings)

        report = await mover.run(RunRequest(), trigger="cli")
        assert report.state == "done", report
        assert report.models["Media"].rows == 6  # 3 scans and their 3 derived images
        assert report.models["People"].rows == 3
        assert report.models["User"].rows == 3
        assert report.models["Media"].batches >= 2  # children leave before their parents
        # What moved with the rows left with them; what is recent stayed.
        assert await _count(settings, "default", "SELECT count(*) FROM users") == 2
        assert await _count(settings, "default", "SELECT count(*) FROM media") == 4
        assert await _count(settings, "default", "SELECT count(*) FROM ocr_jobs") == 2
        assert await _count(settings, "default", "SELECT count(*) FROM identity_documents") == 2
        assert (
            await _count(
                settings, "default", "SELECT count(*) FROM audit_logs WHERE user_id IS NULL"
            )
            == 3
        )
        assert await _count(settings, "archive", "SELECT count(*) FROM archived_media") == 6
        assert (
            await _count(
                settings,
                "archive",
                "SELECT count(*) FROM archived_media WHERE jsonb_array_length(dependents->'ocr_jobs') = 1",
            )
            == 3
        )
        assert (
            await _count(
                settings, "archive", "SELECT count(*) FROM archive_batches WHERE state <> 'done'"
            )
            == 0
        )

        back = await mover.run(
            RunRequest(kind="unarchive", models=["Media", "People", "User"]), trigger="cli"
        )
        assert back.state == "done", back
        assert await snapshot(settings.databases["default"]) == before
        assert await _count(settings, "archive", "SELECT count(*) FROM archived_users") == 0
        assert made["users"]


async def test_a_dry_run_counts_and_changes_nothing(database_env: dict[str, str]) -> None:
    async with mover_databases(database_env) as (env, settings):
        await seed(settings.databases["default"], users=2)
        before = await snapshot(settings.databases["default"])
        report = await _mover(env, settings).run(RunRequest(dry_run=True), trigger="cli")
        assert report.state == "done", report
        # Derived media hold their parents back in a dry run (they have not moved yet).
        assert report.models["Media"].rows == 2
        assert report.models["Media"].held_back == {"referenced by media.parent_id": 2}
        assert report.models["Media"].bytes > 0
        assert report.models["User"].held_back
        assert await snapshot(settings.databases["default"]) == before
        assert await _count(settings, "archive", "SELECT count(*) FROM archived_media") == 0


async def test_bad_requests_are_one_line_and_change_nothing(database_env: dict[str, str]) -> None:
    async with mover_databases(database_env) as (env, settings):
        mover = _mover(env, settings)
        with pytest.raises(MoverError, match="unknown model 'Invoice'"):
            await mover.run(RunRequest(models=["Invoice"]), trigger="cli")
        with pytest.raises(MoverError, match="say which rows"):
            await mover.run(RunRequest(kind="unarchive"), trigger="cli")
        assert await mover.runs() == []


async def test_one_mover_at_a_time(database_env: dict[str, str]) -> None:
    async with mover_databases(database_env) as (env, settings):
        holder = await settings.databases["archive"].connect()
        try:
            await holder.execute("SELECT pg_advisory_lock($1, $2)", LOCK_SPACE, LOCK_KEY)
            with pytest.raises(MoverBusyError):
                await _mover(env, settings).run(RunRequest(), trigger="cli")
        finally:
            await holder.close()


async def test_unarchive_by_id_refuses_a_row_whose_parent_is_still_archived(
    database_env: dict[str, str],
) -> None:
    async with mover_databases(database_env) as (env, settings):
        made = await seed(settings.databases["default"], users=1)
        mover = _mover(env, settings)
        assert (await mover.run(RunRequest(), trigger="cli")).state == "done"
        report = await mover.run(
            RunRequest(kind="unarchive", ids={"People": made["people"]}), trigger="cli"
        )
        assert report.state == "failed"
        assert "unarchive that first" in (report.message or "")
        assert await _count(settings, "archive", "SELECT count(*) FROM archived_people") == 1
        assert await _count(settings, "default", "SELECT count(*) FROM people") == 0


async def test_the_movers_login_reaches_only_what_moves(database_env: dict[str, str]) -> None:
    async with mover_databases(database_env) as (env, settings):
        await seed(settings.databases["default"], users=1)
        assert (await _mover(env, settings).run(RunRequest(), trigger="cli")).state == "done"
        account = derive_login(settings.databases["default"])
        conn = await settings.databases["default"].connect(
            user=account.username, password=account.password
        )
        try:
            # What it needs: read and delete the moving rows, put back the links' keys.
            await conn.fetch("SELECT id FROM media LIMIT 1")
            await conn.execute("UPDATE audit_logs SET user_id = NULL WHERE false")
            refused = [
                "DELETE FROM audit_logs",
                "UPDATE audit_logs SET action = 'forged'",
                "SELECT * FROM alembic_version_default",
                "CREATE TABLE stolen (id int)",
                "TRUNCATE media",
                "ALTER TABLE media ADD COLUMN x int",
            ]
            for statement in refused:
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(statement)
        finally:
            await conn.close()


async def test_rows_come_back_after_a_column_was_added_to_their_table(
    database_env: dict[str, str],
) -> None:
    async with mover_databases(database_env) as (env, settings):
        made = await seed(settings.databases["default"], users=1)
        mover = _mover(env, settings)
        assert (await mover.run(RunRequest(), trigger="cli")).state == "done"
        conn = await settings.databases["default"].connect()
        try:
            # A migration after the archiving: a new nullable column, a new dependent table.
            await conn.execute("ALTER TABLE media ADD COLUMN caption text")
            await conn.execute(
                "CREATE TABLE media_tags (id bigserial PRIMARY KEY, "
                "media_id bigint REFERENCES media (id) ON DELETE CASCADE, tag text)"
            )
        finally:
            await conn.close()
        back = await mover.run(
            RunRequest(kind="unarchive", models=["Media", "People", "User"]), trigger="cli"
        )
        assert back.state == "done", back
        assert await _count(settings, "default", "SELECT count(*) FROM media") == 2
        assert await _count(settings, "archive", "SELECT count(*) FROM archived_media") == 0
        assert made["media"]


async def test_a_copy_that_does_not_read_back_as_sent_keeps_nothing(
    database_env: dict[str, str],
) -> None:
    async with mover_databases(database_env) as (env, settings):
        await seed(settings.databases["default"], users=1)
        before = await snapshot(settings.databases["default"])
        conn = await settings.databases["archive"].connect()
        try:
            # Something between the mover and the disk changes what is stored.
            await conn.execute(
                "CREATE FUNCTION tamper() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "NEW.data := NEW.data || '{\"tampered\": true}'; RETURN NEW; END $$; "
                "CREATE TRIGGER tamper BEFORE INSERT ON archived_media "
                "FOR EACH ROW EXECUTE FUNCTION tamper()"
            )
        finally:
            await conn.close()
        report = await _mover(env, settings).run(RunRequest(), trigger="cli")
        assert report.state == "failed"
        assert "did not match" in (report.message or "")
        assert await snapshot(settings.databases["default"]) == before
        assert await _count(settings, "archive", "SELECT count(*) FROM archived_media") == 0
        assert await _count(settings, "archive", "SELECT count(*) FROM archive_batches") == 0


async def test_a_batch_ends_at_its_byte_budget_as_well_as_its_row_count(
    database_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with mover_databases(database_env) as (env, settings):
        await seed(settings.databases["default"], users=3)
        before = await snapshot(settings.databases["default"])
        # Any row is over a one-byte budget: every row is a batch of its own.
        monkeypatch.setattr(batches, "MAX_BATCH_BYTES", 1)
        monkeypatch.setattr(batches, "CURSOR_ROWS", 1)
        mover = _mover(env, settings)
        report = await mover.run(RunRequest(), trigger="cli")
        assert report.state == "done", report
        assert (report.models["Media"].rows, report.models["Media"].batches) == (6, 6)
        back = await mover.run(
            RunRequest(kind="unarchive", models=["Media", "People", "User"]), trigger="cli"
        )
        assert back.state == "done", back
        assert await snapshot(settings.databases["default"]) == before
