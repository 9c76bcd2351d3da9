"""Health and stats of one database: one catalog query each, bounded by a deadline.

Table counts come from ``pg_class`` and activity from ``pg_stat_database``, never from
``information_schema``. ``pg_database_size`` walks every relation file, so its cost grows
with the number of tables: callers sample it in the background (:class:`SizeSample`) and
report how old the figure is.

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
SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p')
          AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg_toast%') AS table_count,
       d.numbackends AS connections,
       d.xact_commit AS commits,
       d.xact_rollback AS rollbacks,
       CASE WHEN d.blks_hit + d.blks_read = 0 THEN NULL
            ELSE round(d.blks_hit::numeric / (d.blks_hit + d.blks_read), 4)::float8 END
         AS cache_hit_ratio
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
    size: SizeSample | None,
    detail: Detail | None = None,
) -> tuple[StatsReport, SizeSample | None]:
    """Catalog statistics within ``timeout_ms``; samples the size when ``size`` is None."""
    try:
        async with asyncio.timeout(timeout_ms / 1000), acquire() as conn:
            row = await conn.fetchrow(STATS_SQL)
            if size is None:
                size = await sample_size(conn)
            extra = await detail(conn) if detail else None
    except Exception as exc:
        _log_unexpected("stats", role, exc)
        return StatsReport(database=role, status=UNAVAILABLE, error=describe(exc, timeout_ms)), size
    report = StatsReport(
        database=role,
        status=AVAILABLE,
        table_count=row["table_count"],
        database_size=size.pretty,
        database_size_bytes=size.bytes,
        database_size_age_s=size.age_s,
        connections=row["connections"],
        commits=row["commits"],
        rollbacks=row["rollbacks"],
        cache_hit_ratio=row["cache_hit_ratio"],
        detail=extra,
    )
    return report, size
