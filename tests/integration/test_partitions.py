"""Daily partitions of the log and event tables (multidb.partitions), on real PostgreSQL.

The migration from plain tables runs with rows in place and back (on the session's own
databases, put back at head whatever happens); retention drops whole old partitions and
keeps recent rows; creating partitions is idempotent, also when two run at once; each
role's service runs the ``partitions`` job and shows it in ``/readyz``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import asyncpg
import pytest

from multidb import migrations
from multidb.partitions import (
    AHEAD_DAYS,
    days,
    drop_partitions_before,
    ensure_daily_partitions,
    keep_partitions,
    partition_name,
    partition_window,
    utc_today,
)
from multidb.roles import RoleSpec
from multidb.settings import DatabaseSettings, Settings
from tests.conftest import bearer

DEADLINE_S = 30.0
MARK = "test-partitions"


@dataclass(frozen=True)
class Partitioned:
    """A partitioned table, its timestamp and how a marked row of this test is made."""

    name: str
    ts: str
    mark: str  # the column holding MARK
    columns: str  # the columns a row needs besides the timestamp...
    values: str  # ...and their values, $1 being MARK

    @property
    def insert(self) -> str:
        """$1: MARK, $2: the timestamp."""
        return f"INSERT INTO {self.name} ({self.columns}, {self.ts}) VALUES ({self.values}, $2)"

    @property
    def insert_event(self) -> str:
        """$1: MARK, $2: the timestamp, $3: the event id; the new id back."""
        return (
            f"INSERT INTO {self.name} ({self.columns}, {self.ts}, event_id)"
            f" VALUES ({self.values}, $2, $3)"
        )


@dataclass(frozen=True)
class Role:
    previous: str  # the revision before the partitions
    tables: tuple[Partitioned, ...]

    def retention(self, settings: Settings, name: str) -> int:
        return settings.log_retention_days if name == "logging" else settings.events_retention_days


ROLES = {
    "logging": Role(
        previous="0003",
        tables=(
            Partitioned(
                "application_logs",
                "created_at",
                "logger",
                "level, logger, message",
                "'INFO', $1, 'a line'",
            ),
            Partitioned(
                "error_logs",
                "created_at",
                "error_type",
                "error_type, message, stack_trace",
                "$1, 'boom', 'Traceback ...'",
            ),
        ),
    ),
    "analytics": Role(
        previous="0002",
        tables=(
            Partitioned(
                "analytics_events",
                "occurred_at",
                "name",
                "name, properties",
                """$1, '{"k": 1}'""",
            ),
            Partitioned("user_activities", "created_at", "activity", "user_id, activity", "7, $1"),
        ),
    ),
}


async def fetch(database: DatabaseSettings, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await database.connect()
    try:
        rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
        return rows
    finally:
        await conn.close()


async def rows_of(database: DatabaseSettings, table: Partitioned) -> list[tuple[Any, ...]]:
    """Every row of the table (this test's and others'): id, timestamp, mark column."""
    found = await fetch(
        database, f"SELECT id, {table.ts}, {table.mark} FROM {table.name} ORDER BY id"
    )
    return [tuple(row) for row in found]


async def partitions_of(database: DatabaseSettings, table: str) -> set[str]:
    found = await fetch(
        database,
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = $1::regclass",
        table,
    )
    return {row[0] for row in found}


async def relkind(database: DatabaseSettings, table: str) -> str:
    found = await fetch(
        database, "SELECT relkind::text FROM pg_class WHERE oid = $1::regclass", table
    )
    return str(found[0][0])


def utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


async def clean_up(database: DatabaseSettings, role: str, settings: Settings) -> None:
    """Remove this test's rows and the partitions older than the retention it left."""
    spec = ROLES[role]
    first, _ = partition_window(utc_today(), spec.retention(settings, role))
    conn = await database.connect()
    try:
        async with conn.transaction():
            for table in spec.tables:
                await conn.execute(f"DELETE FROM {table.name} WHERE {table.mark} = $1", MARK)
                await drop_partitions_before(conn, table.name, first)
            if role == "analytics":
                await conn.execute("DELETE FROM analytics_event_rollups WHERE name = $1", MARK)
    finally:
        await conn.close()


@pytest.fixture
async def at_head(
    settings: Settings, roles: dict[str, RoleSpec], request: pytest.FixtureRequest
) -> AsyncIterator[str]:
    """The role under test; its database is back at head, without this test's rows, after."""
    role: str = request.param
    yield role
    database = settings.databases[role]
    await asyncio.to_thread(migrations.upgrade, roles[role], "head", database)
    await clean_up(database, role, settings)


