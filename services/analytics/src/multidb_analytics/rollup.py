"""The event rollup behind ``GET /events/rollup``: hourly counts, summed per step.

Read from ``analytics_event_rollups`` only (one row per event name and hour, kept by the
ingestion transaction), never from the raw events: a day is 24 rows of the table's primary
key, whatever the traffic. ``step=day`` sums a UTC day's hours. Every bucket from the one
holding ``since`` to the one holding ``until`` is a point (zero when no event arrived), so
a chart shows gaps as zeros; a range that would give more than :data:`MAX_POINTS` points
is refused rather than cut.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec

from multidb.errors import BadRequestError
from multidb.queries import EventRollup, RollupPoint, checked_text, parse_timestamp, read_bounded

PARAMETERS = ("name", "since", "until", "step")
STEPS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
DEFAULT_RANGES = {"hour": timedelta(hours=24), "day": timedelta(days=30)}
DEFAULT_STEP = "hour"
MAX_POINTS = 2000
MAX_NAME = 100
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# date_bin on timestamptz counts whole microseconds from the epoch: UTC days, whatever the
# session's time zone.
ROLLUP_SQL = """
SELECT date_bin(make_interval(secs => $4), bucket, timestamptz '1970-01-01 00:00:00+00') AS t,
       sum(events)::bigint AS events
FROM analytics_event_rollups
WHERE name = $1 AND bucket >= $2 AND bucket < $3
GROUP BY 1
ORDER BY 1
"""


class RollupQuery(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    step: str
    since: datetime
    until: datetime
    first: datetime  # the start of the bucket holding since
    points: int


def _floor(value: datetime, step: timedelta) -> datetime:
    return EPOCH + (value - EPOCH) // step * step


def parse_query(
    name: str | None,
    since: str | None,
    until: str | None,
    step: str | None,
    now: datetime,
) -> RollupQuery:
    """The checked parameters of a rollup request; :class:`BadRequestError` says what is
    wrong."""
    checked = checked_text("name", name, MAX_NAME)
    if not checked:
        raise BadRequestError("name: required (the event name to count)")
    chosen = DEFAULT_STEP if step is None else step.strip().lower()
    if chosen not in STEPS:
        raise BadRequestError(f"step: {(step or '')[:32]!r} is not one of hour, day")
    end = parse_timestamp("until", until) if until is not None else now
    start = parse_timestamp("since", since) if since is not None else end - DEFAULT_RANGES[chosen]
    if start >= end:
        msg = f"since ({start.isoformat()}) must be before until ({end.isoformat()})"
        raise BadRequestError(msg)
    first = _floor(start, STEPS[chosen])
    points = math.ceil((end - first) / STEPS[chosen])
    if points > MAX_POINTS:
        msg = (
            f"since..until by {chosen} is {points} points; at most {MAX_POINTS}: "
            "use a shorter range" + (" or step=day" if chosen == "hour" else "")
        )
        raise BadRequestError(msg)
    return RollupQuery(
        name=checked, step=chosen, since=start, until=end, first=first, points=points
    )


async def read_rollup(pool: asyncpg.Pool, query: RollupQuery) -> EventRollup:
    """The counts, one point per bucket, oldest first."""
    step = STEPS[query.step]
    rows = await read_bounded(
        pool,
        "analytics",
        "the event rollup",
        ROLLUP_SQL,
        query.name,
        query.first,
        query.until,
        step.total_seconds(),
    )
    counted = {row["t"]: row["events"] for row in rows}
    buckets = (query.first + i * step for i in range(query.points))
    return EventRollup(
        name=query.name,
        step=query.step,
        since=query.since,
        until=query.until,
        points=[RollupPoint(t=t, events=counted.get(t, 0)) for t in buckets],
    )


# Every hour's count recomputed from the events themselves: right whatever the rollups held.
REBUILD_SQL = """
INSERT INTO analytics_event_rollups AS rollup (name, bucket, events)
SELECT name, date_trunc('hour', occurred_at, 'UTC'), count(*)
FROM analytics_events
GROUP BY 1, 2
ORDER BY 1, 2
ON CONFLICT (name, bucket) DO UPDATE SET events = EXCLUDED.events
"""


async def rebuild(conn: asyncpg.Connection) -> None:
    """The rollups of every event in the table (after ``multidb split`` copied events in)."""
    async with conn.transaction():
        await conn.execute(REBUILD_SQL)
