"""Retention of the analytics role's data, background jobs of the analytics service run
once an hour and shortly after start-up, by one replica at a time (see :mod:`multidb.jobs`):

- ``stats-retention``: stats samples older than ``MULTI_DB_STATS_RETENTION_DAYS`` (30 by
  default) are deleted;
- ``partitions``: the daily partitions of ``analytics_events`` and ``user_activities`` for
  the next days are created, those older than ``MULTI_DB_EVENTS_RETENTION_DAYS`` (90) are
  dropped whole (see :mod:`multidb.partitions`), and the hourly rollups of those days
  deleted with them.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, time
from operator import attrgetter

import asyncpg

from multidb.execute import affected_rows
from multidb.jobs import BackgroundJob
from multidb.partitions import upkeep_job
from multidb.service.runtime import RoleRuntime

log = logging.getLogger("multidb.analytics.retention")

PRUNE_SQL = "DELETE FROM stats_samples WHERE sampled_at < now() - make_interval(days => $1)"
PRUNE_INTERVAL_S = 3600.0
PRUNE_TIMEOUT_S = 120.0


async def prune_stats_samples(runtime: RoleRuntime, conn: asyncpg.Connection) -> None:
    """Delete the samples older than the retention (``sampled_at`` index, one statement)."""
    days = runtime.settings.stats_retention_days
    status = await conn.execute(PRUNE_SQL, days, timeout=PRUNE_TIMEOUT_S)
    deleted = affected_rows(status)
    if deleted:
        log.info(
            "stats history: pruned %d samples older than %d days",
            deleted,
            days,
            extra={"deleted": deleted, "retention_days": days},
        )


STATS_RETENTION = BackgroundJob(
    name="stats-retention",
    interval_s=PRUNE_INTERVAL_S,
    run=prune_stats_samples,
    first_delay_s=5.0,
    timeout_s=PRUNE_TIMEOUT_S + 10,
)


async def prune_rollups(conn: asyncpg.Connection, first_kept: date) -> int:
    """The hourly rollups of days whose events retention dropped: the counts go with them."""
    status = await conn.execute(
        "DELETE FROM analytics_event_rollups WHERE bucket < $1",
        datetime.combine(first_kept, time.min, tzinfo=UTC),
    )
    return affected_rows(status)


PARTITIONS = upkeep_job(
    ("analytics_events", "user_activities"), attrgetter("events_retention_days"), prune_rollups
)