@pytest.mark.parametrize("at_head", list(ROLES), indirect=True)
async def test_the_migration_keeps_every_row_and_id_and_goes_back(
    at_head: str, settings: Settings, roles: dict[str, RoleSpec]
) -> None:
    role, spec = ROLES[at_head], roles[at_head]
    database = settings.databases[at_head]
    await asyncio.to_thread(migrations.downgrade, spec, role.previous, database)
    for table in role.tables:
        assert await relkind(database, table.name) == "r"

    # Rows spanning several days, some far older than the retention, one ahead.
    now = datetime.now(UTC)
    ages = [400, 95, 31, 3, 1, 0, -1]
    stamps = [now - timedelta(days=age, hours=i) for i, age in enumerate(ages)]
    conn = await database.connect()
    try:
        for table in role.tables:
            await conn.executemany(table.insert, [(MARK, stamp) for stamp in stamps])
    finally:
        await conn.close()
    before = {table.name: await rows_of(database, table) for table in role.tables}

    await asyncio.to_thread(migrations.upgrade, spec, "head", database)
    window = set(days(*partition_window(utc_today(), role.retention(settings, at_head))))
    added: dict[str, list[int]] = {}
    for table in role.tables:
        assert await rows_of(database, table) == before[table.name]
        assert await relkind(database, table.name) == "p"
        # A partition for every day a row falls on, and for the days kept.
        row_days = {utc_day(row[1]) for row in before[table.name]}
        assert await partitions_of(database, table.name) == {
            partition_name(table.name, day) for day in row_days | window
        }
        # New rows go in, ids carry on from the old sequence, event_id is unique per time.
        stamp = datetime.now(UTC)
        (row,) = await fetch(database, f"{table.insert_event} RETURNING id", MARK, stamp, "e1")
        assert row["id"] > max(row[0] for row in before[table.name])
        again = f"{table.insert_event} ON CONFLICT DO NOTHING RETURNING id"
        assert await fetch(database, again, MARK, stamp, "e1") == []
        with pytest.raises(asyncpg.UniqueViolationError):
            await fetch(database, table.insert_event, MARK, stamp, "e1")
        # The same event id at another time is another row; rows without one never conflict.
        later = stamp + timedelta(microseconds=1)
        added[table.name] = [
            row["id"],
            *[
                other["id"]
                for args in ((MARK, later, "e1"), (MARK, stamp, None), (MARK, stamp, None))
                for other in await fetch(database, f"{table.insert_event} RETURNING id", *args)
            ],
        ]
        assert len(added[table.name]) == 4
        # Outside every partition: refused, never stored in a catch-all.
        far = now + timedelta(days=AHEAD_DAYS + 30)
        with pytest.raises(asyncpg.CheckViolationError, match="no partition"):
            await fetch(database, table.insert, MARK, far)
    if at_head == "logging":
        (error,) = await fetch(
            database, "SELECT level, logger FROM error_logs WHERE id = $1", added["error_logs"][0]
        )
        assert (error["level"], error["logger"]) == ("ERROR", None)
    else:
        # The rollups start with the events already stored: one per hour of this test.
        buckets = await fetch(
            database,
            "SELECT bucket, events FROM analytics_event_rollups WHERE name = $1 ORDER BY bucket",
            MARK,
        )
        hours = sorted(stamp.replace(minute=0, second=0, microsecond=0) for stamp in stamps)
        assert [(row["bucket"], row["events"]) for row in buckets] == [(h, 1) for h in hours]

    # Down again: plain tables, every row (the new ones too) with its id.
    await asyncio.to_thread(migrations.downgrade, spec, role.previous, database)
    kept = {}
    for table in role.tables:
        assert await relkind(database, table.name) == "r"
        kept[table.name] = await rows_of(database, table)
        assert kept[table.name][: len(before[table.name])] == before[table.name]
        assert [row[0] for row in kept[table.name][len(before[table.name]) :]] == added[table.name]
        (row,) = await fetch(database, f"{table.insert} RETURNING id", MARK, now)
        assert row["id"] > max(added[table.name])
        kept[table.name] = await rows_of(database, table)

    # And up once more.
    await asyncio.to_thread(migrations.upgrade, spec, "head", database)
    for table in role.tables:
        assert await rows_of(database, table) == kept[table.name]
        assert await relkind(database, table.name) == "p"


