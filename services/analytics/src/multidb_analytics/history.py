"""The stats history query: parameters checked, then one bounded, downsampled ``SELECT``.

``since``/``until`` are ISO-8601 timestamps (``2026-11-29T04:00:00Z``; one without a
zone is read as UTC), defaulting to the last hour up to now; ``step`` is whole seconds,
defaulting to the smallest that gives at most :data:`DEFAULT_POINTS` buckets. A range and
step that would give more than :data:`MAX_POINTS` buckets is refused rather than cut, so
a caller never mistakes a truncated series for a complete one.

Buckets are ``date_bin(step, sampled_at, epoch)``: aligned to multiples of ``step`` since
the Unix epoch, so the same bucket keeps the same ``t`` as a chart's window slides (the
first one may start before ``since``; it holds only samples from ``since`` on). Gauges
and counters are the bucket's latest good value, the cache hit ratio the mean of its good
samples; a bucket whose samples all failed has every figure ``None`` and the latest
failure's ``error``, so a gap shows.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec

from multidb.errors import BadRequestError
from multidb.wire import HistoryPoint, StatsHistory

DEFAULT_RANGE = timedelta(hours=1)
DEFAULT_POINTS = 300
MAX_POINTS = 2000
# No sample predates the epoch the buckets are aligned to; a step over a year is no series.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
MAX_STEP_S = 366 * 24 * 3600
WHOLE_NUMBER = re.compile(r"[0-9]{1,12}")
QUERY_TIMEOUT_S = 5.0

_LATEST = "(array_agg({0} ORDER BY sampled_at DESC) FILTER (WHERE status = 'available'))[1]"
FIGURES = (
    "table_count",
    "database_size_bytes",
    "connections",
    "commits",
    "rollbacks",
    "deadlocks",
    "temp_bytes",
)
HISTORY_SQL = f"""
SELECT date_bin(make_interval(secs => $4), sampled_at, timestamptz '1970-01-01 00:00:00+00')
         AS t,
       count(*) AS samples,
       count(*) FILTER (WHERE status = 'unavailable') AS unavailable,
       {", ".join(f"{_LATEST.format(name)} AS {name}" for name in FIGURES)},
       round((avg(cache_hit_ratio) FILTER (WHERE status = 'available'))::numeric, 4)::float8
         AS cache_hit_ratio,
       (array_agg(error ORDER BY sampled_at DESC) FILTER (WHERE status = 'unavailable'))[1]
         AS error
FROM stats_samples
WHERE role = $1 AND sampled_at >= $2 AND sampled_at < $3
GROUP BY 1
ORDER BY 1
LIMIT $5
"""


class HistoryQuery(msgspec.Struct, frozen=True, kw_only=True):
    database: str
    since: datetime
    until: datetime
    step_s: int


def _timestamp(name: str, text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip())
        # One without a zone is read as UTC; the answer is always in UTC.
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError):
        msg = f"{name}: {text[:64]!r} is not an ISO-8601 timestamp (like 2026-11-29T04:00:00Z)"
        raise BadRequestError(msg) from None
    if value < EARLIEST:
        msg = f"{name}: {value.isoformat()} is before 1970-01-01T00:00:00Z, where history starts"
        raise BadRequestError(msg)
    return value


def _step(text: str) -> int:
    if not WHOLE_NUMBER.fullmatch(text):
        msg = f"step: {text[:64]!r} is not a whole number of seconds"
        raise BadRequestError(msg)
    step = int(text)
    if not 1 <= step <= MAX_STEP_S:
        msg = f"step: must be from 1 to {MAX_STEP_S} seconds (got {step})"
        raise BadRequestError(msg)
    return step


def parse_query(
    database: str | None,
    since: str | None,
    until: str | None,
    step: str | None,
    now: datetime | None = None,
) -> HistoryQuery:
    """The checked parameters of a history request; :class:`BadRequestError` says what is
    wrong in words a person understands."""
    if not database or not database.strip():
        msg = "database: required (the role whose history you want, like 'default')"
        raise BadRequestError(msg)
    end = _timestamp("until", until) if until is not None else (now or datetime.now(UTC))
    start = _timestamp("since", since) if since is not None else end - DEFAULT_RANGE
    if start >= end:
        msg = f"since ({start.isoformat()}) must be before until ({end.isoformat()})"
        raise BadRequestError(msg)
    span_s = (end - start).total_seconds()
    step_s = _step(step) if step is not None else max(1, math.ceil(span_s / DEFAULT_POINTS))
    points = math.ceil(span_s / step_s) + 1  # epoch-aligned buckets may straddle since
    if points > MAX_POINTS:
        least = math.ceil(span_s / (MAX_POINTS - 1))
        msg = (
            f"since..until at step {step_s} s is {points} points; at most {MAX_POINTS}: "
            f"use a step of at least {least} s or a shorter range"
        )
        raise BadRequestError(msg)
    return HistoryQuery(database=database.strip(), since=start, until=end, step_s=step_s)


async def read_history(conn: asyncpg.Connection, query: HistoryQuery) -> StatsHistory:
    """The downsampled series; at most :data:`MAX_POINTS` rows, within ``QUERY_TIMEOUT_S``."""
    rows = await conn.fetch(
        HISTORY_SQL,
        query.database,
        query.since,
        query.until,
        float(query.step_s),
        MAX_POINTS,
        timeout=QUERY_TIMEOUT_S,
    )
    return StatsHistory(
        database=query.database,
        since=query.since,
        until=query.until,
        step_s=query.step_s,
        points=[HistoryPoint(**dict(row)) for row in rows],
    )
