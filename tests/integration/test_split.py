"""``multidb split`` as a person runs it: a real process, a real monolith, real targets.

The monolith (:mod:`tests.monolith`: every built-in role's first revision in one database,
3,000 generated rows per table over four days) is built once as a template; each test
splits a fresh copy of it into freshly created, empty databases of the analytics, logging
and archive roles, while the default role's database is the monolith itself (left as it
is). The copies are checked with the tests' own digest (an ordered ``string_agg`` of every
source column), not with the command's checksum.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from multidb import migrations
from multidb.plugins import get_roles
from multidb.roles import RoleSpec
from multidb.settings import DatabaseSettings, variable_name
from multidb_devstack.embedded import EmbeddedPostgres, free_port
from tests import monolith

ROWS = 3000
TEMPLATE = "split_monolith_template"
SOURCE = "split_source"
TARGETS = {role: f"split_{role}" for role in ("analytics", "logging", "archive")}
SPLIT_TABLES = {
    "analytics": ("analytics_events", "user_activities", "system_metrics"),
    "logging": ("application_logs", "error_logs", "access_logs"),
    "archive": ("archived_media", "archived_people", "archived_users"),
}
DEFAULT_TABLES = (
    "users",
    "people",
    "media",
    "identity_documents",
    "audit_logs",
    "ocr_jobs",
    "mediables",
)
SESSION = {"TimeZone": "UTC", "extra_float_digits": "1", "DateStyle": "ISO, YMD"}


@pytest.fixture(scope="module")
def cluster(embedded: EmbeddedPostgres | None) -> EmbeddedPostgres:
    if embedded is None:
        pytest.skip("the split tests create databases on the embedded server")
    return embedded


def _settings(cluster: EmbeddedPostgres, spec: RoleSpec, name: str) -> DatabaseSettings:
    return cluster.database_settings(spec, database=name)


async def _recreate(cluster: EmbeddedPostgres, names: list[str], template: str | None) -> None:
    admin = await cluster.database_settings(get_roles()["default"], database="postgres").connect()
    try:
        for name in names:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            suffix = f' TEMPLATE "{template}"' if template else ""
            await admin.execute(f'CREATE DATABASE "{name}"{suffix}')
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def template(cluster: EmbeddedPostgres, roles: dict[str, RoleSpec]) -> DatabaseSettings:
    """The monolith every test copies (built once per module)."""
    asyncio.run(_recreate(cluster, [TEMPLATE], None))
    database = _settings(cluster, roles["default"], TEMPLATE)
    monolith.create_tables(database, roles)
    start = datetime.now(UTC) - timedelta(days=4)
    asyncio.run(monolith.fill(database, 1, ROWS, start, timedelta(days=4) / ROWS))
    return database


@dataclass
class Stage:
    cluster: EmbeddedPostgres
    env: dict[str, str]
    url: str
    password: str
    source: DatabaseSettings
    targets: dict[str, DatabaseSettings]


@pytest.fixture
def stage(
    cluster: EmbeddedPostgres, roles: dict[str, RoleSpec], template: DatabaseSettings
) -> Stage:
    """A fresh copy of the monolith (also the default role's database) and empty targets."""
    asyncio.run(_recreate(cluster, [SOURCE], TEMPLATE))
    asyncio.run(_recreate(cluster, list(TARGETS.values()), None))
    builtin = {name: roles[name] for name in monolith.ROLES}
    env = {**os.environ, **cluster.environment(builtin), "MULTI_DB_ENV_FILE": os.devnull}
    env[variable_name(roles["default"], "database")] = SOURCE
    for role, name in TARGETS.items():
        env[variable_name(roles[role], "database")] = name
    source = _settings(cluster, roles["default"], SOURCE)
    url = source.url("postgresql").render_as_string(hide_password=False)
    return Stage(
        cluster=cluster,
        env=env,
        url=url,
        password=source.password,
        source=source,
        targets={role: _settings(cluster, roles[role], name) for role, name in TARGETS.items()},
    )


def _split(stage: Stage, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "multidb.cli", "split", "--quiet", *args],
        env=stage.env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


async def _with(database: DatabaseSettings, work: object) -> object:
    conn = await database.connect(server_settings=SESSION)
    try:
        return await work(conn)  # type: ignore[operator]
    finally:
        await conn.close()


async def _tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
    )
    return {row[0] for row in rows}


