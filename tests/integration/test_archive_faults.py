"""The archive mover under faults: a real mover process (``tests/mover_process.py``), real
PostgreSQL, no mocks.

The mover is stopped at exact points by locks the test holds, never by timing: a
``FOR KEY SHARE`` row lock in the default database makes its DELETE wait, a ``FOR UPDATE``
on its ledger row makes the ledger update wait, an ``ACCESS EXCLUSIVE`` table lock in the
archive database makes its copy wait. Each wait is seen where PostgreSQL shows it
(``pg_stat_activity``, the ledger), polled with a deadline; then the test kills the process
(SIGKILL), stops a server, or writes to the rows under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import msgspec
import pytest

from multidb.plugins import get_roles
from multidb.settings import DatabaseSettings, Settings
from multidb_archive.mover import Mover, RunReport, load_archive_settings
from multidb_archive.mover.batches import SESSION
from multidb_archive.mover.login import derive_login
from multidb_devstack.embedded import EmbeddedPostgres
from tests.archiving import mover_databases, seed, snapshot
from tests.conftest import ROOT
from tests.processes import until

pytestmark = pytest.mark.anyio

WAIT_S = 60.0
RUN_TIMEOUT_S = 180.0
MOVER = Path(__file__).resolve().parents[1] / "mover_process.py"
APPLICATION = SESSION["application_name"]
# model -> (table in the default database, table in the archive database)
TABLES = {
    "Media": ("media", "archived_media"),
    "People": ("people", "archived_people"),
    "User": ("users", "archived_users"),
}
T = TypeVar("T")


# ---- helpers -------------------------------------------------------------------------


async def _until(check: Callable[[], Awaitable[T | None]], what: str) -> T:
    return await until(check, what, WAIT_S)


async def _fetch(database: DatabaseSettings, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await database.connect(timeout=10, server_settings={"TimeZone": "UTC"})
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def _value(database: DatabaseSettings, sql: str, *args: Any) -> Any:
    return (await _fetch(database, sql, *args))[0][0]


@dataclass
class _Finished:
    code: int
    report: RunReport | None
    stdout: str
    stderr: str


class _MoverProcess:
    """``tests/mover_process.py`` running with the test's environment."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(MOVER), *args],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind runs in the mover."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()

    async def finished(self) -> _Finished:
        try:
            out, err = await asyncio.to_thread(self.process.communicate, timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the mover did not end within {RUN_TIMEOUT_S} s")
        lines = out.splitlines()
        report = msgspec.json.decode(lines[-1], type=RunReport) if lines else None
        return _Finished(self.process.returncode, report, out, err)


@contextlib.contextmanager
def _mover(env: dict[str, str], *args: str) -> Iterator[_MoverProcess]:
    """A mover process, killed at the end if still running (a failed wait leaves none)."""
    process = _MoverProcess(env, *args)
    try:
        yield process
    finally:
        process.kill()


async def _run(env: dict[str, str], *args: str) -> RunReport:
    """A whole mover run in its own process; it must end ``done``."""
    with _mover(env, *args) as process:
        finished = await process.finished()
    assert finished.code == 0, finished
    assert finished.report is not None
    assert finished.report.state == "done", finished.report
    return finished.report


class _Held:
    """A transaction of the test's own holding locks until :meth:`release`."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def release(self) -> None:
        """Roll back (its locks are free when this returns) and disconnect."""
        if not self.conn.is_closed():
            with contextlib.suppress(asyncpg.PostgresError):
                await self.conn.execute("ROLLBACK")
            await self.conn.close()


@contextlib.asynccontextmanager
async def _holding(database: DatabaseSettings, *statements: str) -> AsyncIterator[_Held]:
    conn = await database.connect(timeout=10)
    held = _Held(conn)
    try:
        await conn.execute("BEGIN")
        for statement in statements:
            await conn.execute(statement)
        yield held
    finally:
        with contextlib.suppress(Exception):
            await held.release()
        conn.terminate()


async def _mover_waits(settings: Settings, role: str, statement: str) -> bool:
    """The mover's session in ``role``'s database waits for a lock in ``statement`` (the
    start of its SQL); in the default database, as the mover's own login."""
    database = settings.databases[role]
    login = derive_login(database).username if role == "default" else None
    waiting = await _value(
        database,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = $1 AND wait_event_type = 'Lock' "
        "AND ($2::text IS NULL OR usename = $2) AND ltrim(query) LIKE $3",
        APPLICATION,
        login,
        statement + "%",
    )
    return bool(waiting)


async def _mover_gone(settings: Settings) -> bool:
    """No session of a mover is left in either database (a killed mover's sessions end
    once their server notices; until then they may hold its locks)."""
    for role in ("default", "archive"):
        left = await _value(
            settings.databases[role],
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = $1 AND pid <> pg_backend_pid()",
            APPLICATION,
        )
        if left:
            return False
    return True


async def _ledger(settings: Settings) -> list[asyncpg.Record]:
    return await _fetch(
        settings.databases["archive"],
        "SELECT id, model, state, ids, rows FROM archive_batches ORDER BY id",
    )


async def _copied(settings: Settings) -> asyncpg.Record | None:
    return next((row for row in await _ledger(settings) if row["state"] == "copied"), None)


async def _where(settings: Settings) -> dict[str, tuple[set[int], set[int]]]:
    """Per model: the ids in the default database, the original ids in the archive."""
    found = {}
    for model, (table, archived) in TABLES.items():
        here = await _fetch(settings.databases["default"], f"SELECT id FROM {table}")
        there = await _fetch(settings.databases["archive"], f"SELECT original_id FROM {archived}")
        found[model] = ({r[0] for r in here}, {r[0] for r in there})
    return found


def _each_row_once(before: dict[str, tuple[set[int], set[int]]], now: dict[str, Any]) -> None:
    """Every row that existed is in exactly one of the two databases."""
    for model, (ids, _) in before.items():
        in_default, in_archive = now[model]
        assert not in_default & in_archive, f"{model}: in both databases"
        assert len(in_default) + len(in_archive) == len(ids), model
        assert in_default | in_archive == ids, model


async def _archived_rows_are_intact(settings: Settings, before: dict[str, list[str]]) -> None:
    """What the archive holds of each row is the row as it was in the default database."""
    for table, archived in TABLES.values():
        stored = await _fetch(settings.databases["archive"], f"SELECT data::text FROM {archived}")
        assert {r[0] for r in stored} <= set(before[table]), archived


async def _round_trip(
    env: dict[str, str], settings: Settings, before: dict[str, list[str]]
) -> None:
    """Everything archived comes back exactly as it was before the first run."""
    await _run(env, "unarchive", *TABLES)
    assert await snapshot(settings.databases["default"]) == before
    for _, archived in TABLES.values():
        assert await _value(settings.databases["archive"], f"SELECT count(*) FROM {archived}") == 0


async def _killed_in_delete(
    env: dict[str, str], settings: Settings, derived: list[int], *, after_delete: bool
) -> asyncpg.Record:
    """Start a mover whose first batch (the derived media) waits in its DELETE for the
    test's KEY SHARE lock, and kill it there; or, ``after_delete``, let the DELETE commit
    while the ledger row is locked, and kill it waiting to mark the batch done. Returns the
    batch's ledger entry."""
    default, archive = settings.databases["default"], settings.databases["archive"]
    lowest = min(derived)
    async with _holding(default, f"SELECT id FROM media WHERE id = {lowest} FOR KEY SHARE") as row:
        with _mover(env) as mover:
            await _until(
                lambda: _mover_waits(settings, "default", "DELETE"),
                "the mover waiting in its DELETE for the locked row",
            )
            entry = await _until(lambda: _copied(settings), "the batch's ledger entry 'copied'")
            assert sorted(entry["ids"]) == sorted(derived)
            if not after_delete:
                mover.kill()
                await row.release()
            else:
                async with _holding(
                    archive, "SELECT id FROM archive_batches WHERE state = 'copied' FOR UPDATE"
                ) as ledger:
                    await row.release()
                    await _until(
                        lambda: _mover_waits(settings, "archive", "UPDATE archive_batches"),
                        "the mover waiting to mark its batch done",
                    )
                    mover.kill()
                    await ledger.release()
    await _until(lambda: _mover_gone(settings), "the killed mover's sessions to end")
    return entry


# ---- killed mid-batch ----------------------------------------------------------------


async def test_killed_between_copy_and_delete(database_env: dict[str, str]) -> None:
    async with mover_databases(database_env) as (env, settings):
        default = settings.databases["default"]
        made = await seed(default, users=3)
        await seed(default, users=1, old=False)
        before = await snapshot(default)
        at_start = await _where(settings)

        entry = await _killed_in_delete(env, settings, made["derived"], after_delete=False)

        # What recovery must fix: the batch is in both databases, its entry still open.
        in_default, in_archive = (await _where(settings))["Media"]
        assert in_default & in_archive == set(made["derived"])
        assert await snapshot(default) == before
        # Nobody holds the mover's lock any more: the status does not call that run running.
        status = await Mover(
            settings.databases["default"],
            settings.databases["archive"],
            load_archive_settings(env),
        ).status()
        assert status.running is None
        assert status.last_run is not None
        assert status.last_run.state == "failed"
        assert status.pending_batches == 1

        report = await _run(env)
        states = {row["id"]: row["state"] for row in await _ledger(settings)}
        assert states[entry["id"]] == "recovered"
        assert set(states.values()) == {"recovered", "done"}
        now = await _where(settings)
        _each_row_once(at_start, now)
        # Everything old moved, once; only the recent user's rows stayed.
        assert report.models["Media"].rows == 6
        assert report.models["People"].rows == 3
        assert report.models["User"].rows == 3
        assert {model: len(here) for model, (here, _) in now.items()} == {
            "Media": 2,
            "People": 1,
            "User": 1,
        }
        await _archived_rows_are_intact(settings, before)
        await _round_trip(env, settings, before)


async def test_killed_between_delete_and_ledger_update(database_env: dict[str, str]) -> None:
    async with mover_databases(database_env) as (env, settings):
        default = settings.databases["default"]
        made = await seed(default, users=3)
        await seed(default, users=1, old=False)
        before = await snapshot(default)
        at_start = await _where(settings)

        entry = await _killed_in_delete(env, settings, made["derived"], after_delete=True)

        # The delete committed, the ledger never heard of it: the archive copy is the row now.
        in_default, in_archive = (await _where(settings))["Media"]
        assert not in_default & set(made["derived"])
        assert set(made["derived"]) <= in_archive
        assert (await _copied(settings)) is not None

        report = await _run(env)
        states = {row["id"]: row["state"] for row in await _ledger(settings)}
        assert states[entry["id"]] == "recovered"
        assert set(states.values()) == {"recovered", "done"}
        now = await _where(settings)
        _each_row_once(at_start, now)
        # The recovered batch's rows are not counted again by the run that found them moved.
        assert report.models["Media"].rows == 3
        assert {model: len(here) for model, (here, _) in now.items()} == {
            "Media": 2,
            "People": 1,
            "User": 1,
        }
        await _archived_rows_are_intact(settings, before)
        await _round_trip(env, settings, before)


# ---- the archive database goes away --------------------------------------------------


async def test_the_archive_database_stops_mid_batch(
    database_env: dict[str, str], spare_cluster: EmbeddedPostgres
) -> None:
    spare = spare_cluster.environment({"archive": get_roles()["archive"]})
    async with mover_databases(database_env, servers=spare) as (env, settings):
        default, archive = settings.databases["default"], settings.databases["archive"]
        assert archive.port == spare_cluster.state.port
        await seed(default, users=3)
        await seed(default, users=1, old=False)
        before = await snapshot(default)
        at_start = await _where(settings)

        async with _holding(archive, "LOCK TABLE archived_media IN ACCESS EXCLUSIVE MODE"):
            with _mover(env) as mover:
                await _until(
                    lambda: _mover_waits(settings, "archive", "INSERT INTO"),
                    "the mover waiting to copy its first batch into the archive",
                )
                await asyncio.to_thread(spare_cluster.stop)
                finished = await mover.finished()

        # A clean failure: one line saying why, no traceback, nothing deleted.
        assert finished.code == 1, finished
        assert finished.report is not None
        assert finished.report.state == "failed"
        message = finished.report.message or ""
        assert message
        assert "\n" not in message
        assert "Traceback" not in finished.stderr, finished.stderr
        assert await snapshot(default) == before

        await asyncio.to_thread(spare_cluster.start)
        assert await _ledger(settings) == []  # the copy never committed
        report = await _run(env)
        assert {model: found.rows for model, found in report.models.items()} == {
            "Media": 6,
            "People": 3,
            "User": 3,
        }
        now = await _where(settings)
        _each_row_once(at_start, now)
        assert {model: len(there) for model, (_, there) in now.items()} == {
            "Media": 6,
            "People": 3,
            "User": 3,
        }
        ledger = await _ledger(settings)
        assert {row["state"] for row in ledger} == {"done"}
        assert sum(row["rows"] for row in ledger) == 12
        runs = await _fetch(archive, "SELECT state FROM archive_runs ORDER BY started_at")
        # The failed run could not record its end (its database was gone): the next closed it.
        assert [r["state"] for r in runs] == ["failed", "done"]
        await _archived_rows_are_intact(settings, before)
        await _round_trip(env, settings, before)


# ---- writes while the mover works ----------------------------------------------------


async def test_a_row_updated_mid_batch_is_not_deleted_with_stale_content(
    database_env: dict[str, str],
) -> None:
    """The mover read the batch (step 1) and copied it; while its DELETE waits for the
    lowest row, the highest is updated and committed. The DELETE runs in a REPEATABLE READ
    transaction whose snapshot predates that update; it re-read each row's checksum in that
    snapshot and it targets the row, but PostgreSQL refuses to delete a row version that a
    transaction committed after the snapshot replaced ("could not serialize access due to
    concurrent update"). The transaction rolls back, step 4 starts again with a new
    snapshot, the row's checksum no longer matches the copy, so it stays (counted in
    ``changed``) and its copy is removed from the archive. Nothing is deleted on the
    strength of a stale read."""
    async with mover_databases(database_env) as (env, settings):
        default = settings.databases["default"]
        made = await seed(default, users=3)
        lowest, highest = min(made["derived"]), max(made["derived"])
        async with _holding(
            default, f"SELECT id FROM media WHERE id = {lowest} FOR KEY SHARE"
        ) as row:
            with _mover(env) as mover:
                await _until(
                    lambda: _mover_waits(settings, "default", "DELETE"),
                    "the mover waiting in its DELETE for the locked row",
                )
                writer = await default.connect(server_settings={"lock_timeout": "10s"})
                try:
                    # As the application would: a change touches updated_at.
                    await writer.execute(
                        "UPDATE media SET original_name = 'renamed.png', updated_at = now() "
                        "WHERE id = $1",
                        highest,
                    )
                finally:
                    await writer.close()
                await row.release()
                finished = await mover.finished()
        assert finished.code == 0, finished
        report = finished.report
        assert report is not None
        assert report.models["Media"].changed == 1

        kept = await _fetch(default, "SELECT id, original_name FROM media ORDER BY id")
        parent = await _value(default, "SELECT parent_id FROM media WHERE id = $1", highest)
        # The updated row stayed with its new content, and the parent it holds back.
        assert [(r["id"], r["original_name"]) for r in kept] == sorted(
            [(parent, "scan.png"), (highest, "renamed.png")]
        )
        archived = await _fetch(
            settings.databases["archive"], "SELECT original_id FROM archived_media"
        )
        assert highest not in {r[0] for r in archived}
        assert len(archived) == 4  # everything else moved
        first = (await _ledger(settings))[0]
        assert first["rows"] == len(made["derived"]) - 1
        assert report.models["Media"].held_back == {"referenced by media.parent_id": 1}


async def test_a_dependent_added_mid_batch_keeps_its_medium_whole(
    database_env: dict[str, str],
) -> None:
    """While the DELETE of a batch waits, an OCR job is added for one of its media. The
    delete of that medium would cascade to its OCR jobs; the cascade runs in the delete's
    REPEATABLE READ snapshot, and PostgreSQL's foreign key actions refuse to touch a row
    the snapshot cannot see (the new job): a serialization failure. The delete is tried
    again with a new snapshot, in which the medium's checksum (row, dependents, links)
    differs from its copy: the medium stays, with its new job, and its copy goes. Its
    policy still matches, so a later batch of the same run reads it afresh and moves it
    whole, the new job among its dependents: no row of it is lost, or left behind."""
    async with mover_databases(database_env) as (env, settings):
        default = settings.databases["default"]
        made = await seed(default, users=3)
        before = await snapshot(default)
        lowest, highest = min(made["derived"]), max(made["derived"])
        async with _holding(
            default, f"SELECT id FROM media WHERE id = {lowest} FOR KEY SHARE"
        ) as row:
            with _mover(env) as mover:
                await _until(
                    lambda: _mover_waits(settings, "default", "DELETE"),
                    "the mover waiting in its DELETE for the locked row",
                )
                writer = await default.connect(
                    server_settings={"lock_timeout": "10s", "TimeZone": "UTC"}
                )
                try:
                    job = await writer.fetchrow(
                        "INSERT INTO ocr_jobs (media_id, engine, status) "
                        "VALUES ($1, 'tesseract', 'queued') RETURNING id, to_jsonb(ocr_jobs)::text",
                        highest,
                    )
                finally:
                    await writer.close()
                assert job is not None
                await row.release()
                finished = await mover.finished()
        assert finished.code == 0, finished
        report = finished.report
        assert report is not None
        assert report.models["Media"].changed == 1
        first = (await _ledger(settings))[0]
        assert highest in first["ids"]
        assert first["rows"] == len(made["derived"]) - 1  # the medium stayed in that batch

        # Moved later, whole: the new job went with it, exactly once.
        stored = await _fetch(
            settings.databases["archive"],
            "SELECT jsonb_path_query_array(dependents, '$.ocr_jobs[*].id') AS jobs "
            "FROM archived_media WHERE original_id = $1",
            highest,
        )
        assert len(stored) == 1
        assert msgspec.json.decode(stored[0]["jobs"]) == [job["id"]]
        assert await _value(default, "SELECT count(*) FROM ocr_jobs WHERE id = $1", job["id"]) == 0
        assert await _value(default, "SELECT count(*) FROM media") == 0

        await _run(env, "unarchive", *TABLES)
        after = await snapshot(default)
        assert after["ocr_jobs"] == sorted([*before["ocr_jobs"], job[1]])
        assert {table: rows for table, rows in after.items() if table != "ocr_jobs"} == {
            table: rows for table, rows in before.items() if table != "ocr_jobs"
        }


# ---- a replica that lags -------------------------------------------------------------


@contextlib.contextmanager
def _replica(primary: EmbeddedPostgres) -> Iterator[EmbeddedPostgres]:
    """A streaming replica of the embedded cluster (the dev stack's ``create_replica``: its
    own port and TLS front), stopped and removed at the end."""
    folder = ROOT / ".data" / f"replica-{secrets.token_hex(4)}"
    replica = primary.create_replica(folder)
    try:
        replica.start()
        yield replica
    finally:
        replica.stop(mode="immediate")
        shutil.rmtree(folder, ignore_errors=True)


async def _on(server: EmbeddedPostgres, sql: str) -> None:
    conn = await server.admin_settings().connect(timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _replay_lag_ms(default: DatabaseSettings, *, tick: bool) -> float | None:
    """The replica's replay lag as the primary sees it (None: no lag measured). ``tick``
    writes a little WAL first: the replica answers each piece it receives, and each answer
    is a new lag measurement."""
    conn = await default.connect(timeout=10)
    try:
        if tick:
            await conn.execute("SELECT pg_logical_emit_message(false, 'multidb-test', 'tick')")
        lag = await conn.fetchval(
            "SELECT max(extract(epoch FROM replay_lag) * 1000) FROM pg_stat_replication "
            "WHERE state = 'streaming'"
        )
        return None if lag is None else float(lag)
    finally:
        await conn.close()


async def test_the_mover_pauses_while_a_replica_lags_and_stops_saying_why(
    database_env: dict[str, str], embedded: EmbeddedPostgres | None
) -> None:
    if embedded is None:
        pytest.skip("needs the embedded cluster to make a replica of")
    bound_ms = 500
    async with mover_databases(
        database_env,
        MULTI_DB_ARCHIVE_MAX_SOURCE_LAG_MS=str(bound_ms),
        MULTI_DB_ARCHIVE_MAX_PAUSE_S="2",
    ) as (env, settings):
        default = settings.databases["default"]
        await seed(default, users=2)
        before = await snapshot(default)
        with _replica(embedded) as replica:

            async def streaming() -> bool:
                return await _replay_lag_ms(default, tick=True) is not None

            await _until(streaming, "the replica streaming, its lag measured")
            await _on(replica, "SELECT pg_wal_replay_pause()")

            async def lagging() -> bool:
                lag = await _replay_lag_ms(default, tick=True)
                return lag is not None and lag > bound_ms * 2

            await _until(lagging, f"the paused replica lagging more than {bound_ms * 2} ms")

            with _mover(env) as mover:
                finished = await mover.finished()
            assert finished.code == 1, finished
            report = finished.report
            assert report is not None
            assert report.state == "stopped", report
            message = report.message or ""
            assert message.startswith("stopped after pausing"), message
            assert "replica" in message
            assert f"(more than {bound_ms} ms)" in message
            assert "paused: replica" in finished.stderr  # said while it waited
            assert await snapshot(default) == before  # it paused before its first batch

            await _on(replica, "SELECT pg_wal_replay_resume()")

            async def caught_up() -> bool:
                lag = await _replay_lag_ms(default, tick=False)
                return lag is None or lag < bound_ms / 2

            await _until(caught_up, "the replica caught up")
            report = await _run({**env, "MULTI_DB_ARCHIVE_MAX_PAUSE_S": "60"})
            assert report.models["Media"].rows == 4
            assert report.models["User"].rows == 2