async def test_retention_drops_whole_old_partitions_and_keeps_recent_rows(
    settings: Settings,
) -> None:
    database = settings.databases["logging"]
    today = utc_today()
    first = today - timedelta(days=30)
    old_days = list(days(today - timedelta(days=45), first - timedelta(days=1)))
    midnight = datetime.combine(first, time(), UTC)
    stamps = {
        "dropped: a second before the first day kept": midnight - timedelta(seconds=1),
        "dropped: long ago": midnight - timedelta(days=14, hours=-12),
        "kept: the first instant of the first day": midnight,
        "kept: now": datetime.now(UTC),
    }
    conn = await database.connect()
    try:
        async with conn.transaction():
            created = await ensure_daily_partitions(conn, "application_logs", old_days[0], first)
        assert created == [partition_name("application_logs", day) for day in old_days]
        await conn.executemany(
            "INSERT INTO application_logs (level, logger, message, created_at)"
            " VALUES ('INFO', $1, $2, $3)",
            [(MARK, what, stamp) for what, stamp in stamps.items()],
        )
        async with conn.transaction():
            created, dropped = await keep_partitions(conn, ["application_logs"], 30, today)
        assert created == []
        assert set(
            created_names := [partition_name("application_logs", d) for d in old_days]
        ) <= set(dropped), (created_names, dropped)
        left = await conn.fetch(
            "SELECT message FROM application_logs WHERE logger = $1 ORDER BY created_at", MARK
        )
        assert [row[0] for row in left] == [what for what in stamps if what.startswith("kept")]
        assert await partitions_of(database, "application_logs") >= {
            partition_name("application_logs", day)
            for day in days(first, today + timedelta(days=AHEAD_DAYS))
        }
        kept_days = {
            name.removeprefix("application_logs_p")
            for name in await partitions_of(database, "application_logs")
        }
        assert min(kept_days) == f"{first:%Y%m%d}"
        # A second pass finds nothing to do.
        async with conn.transaction():
            assert await keep_partitions(conn, ["application_logs"], 30, today) == ([], [])
    finally:
        await conn.close()
        await clean_up(database, "logging", settings)


async def test_ensure_is_idempotent_also_when_two_run_at_once(settings: Settings) -> None:
    database = settings.databases["logging"]
    first = utc_today() + timedelta(days=200)
    last = first + timedelta(days=3)
    expected = [partition_name("error_logs", day) for day in days(first, last)]
    one, two = await database.connect(), await database.connect()

    async def ensure(conn: asyncpg.Connection) -> list[str]:
        async with conn.transaction():
            return await ensure_daily_partitions(conn, "error_logs", first, last)

    try:
        a, b = await asyncio.gather(ensure(one), ensure(two))
        assert sorted(a + b) == expected  # each created once, by one or the other
        assert await ensure(one) == []
        assert set(expected) <= await partitions_of(database, "error_logs")
        # A row of those days goes to its partition.
        stamp = datetime.combine(last, time(23, 59), UTC)
        await one.execute(
            "INSERT INTO error_logs (error_type, message, created_at) VALUES ($1, 'x', $2)",
            MARK,
            stamp,
        )
        assert await one.fetchval(f"SELECT count(*) FROM {expected[-1]}") == 1
        with pytest.raises(ValueError, match="not a partitioned table"):
            await ensure_daily_partitions(one, "access_logs", first, last)
        assert await ensure_daily_partitions(one, "error_logs", last, first) == []
    finally:
        for name in expected:
            await one.execute(f'DROP TABLE IF EXISTS "{name}"')
        await one.close()
        await two.close()


@pytest.mark.parametrize("role", list(ROLES))
async def test_the_service_runs_the_partitions_job(
    service_client: Any,
    settings: Settings,
    role: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    database = settings.databases[role]
    table = ROLES[role].tables[0]
    retention = ROLES[role].retention(settings, role)
    old = utc_today() - timedelta(days=retention + 5)
    conn = await database.connect()
    try:
        async with conn.transaction():
            await ensure_daily_partitions(conn, table.name, old, old)
        await conn.execute(table.insert, MARK, datetime.combine(old, time(12), UTC))
    finally:
        await conn.close()
    caplog.set_level(logging.INFO, logger="multidb.partitions")
    try:
        async with service_client(role) as client:
            deadline = asyncio.get_running_loop().time() + DEADLINE_S
            while True:
                jobs = (await client.get("/readyz")).json()["jobs"]
                (job,) = [job for job in jobs if job["name"] == "partitions"]
                if job["runs"] + job["failures"] >= 1:
                    break
                assert asyncio.get_running_loop().time() < deadline, jobs
                await asyncio.sleep(0.05)
        assert (job["failures"], job["last_error"]) == (0, None)
        assert job["last_ok_at"] is not None
        assert job["interval_s"] == 3600
        assert partition_name(table.name, old) not in await partitions_of(database, table.name)
        assert (
            await fetch(database, f"SELECT id FROM {table.name} WHERE {table.mark} = $1", MARK)
            == []
        )
        lines = [r.getMessage() for r in caplog.records if r.name == "multidb.partitions"]
        assert any(partition_name(table.name, old) in line for line in lines), lines
    finally:
        await clean_up(database, role, settings)


async def test_the_rollups_are_a_system_table_out_of_executes_reach(service_client: Any) -> None:
    writer = bearer("db:read", "db:execute", "db:write")
    async with service_client("analytics") as client:
        for query, read_only in (
            ("SELECT * FROM analytics_event_rollups", True),
            ("DELETE FROM analytics_event_rollups", False),
        ):
            answer = await client.post(
                "/execute", json={"query": query, "read_only": read_only}, headers=writer
            )
            assert answer.status_code == 400, answer.text
            assert answer.json()["sqlstate"] == "42501"  # insufficient_privilege
        # The partitioned tables stay readable, through their parent.
        answer = await client.post(
            "/execute", json={"query": "SELECT count(*) FROM analytics_events"}, headers=writer
        )
        assert answer.status_code == 200, answer.text