async def _digest(conn: asyncpg.Connection, table: str, columns: list[str]) -> tuple[int, str]:
    listed = ", ".join(f'"{name}"' for name in columns)
    row = await conn.fetchrow(
        f"SELECT count(*), md5(string_agg(ROW({listed})::text, '|' ORDER BY id)) FROM {table}"
    )
    assert row is not None
    return row[0], row[1]


async def _source_state(database: DatabaseSettings) -> dict[str, tuple[int, str]]:
    """Every table of the source with its row count and digest."""

    async def read(conn: asyncpg.Connection) -> dict[str, tuple[int, str]]:
        state = {}
        for table in sorted(await _tables(conn)):
            if table.startswith("alembic_version"):
                continue
            state[table] = await _digest(conn, table, await _columns(conn, table))
        return state

    return await _with(database, read)  # type: ignore[return-value]


async def _target_tables(stage: Stage) -> dict[str, set[str]]:
    return {
        role: await _with(database, _tables)  # type: ignore[misc]
        for role, database in stage.targets.items()
    }


async def _columns(conn: asyncpg.Connection, table: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass"
        " AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        table,
    )
    return [row[0] for row in rows]


async def _same_rows(original: DatabaseSettings, copy: DatabaseSettings, table: str) -> None:
    source = await original.connect(server_settings=SESSION)
    target = await copy.connect(server_settings=SESSION)
    try:
        names = await _columns(source, table)  # the target may have more (event_id, ...)
        expected = await _digest(source, table, names)
        assert await _digest(target, table, names) == expected, table
        assert expected[0] == ROWS
    finally:
        await source.close()
        await target.close()


def _assert_copied(stage: Stage, original: DatabaseSettings) -> None:
    """Every split table of every target holds exactly the original's rows."""
    for role, tables in SPLIT_TABLES.items():
        for table in tables:
            asyncio.run(_same_rows(original, stage.targets[role], table))


def _nothing_changed(stage: Stage, before: dict[str, tuple[int, str]]) -> None:
    assert asyncio.run(_source_state(stage.source)) == before
    assert asyncio.run(_target_tables(stage)) == {role: set() for role in TARGETS}


def _one_line(answer: subprocess.CompletedProcess[str], stage: Stage) -> str:
    assert answer.returncode == 2, (answer.stdout, answer.stderr)
    assert "Traceback" not in answer.stderr
    lines = answer.stderr.strip().splitlines()
    assert len(lines) == 1, answer.stderr
    assert stage.password not in answer.stderr
    assert answer.stdout == ""
    return lines[0]


def test_split_copies_every_table_and_every_checksum_matches(
    stage: Stage, template: DatabaseSettings
) -> None:
    before = asyncio.run(_source_state(stage.source))
    done = _split(stage, "--source", stage.url)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "default: its database 'split_source' is the source: left as it is" in out
    for role, tables in SPLIT_TABLES.items():
        for table in tables:
            line = next(line for line in out.splitlines() if line.startswith(f"{role}.{table} "))
            assert "3,000" in line
            assert line.rstrip().endswith("ok"), line
    assert "verification" in out
    assert stage.password not in out
    _assert_copied(stage, template)
    # The source is only read.
    assert asyncio.run(_source_state(stage.source)) == before

    async def new_rows(conn: asyncpg.Connection) -> list[int]:
        # Sequences were moved past the copied ids: new rows do not collide.
        metric = await conn.fetchval(
            "INSERT INTO system_metrics (name, value) VALUES ('x', 1) RETURNING id"
        )
        event = await conn.fetchval(
            "INSERT INTO analytics_events (name, occurred_at) VALUES ('x', now()) RETURNING id"
        )
        return [metric, event]

    async def rolled_up(conn: asyncpg.Connection) -> int:
        # The analytics role rebuilt its hourly rollups from the copied events.
        value: int = await conn.fetchval("SELECT sum(events) FROM analytics_event_rollups")
        return value

    assert asyncio.run(_with(stage.targets["analytics"], rolled_up)) == ROWS
    assert asyncio.run(_with(stage.targets["analytics"], new_rows)) == [ROWS + 1, ROWS + 1]


