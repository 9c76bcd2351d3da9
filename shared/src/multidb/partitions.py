"""Daily range partitions of the log and event tables, and their retention.

A partitioned table (``PARTITION BY RANGE (<ts>)`` on a ``timestamptz`` column, see the
logging and analytics roles' migrations) has one partition per UTC day, named
``<table>_pYYYYMMDD`` and covering ``[day 00:00 UTC, next day 00:00 UTC)``. A role's
service keeps the partitions of ``[today - retention, today + AHEAD_DAYS]`` in place and
drops whole partitions older than that (a background job, see :func:`upkeep_job`);
there is no default partition, so a row outside every partition is refused, never lost
in a catch-all.

Both helpers take a transaction-level advisory lock per table (two service replicas, or
the job and an ingestion path, never create the same partition at once) and run in a
transaction (a savepoint when the caller already has one). A partition is created apart
and then attached (``ATTACH PARTITION`` takes a ``SHARE UPDATE EXCLUSIVE`` lock on the
parent, which writers and readers do not wait for, unlike ``CREATE TABLE ... PARTITION
OF``); dropping one needs the parent's exclusive lock for a moment.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg

from multidb.jobs import BackgroundJob
from multidb.settings import SettingsError, read_environment

if TYPE_CHECKING:
    from multidb.service.runtime import RoleRuntime
    from multidb.settings import Settings

log = logging.getLogger("multidb.partitions")

# Days ahead of today that always have a partition.
AHEAD_DAYS = 7
# The first key of the partition locks ("mdb" + 1); the second names the table.
LOCK_SPACE = 0x6D646201
UPKEEP_INTERVAL_S = 3600.0
UPKEEP_TIMEOUT_S = 120.0
# Dropping a partition waits at most this long for the parent's exclusive lock: a long
# query on the table makes this run fail (and the next one retry), never stalls writers.
LOCK_TIMEOUT_MS = 5000

_PARTITIONS_SQL = """
SELECT c.relname
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = $1::regclass
"""


def quote_identifier(name: str) -> str:
    """``name`` as a double-quoted SQL identifier (quotes inside doubled)."""
    return '"' + name.replace('"', '""') + '"'


def partition_name(table: str, day: date) -> str:
    """The name of ``table``'s partition for the UTC ``day``: ``<table>_pYYYYMMDD``."""
    return f"{table}_p{day:%Y%m%d}"


def partition_window(today: date, retention_days: int) -> tuple[date, date]:
    """The first and last day whose partitions are kept: ``[today - retention, today + 7]``."""
    return today - timedelta(days=retention_days), today + timedelta(days=AHEAD_DAYS)


def days(first: date, last: date) -> Iterator[date]:
    """Every day from ``first`` to ``last``, both included."""
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


def utc_today() -> date:
    return datetime.now(UTC).date()


def create_partition_sql(table: str, day: date) -> tuple[str, str]:
    """The two statements that create ``table``'s partition for ``day`` and attach it."""
    parent = quote_identifier(table)
    partition = quote_identifier(partition_name(table, day))
    start = f"{day.isoformat()} 00:00:00+00"
    end = f"{(day + timedelta(days=1)).isoformat()} 00:00:00+00"
    return (
        f"CREATE TABLE {partition} (LIKE {parent} INCLUDING DEFAULTS)",
        f"ALTER TABLE {parent} ATTACH PARTITION {partition} "
        f"FOR VALUES FROM ('{start}') TO ('{end}')",
    )


# ---- For the migrations that turn a plain table into a partitioned one and back --------


def set_aside_sql(table: str, *, drop_indexes: Sequence[str] = ()) -> list[str]:
    """Rename ``table`` to ``<table>_old`` (its primary key to ``pk_<table>_old``) and drop
    ``drop_indexes``, so that the table's new form can be created under its name."""
    old = f"{table}_old"
    return [
        *(f"DROP INDEX {quote_identifier(index)}" for index in drop_indexes),
        f"ALTER TABLE {quote_identifier(table)} RENAME TO {quote_identifier(old)}",
        f"ALTER TABLE {quote_identifier(old)} RENAME CONSTRAINT "
        f"{quote_identifier('pk_' + table)} TO {quote_identifier('pk_' + old)}",
    ]


def take_sequence_sql(table: str, column: str = "id") -> list[str]:
    """Give ``<table>_<column>_seq`` (the serial of the table's first form) to ``table``'s
    ``column``, as its default: ids continue where they were."""
    sequence = f"{table}_{column}_seq"
    return [
        f"ALTER SEQUENCE {quote_identifier(sequence)} "
        f"OWNED BY {quote_identifier(table)}.{quote_identifier(column)}",
        f"ALTER TABLE {quote_identifier(table)} ALTER COLUMN {quote_identifier(column)} "
        f"SET DEFAULT nextval('{quote_identifier(sequence)}'::regclass)",
    ]


def row_days_sql(table: str, ts_column: str) -> str:
    """A query of the UTC days ``table``'s rows fall on."""
    return (
        f"SELECT DISTINCT ({quote_identifier(ts_column)} AT TIME ZONE 'UTC')::date "
        f"FROM {quote_identifier(table)}"
    )


def move_rows_sql(source: str, target: str, columns: Sequence[str]) -> list[str]:
    """Copy ``columns`` of every row of ``source`` into ``target``, then drop ``source``."""
    listed = ", ".join(quote_identifier(column) for column in columns)
    return [
        f"INSERT INTO {quote_identifier(target)} ({listed}) "
        f"SELECT {listed} FROM {quote_identifier(source)}",
        f"DROP TABLE {quote_identifier(source)}",
    ]


