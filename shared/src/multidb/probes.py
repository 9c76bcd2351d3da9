"""Health and stats of one database: one catalog query each, bounded by a deadline.

Activity comes from the one ``pg_stat_database`` row of the database, read live: its
cost does not depend on what the database holds. What does grow with the number of
tables is sampled in the background (:class:`Snapshot`) and reported with its age: the
table count (``pg_class``, never ``information_schema``) and ``pg_database_size``, which
walks every relation file.

Neither probe raises: any failure becomes an unhealthy/unavailable answer. A failure that
is not the database being unreachable or slow (a plugin's detail hook that raises, a bug)
is also logged, safely: its type and where it was raised, never its message.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg
import msgspec

from multidb.errors import CONNECTION_ERRORS, describe, trace
from multidb.wire import AVAILABLE, HEALTHY, UNAVAILABLE, UNHEALTHY, HealthReport, StatsReport

HEALTH_SQL = """
SELECT 1 AS test_query,
       current_database() AS database_name,
       'PostgreSQL ' || current_setting('server_version') AS version
"""

STATS_SQL = """
SELECT numbackends AS connections,
       xact_commit AS commits,
       xact_rollback AS rollbacks,
       deadlocks,
       temp_bytes,
       CASE WHEN blks_hit + blks_read = 0 THEN NULL
            ELSE round(blks_hit::numeric / (blks_hit + blks_read), 4)::float8 END
         AS cache_hit_ratio
FROM pg_stat_database WHERE datname = current_database()
"""

# The background sample: what grows with the tables, the activity counters for /metrics,
# and whether the role's version table exists ($1), all in one round trip.
CATALOG_SQL = """
SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
          AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg_toast%') AS table_count,
       d.numbackends AS connections,
       d.xact_commit AS commits,
       d.xact_rollback AS rollbacks,
       d.deadlocks,
       d.temp_bytes,
       d.temp_files,
       d.blks_hit,
       d.blks_read,
       to_regclass($1) IS NOT NULL AS has_version_table
FROM pg_stat_database d WHERE d.datname = current_database()
"""

SIZE_SQL = """
SELECT pg_database_size(current_database()) AS bytes,
       pg_size_pretty(pg_database_size(current_database())) AS pretty