def test_dry_run_changes_nothing(stage: Stage) -> None:
    before = asyncio.run(_source_state(stage.source))
    done = _split(stage, "--source", stage.url, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "dry run: nothing changed" in done.stdout
    for tables in SPLIT_TABLES.values():
        for table in tables:
            assert table in done.stdout
    assert "27,000" in done.stdout  # the 9 tables of three roles, 3,000 rows each
    _nothing_changed(stage, before)

    # The password may stay out of the URL (and so out of the process list): PGPASSWORD.
    bare = stage.source.url("postgresql").set(password=None).render_as_string(hide_password=False)
    stage.env["PGPASSWORD"] = stage.password
    again = _split(stage, "--source", bare, "--dry-run")
    assert again.returncode == 0, again.stderr
    _nothing_changed(stage, before)


def test_a_target_that_is_not_empty_is_refused(stage: Stage, roles: dict[str, RoleSpec]) -> None:
    migrations.upgrade(roles["analytics"], "head", stage.targets["analytics"])

    async def one_row(conn: asyncpg.Connection) -> None:
        await conn.execute("INSERT INTO system_metrics (name, value) VALUES ('there', 1)")

    asyncio.run(_with(stage.targets["analytics"], one_row))
    before = asyncio.run(_source_state(stage.source))
    line = _one_line(_split(stage, "--source", stage.url), stage)
    assert "not empty: analytics.system_metrics" in line
    assert "--resume" in line
    assert asyncio.run(_source_state(stage.source)) == before
    tables = asyncio.run(_target_tables(stage))
    assert tables["logging"] == tables["archive"] == set()  # not even migrated

    async def count(conn: asyncpg.Connection) -> int:
        return int(await conn.fetchval("SELECT count(*) FROM system_metrics"))

    assert asyncio.run(_with(stage.targets["analytics"], count)) == 1


def test_an_interrupted_split_resumes_and_every_checksum_matches(
    stage: Stage, roles: dict[str, RoleSpec], template: DatabaseSettings
) -> None:
    # The logging target is migrated first, so that the test can hold a lock on one day's
    # partition of application_logs: the copy stops there, after the earlier days' batches.
    migrations.upgrade(roles["logging"], "head", stage.targets["logging"])

    async def blocked_day(conn: asyncpg.Connection) -> str:
        day = await conn.fetchval(
            "SELECT (created_at AT TIME ZONE 'UTC')::date FROM application_logs WHERE id = $1",
            ROWS * 2 // 3,
        )
        return f"application_logs_p{day:%Y%m%d}"

    partition: str = asyncio.run(_with(stage.source, blocked_day))  # type: ignore[assignment]

    async def interrupt() -> subprocess.CompletedProcess[str]:
        holder = await stage.targets["logging"].connect()
        watcher = await stage.targets["logging"].connect()
        try:
            await holder.execute("BEGIN")
            await holder.execute(f'LOCK TABLE "{partition}" IN SHARE MODE')
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "multidb.cli",
                "split",
                "--quiet",
                "--source",
                stage.url,
                "--batch-rows",
                "100",
                env=stage.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )

            async def waiting_with_rows() -> bool:
                if process.returncode is not None:
                    out, err = await process.communicate()
                    pytest.fail(f"the split ended first: {out.decode()} {err.decode()}")
                waits = await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                    "'multidb split' AND datname = $1 AND wait_event_type = 'Lock'",
                    TARGETS["logging"],
                )
                copied = await watcher.fetchval("SELECT count(*) FROM application_logs")
                return bool(waits) and copied > 0

            deadline = asyncio.get_running_loop().time() + 120
            while not await waiting_with_rows():
                assert asyncio.get_running_loop().time() < deadline, "the split never blocked"
                await asyncio.sleep(0.05)  # polling observable state, not papering over a race
            copied = await watcher.fetchval("SELECT count(*) FROM application_logs")
            assert 0 < copied < ROWS
            process.send_signal(signal.SIGKILL)
            out, err = await process.communicate()
            return subprocess.CompletedProcess(
                [], process.returncode or 0, out.decode(), err.decode()
            )
        finally:
            await holder.execute("ROLLBACK")
            await holder.close()
            await watcher.close()

    killed = asyncio.run(interrupt())
    assert killed.returncode == -signal.SIGKILL

    refused = _split(stage, "--source", stage.url)
    assert "not empty" in _one_line(refused, stage)

    resumed = _split(stage, "--source", stage.url, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    line = next(x for x in resumed.stdout.splitlines() if x.startswith("logging.application_logs"))
    assert "ok (resumed)" in line
    assert "DIFFERS" not in resumed.stdout
    _assert_copied(stage, template)


def test_source_tables_are_dropped_only_after_verification(
    stage: Stage, roles: dict[str, RoleSpec], template: DatabaseSettings
) -> None:
    # A target that changes what it stores: its checksum differs, nothing is dropped.
    migrations.upgrade(roles["archive"], "head", stage.targets["archive"])

    async def tamper(conn: asyncpg.Connection) -> None:
        await conn.execute(
            "CREATE FUNCTION tamper() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN NEW.reason := 'tampered'; RETURN NEW; END $$"
        )
        await conn.execute(
            "CREATE TRIGGER tamper BEFORE INSERT ON archived_users "
            "FOR EACH ROW EXECUTE FUNCTION tamper()"
        )

    asyncio.run(_with(stage.targets["archive"], tamper))
    before = asyncio.run(_source_state(stage.source))
    differs = _split(stage, "--source", stage.url, "--drop-source-tables")
    assert differs.returncode == 1, differs.stderr
    line = next(x for x in differs.stdout.splitlines() if x.startswith("archive.archived_users"))
    assert "DIFFERS" in line
    assert "the source was left as it is" in differs.stdout
    assert asyncio.run(_source_state(stage.source)) == before

    async def untamper(conn: asyncpg.Connection) -> None:
        await conn.execute("DROP TRIGGER tamper ON archived_users")
        await conn.execute("TRUNCATE archived_media, archived_people, archived_users")

    asyncio.run(_with(stage.targets["archive"], untamper))
    asyncio.run(_recreate(stage.cluster, [TARGETS["analytics"], TARGETS["logging"]], None))

    dropped = _split(stage, "--source", stage.url, "--drop-source-tables")
    assert dropped.returncode == 0, dropped.stderr
    assert "dropped from the source: " in dropped.stdout
    left = asyncio.run(_with(stage.source, _tables))
    assert left == {*DEFAULT_TABLES, *(f"alembic_version_{role}" for role in monolith.ROLES)}
    _assert_copied(stage, template)


def test_bad_input_is_one_line_and_changes_nothing(stage: Stage) -> None:
    before = asyncio.run(_source_state(stage.source))

    unparsed = _one_line(
        _split(stage, "--source", f"postgresql://postgres:{stage.password}@127.0.0.1:port/x"),
        stage,
    )
    assert unparsed.startswith("multidb split: --source")

    refused_url = f"postgresql://postgres:{stage.password}@127.0.0.1:{free_port()}/monolith"
    refused = _one_line(_split(stage, "--source", refused_url), stage)
    assert "cannot connect to the source" in refused
    assert "postgres:***@127.0.0.1" in refused

    async def drop_two(conn: asyncpg.Connection) -> None:
        await conn.execute("DROP TABLE error_logs, system_metrics")

    asyncio.run(_with(stage.source, drop_two))
    before.pop("error_logs")
    before.pop("system_metrics")
    lacking = _one_line(_split(stage, "--source", stage.url), stage)
    assert "the source lacks the expected tables" in lacking
    assert "analytics.system_metrics" in lacking
    assert "logging.error_logs" in lacking
    _nothing_changed(stage, before)


def _failed_line(answer: subprocess.CompletedProcess[str], stage: Stage) -> str:
    """The one line on stderr of a split that failed once something changed (exit 1)."""
    assert answer.returncode == 1, (answer.stdout, answer.stderr)
    assert "Traceback" not in answer.stderr
    lines = answer.stderr.strip().splitlines()
    assert len(lines) == 1, answer.stderr
    assert stage.password not in answer.stderr
    return lines[0]


async def _blocked_split(
    stage: Stage,
    database: DatabaseSettings,
    lock: str,
    while_blocked: Callable[[asyncpg.Connection], Awaitable[None]],
    *args: str,
) -> subprocess.CompletedProcess[str]:
    """Run the split while this test holds ``lock`` (a LOCK TABLE statement) in
    ``database``; once the split waits for it, ``while_blocked`` (given the connection
    holding the lock, inside its transaction), then the transaction commits, releasing the
    lock. The split must end within a minute of that."""
    holder = await database.connect(server_settings=SESSION)
    watcher = await database.connect()
    process = None
    try:
        await holder.execute("BEGIN")
        await holder.execute(lock)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "multidb.cli", "split", "--quiet", "--source", stage.url, *args),
            env=stage.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        while not await watcher.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'multidb split'"
            " AND datname = current_database() AND wait_event_type = 'Lock'"
        ):
            if process.returncode is not None:
                out, err = await process.communicate()
                pytest.fail(f"the split ended first: {out.decode()} {err.decode()}")
            assert loop.time() < deadline, "the split never blocked"
            await asyncio.sleep(0.05)  # polling observable state, not papering over a race
        await while_blocked(holder)
        await holder.execute("COMMIT")
        try:
            out, err = await asyncio.wait_for(process.communicate(), 60)
        except TimeoutError:
            sessions = await watcher.fetch(
                "SELECT datname, state, wait_event_type, wait_event, left(query, 60) AS query"
                " FROM pg_stat_activity WHERE application_name = 'multidb split'"
            )
            process.kill()
            out, err = await process.communicate()
            shown = [dict(row) for row in sessions]
            pytest.fail(f"the split still ran a minute after it was unblocked: {shown} {err!r}")
        return subprocess.CompletedProcess([], process.returncode or 0, out.decode(), err.decode())
    finally:
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()
        await holder.close()
        await watcher.close()