def _lock_key(table: str) -> int:
    key = zlib.crc32(f"partitions:{table}".encode())
    return key - (1 << 32) if key >= 1 << 31 else key


async def _lock_and_list(conn: asyncpg.Connection, table: str) -> set[str]:
    """Take ``table``'s partition lock; the names of its partitions."""
    await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", LOCK_SPACE, _lock_key(table))
    kind = await conn.fetchval(
        "SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)", quote_identifier(table)
    )
    if kind != "p":
        msg = f"{table!r} is not a partitioned table"
        raise ValueError(msg)
    rows = await conn.fetch(_PARTITIONS_SQL, quote_identifier(table))
    return {row[0] for row in rows}


async def ensure_daily_partitions(
    conn: asyncpg.Connection, table: str, first: date, last: date
) -> list[str]:
    """Create ``table``'s missing daily partitions from ``first`` to ``last`` (inclusive);
    the names of those it created, oldest first (none when all were there)."""
    created: list[str] = []
    async with conn.transaction():
        existing = await _lock_and_list(conn, table)
        for day in days(first, last):
            name = partition_name(table, day)
            if name in existing:
                continue
            for statement in create_partition_sql(table, day):
                await conn.execute(statement)
            created.append(name)
    return created


async def drop_partitions_before(conn: asyncpg.Connection, table: str, day: date) -> list[str]:
    """Drop ``table``'s daily partitions of the days before ``day`` (whole partitions, with
    their rows); the names of those dropped, oldest first. Partitions not named
    ``<table>_pYYYYMMDD`` are left alone."""
    pattern = re.compile(re.escape(table) + r"_p(\d{8})")
    dropped: list[str] = []
    async with conn.transaction():
        for name in sorted(await _lock_and_list(conn, table)):
            found = pattern.fullmatch(name)
            if found is None or date.fromisoformat(found[1]) >= day:
                continue
            await conn.execute(f"DROP TABLE {quote_identifier(name)}")
            dropped.append(name)
    return dropped


def ensure_covering(
    tables: Sequence[str], stamps: Sequence[datetime]
) -> Callable[[asyncpg.Connection], Awaitable[None]]:
    """``ensure(connection)``: create ``tables``' missing partitions of the UTC days from
    the earliest of ``stamps`` to the latest (what a batch of rows needs to be stored)."""
    first = min(stamps).astimezone(UTC).date()
    last = max(stamps).astimezone(UTC).date()

    async def ensure(conn: asyncpg.Connection) -> None:
        for table in tables:
            await ensure_daily_partitions(conn, table, first, last)

    return ensure


def retention_days_from_environment(variable: str, default: int) -> int:
    """``variable``'s value (environment over ``.env``), or ``default`` when unset: for the
    migrations, which create the first partitions before any service reads its settings."""
    raw = read_environment().get(variable, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"{variable}: expected an integer >= 1 (got {raw!r})"
        raise SettingsError(msg)
    return value


async def keep_partitions(
    conn: asyncpg.Connection, tables: Sequence[str], retention_days: int, today: date
) -> tuple[list[str], list[str]]:
    """Ensure the partitions of ``[today - retention, today + AHEAD_DAYS]`` of each table
    and drop the older ones: (created, dropped)."""
    first, last = partition_window(today, retention_days)
    created: list[str] = []
    dropped: list[str] = []
    for table in tables:
        created += await ensure_daily_partitions(conn, table, first, last)
        dropped += await drop_partitions_before(conn, table, first)
    return created, dropped


# What else a role drops with its old partitions (the analytics rollups of those days):
# ``prune(connection, first day kept)``, the number of rows deleted.
Prune = Callable[[asyncpg.Connection, date], Awaitable[int]]


def upkeep_job(
    tables: Sequence[str],
    retention_days: Callable[[Settings], int],
    prune: Prune | None = None,
) -> BackgroundJob:
    """The ``partitions`` background job of a role whose ``tables`` are partitioned by day,
    kept ``retention_days(settings)`` days: hourly, the first run a second after start-up.

    The job's own connection only holds the leader's lock; the DDL runs on a second one,
    each table's creations and drops committed on their own, so a drop's exclusive lock
    on one table is never held while waiting for the next table's.
    """

    async def run(runtime: RoleRuntime, _lock: asyncpg.Connection) -> None:
        days_kept = retention_days(runtime.settings)
        today = utc_today()
        conn = await runtime.database.connect(timeout=10)
        try:
            await conn.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
            created, dropped = await keep_partitions(conn, tables, days_kept, today)
            if prune is not None:
                await prune(conn, partition_window(today, days_kept)[0])
        finally:
            await conn.close()
        level = logging.INFO if created or dropped else logging.DEBUG
        log.log(
            level,
            "partitions of %s (%s): created %d%s, dropped %d%s (retention %d days)",
            runtime.spec.name,
            ", ".join(tables),
            len(created),
            f" ({', '.join(created)})" if created else "",
            len(dropped),
            f" ({', '.join(dropped)})" if dropped else "",
            days_kept,
            extra={
                "partitions_created": created,
                "partitions_dropped": dropped,
                "retention_days": days_kept,
            },
        )

    return BackgroundJob(
        name="partitions",
        interval_s=UPKEEP_INTERVAL_S,
        run=run,
        first_delay_s=1.0,
        timeout_s=UPKEEP_TIMEOUT_S,
    )