"""

log = logging.getLogger("multidb.probes")
EXPECTED_FAILURES = (*CONNECTION_ERRORS, TimeoutError)

Acquire = Callable[[], AbstractAsyncContextManager[asyncpg.Connection]]
Detail = Callable[[asyncpg.Connection], Awaitable[dict[str, Any] | None]]


class SizeSample(msgspec.Struct, frozen=True, kw_only=True):
    bytes: int
    pretty: str
    sampled_at: float

    @property
    def age_s(self) -> float:
        return round(time.monotonic() - self.sampled_at, 3)


async def sample_size(conn: asyncpg.Connection) -> SizeSample:
    row = await conn.fetchrow(SIZE_SQL)
    return SizeSample(bytes=row["bytes"], pretty=row["pretty"], sampled_at=time.monotonic())


class CatalogSample(msgspec.Struct, frozen=True, kw_only=True):
    """One background reading of the catalog and of ``pg_stat_database``."""

    table_count: int
    connections: int
    commits: int
    rollbacks: int
    deadlocks: int
    temp_bytes: int
    temp_files: int
    blks_hit: int
    blks_read: int
    revision: str | None
    sampled_at: float

    @property
    def age_s(self) -> float:
        return round(time.monotonic() - self.sampled_at, 3)

    @property
    def cache_hit_ratio(self) -> float | None:
        total = self.blks_hit + self.blks_read
        return None if total == 0 else self.blks_hit / total


async def sample_catalog(conn: asyncpg.Connection, version_table: str) -> CatalogSample:
    row = await conn.fetchrow(CATALOG_SQL, version_table)
    revision = None
    if row["has_version_table"]:
        revision = await conn.fetchval(f'SELECT version_num FROM "{version_table}"')
    fields = {key: row[key] for key in row.keys() if key != "has_version_table"}  # noqa: SIM118
    return CatalogSample(**fields, revision=revision, sampled_at=time.monotonic())


class Snapshot(msgspec.Struct, frozen=True):
    """The latest background samples: the catalog (every round) and the size (less often)."""

    catalog: CatalogSample
    size: SizeSample


def snapshot_taker(version_table: str) -> Callable[[asyncpg.Connection], Awaitable[Snapshot]]:
    """Takes a whole :class:`Snapshot` on a connection: for a caller without a sampler."""

    async def take(conn: asyncpg.Connection) -> Snapshot:
        return Snapshot(await sample_catalog(conn, version_table), await sample_size(conn))

    return take


async def merged_detail(results: Iterable[Any]) -> dict[str, Any] | None:
    """Merge what plugin hooks returned (mappings or awaitables of them)."""
    detail: dict[str, Any] = {}
    for result in results:
        value = await result if inspect.isawaitable(result) else result
        if isinstance(value, Mapping):
            detail.update(value)
    return detail or None


def _log_unexpected(what: str, role: str, exc: Exception) -> None:
    if not isinstance(exc, EXPECTED_FAILURES):
        log.error("%s of %s failed unexpectedly: %s", what, role, trace(exc))


async def check_health(
    role: str,
    acquire: Acquire,
    timeout_ms: int,
    detail: Detail | None = None,
) -> HealthReport:
    """Run the health query within ``timeout_ms``; never raises, reports the failure instead."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_ms / 1000), acquire() as conn:
            row = await conn.fetchrow(HEALTH_SQL)
            extra = await detail(conn) if detail else None
    except Exception as exc:
        _log_unexpected("health check", role, exc)
        return HealthReport(database=role, status=UNHEALTHY, error=describe(exc, timeout_ms))
    return HealthReport(
        database=role,
        status=HEALTHY,
        test_query=row["test_query"],
        database_name=row["database_name"],
        version=row["version"],
        latency_ms=round((time.perf_counter() - started) * 1000, 3),
        detail=extra,
    )


async def collect_stats(
    role: str,
    acquire: Acquire,
    timeout_ms: int,
    snapshot: Snapshot | None,
    detail: Detail | None = None,
    *,
    take_snapshot: Callable[[asyncpg.Connection], Awaitable[Snapshot]] | None = None,
) -> tuple[StatsReport, Snapshot | None]:
    """Catalog statistics within ``timeout_ms``: activity live, the rest from ``snapshot``.

    Without a snapshot yet (the first call after start-up), ``take_snapshot`` takes one on
    the same connection; the caller keeps it.
    """
    try:
        async with asyncio.timeout(timeout_ms / 1000), acquire() as conn:
            row = await conn.fetchrow(STATS_SQL)
            if snapshot is None and take_snapshot is not None:
                snapshot = await take_snapshot(conn)
            extra = await detail(conn) if detail else None
    except Exception as exc:
        _log_unexpected("stats", role, exc)
        failed = StatsReport(database=role, status=UNAVAILABLE, error=describe(exc, timeout_ms))
        return failed, snapshot
    report = StatsReport(
        database=role,
        status=AVAILABLE,
        table_count=snapshot.catalog.table_count if snapshot else None,
        table_count_age_s=snapshot.catalog.age_s if snapshot else None,
        database_size=snapshot.size.pretty if snapshot else None,
        database_size_bytes=snapshot.size.bytes if snapshot else None,
        database_size_age_s=snapshot.size.age_s if snapshot else None,
        connections=row["connections"],
        commits=row["commits"],
        rollbacks=row["rollbacks"],
        deadlocks=row["deadlocks"],
        temp_bytes=row["temp_bytes"],
        cache_hit_ratio=row["cache_hit_ratio"],
        detail=extra,
    )
    return report, snapshot