def test_rows_written_to_the_source_after_its_snapshot_keep_it_from_being_dropped(
    stage: Stage, template: DatabaseSettings
) -> None:
    # The test's lock lets the split read the table, and the test write to it, but not the
    # split drop it: once the split waits to drop, the test adds a row, after the snapshot
    # the split copied and verified.
    async def add_row(holder: asyncpg.Connection) -> None:
        await holder.execute(
            "INSERT INTO archived_users (id, original_id, username, archived_at, data)"
            " VALUES ($1, $1, 'late', now(), '{}')",
            ROWS + 1,
        )

    changed = asyncio.run(
        _blocked_split(
            stage,
            stage.source,
            "LOCK TABLE archived_users IN SHARE ROW EXCLUSIVE MODE",
            add_row,
            "--drop-source-tables",
        )
    )
    line = _failed_line(changed, stage)
    assert "the source changed after its snapshot (table archive.archived_users)" in line
    assert "nothing was dropped" in line
    assert "--resume" in line
    left = asyncio.run(_with(stage.source, _tables))
    assert {*SPLIT_TABLES["archive"], *SPLIT_TABLES["logging"]} <= left  # type: ignore[operator]

    async def late_row(conn: asyncpg.Connection) -> int:
        return int(
            await conn.fetchval("SELECT count(*) FROM archived_users WHERE id = $1", ROWS + 1)
        )

    assert asyncio.run(_with(stage.source, late_row)) == 1

    # As the line says: --resume copies the row added after the greatest copied key, then drops.
    resumed = _split(stage, "--source", stage.url, "--resume", "--drop-source-tables")
    assert resumed.returncode == 0, resumed.stderr
    assert "dropped from the source: " in resumed.stdout
    assert asyncio.run(_with(stage.targets["archive"], late_row)) == 1
    left = asyncio.run(_with(stage.source, _tables))
    assert left == {*DEFAULT_TABLES, *(f"alembic_version_{role}" for role in monolith.ROLES)}


def test_a_source_failing_mid_batch_fails_the_split_and_resume_completes(
    stage: Stage, roles: dict[str, RoleSpec]
) -> None:
    # Rows large enough (about 50 MB in all) that the source's COPY of the table cannot
    # finish into the split's buffers while the target's side of it waits on the test's lock.
    async def enlarge(conn: asyncpg.Connection) -> None:
        await conn.execute("UPDATE archived_users SET reason = repeat(md5(id::text), 500)")

    asyncio.run(_with(stage.source, enlarge))
    migrations.upgrade(roles["archive"], "head", stage.targets["archive"])

    async def end_the_source_mid_copy(_: asyncpg.Connection) -> None:
        watcher = await stage.source.connect()
        try:
            deadline = asyncio.get_running_loop().time() + 120
            while not (
                pid := await watcher.fetchval(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = 'multidb split'"
                    " AND datname = current_database() AND wait_event = 'ClientWrite'"
                    " AND query LIKE 'COPY%archived_users%'"
                )
            ):
                if asyncio.get_running_loop().time() > deadline:
                    sessions = await watcher.fetch(
                        "SELECT state, wait_event, left(query, 60) AS query FROM"
                        " pg_stat_activity WHERE application_name = 'multidb split'"
                    )
                    pytest.fail(f"the source never blocked: {[dict(row) for row in sessions]}")
                await asyncio.sleep(0.05)  # polling observable state
            assert await watcher.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await watcher.close()

    failed = asyncio.run(
        _blocked_split(
            stage,
            stage.targets["archive"],
            "LOCK TABLE archived_users IN SHARE MODE",
            end_the_source_mid_copy,
        )
    )
    line = _failed_line(failed, stage)
    assert "--resume" in line

    resumed = _split(stage, "--source", stage.url, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "DIFFERS" not in resumed.stdout
    for table in SPLIT_TABLES["archive"]:
        asyncio.run(_same_rows(stage.source, stage.targets["archive"], table))


def test_a_failure_once_the_targets_changed_is_exit_1_not_bad_input(
    stage: Stage, roles: dict[str, RoleSpec]
) -> None:
    # The archive target is migrated, the copy waits on the test's lock, and meanwhile the
    # target stops accepting connections: the split's next connection to it fails.
    migrations.upgrade(roles["archive"], "head", stage.targets["archive"])
    name = TARGETS["archive"]

    async def refuse_connections(_: asyncpg.Connection) -> None:
        await _with(
            stage.source,
            lambda conn: conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false'),
        )

    try:
        failed = asyncio.run(
            _blocked_split(
                stage,
                stage.targets["archive"],
                "LOCK TABLE archived_users IN SHARE MODE",
                refuse_connections,
                "--jobs",
                "1",
            )
        )
    finally:
        asyncio.run(
            _with(
                stage.source,
                lambda conn: conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true'),
            )
        )
    line = _failed_line(failed, stage)
    assert "archive: cannot connect to its database" in line
    assert "run again with --resume" in line
