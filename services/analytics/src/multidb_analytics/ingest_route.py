"""``POST /events``: a batch of analytics events and user activities, stored whole or not
at all, with the hourly rollups kept in the same transaction.

Records are told apart by ``"type"``: ``"event"`` becomes an ``analytics_events`` row,
``"activity"`` a ``user_activities`` row. Both are checked (:mod:`multidb.ingest`), copied
into staging tables and moved into their tables in one transaction, skipping those whose
``event_id`` and timestamp are stored already. The events actually inserted, and only
those, are added to ``analytics_event_rollups`` (per name and UTC hour) in the same
statement: a batch sent again counts nothing twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from litestar import Request, post
from litestar.datastructures import State

from multidb import auth
from multidb.disconnect import cancel_on_disconnect
from multidb.execute import affected_rows
from multidb.ingest import (
    ActivityRecord,
    EventRecord,
    IngestLimits,
    IngestReceipt,
    RecordChecks,
    Staged,
    Staging,
    TimeWindow,
    decode_batch,
    read_body,
    write_batch,
)
from multidb.ingest.body import BatchDecoder
from multidb.ingest.docs import batch_operation
from multidb.ingest.records import AnalyticsRecord, storable, storable_or_none
from multidb.openapi import protected
from multidb.partitions import ensure_covering
from multidb.service.runtime import RoleRuntime

DECODER: BatchDecoder[AnalyticsRecord] = BatchDecoder(AnalyticsRecord)

EVENTS = Staging(
    "ingest_events",
    (
        ("event_id", "text"),
        ("occurred_at", "timestamptz"),
        ("name", "text"),
        ("user_id", "bigint"),
        ("session_id", "text"),
        ("properties", "jsonb"),
    ),
)
ACTIVITIES = Staging(
    "ingest_activities",
    (
        ("event_id", "text"),
        ("created_at", "timestamptz"),
        ("user_id", "bigint"),
        ("activity", "text"),
        ("resource", "text"),
        ("ip_address", "text"),
        ("user_agent", "text"),
        ("details", "jsonb"),
    ),
)

# The rollups are upserted in (name, bucket) order, so that two batches touching the same
# hours lock their rows in the same order and never deadlock.
INSERT_EVENTS = """
WITH events AS (
    INSERT INTO analytics_events (event_id, occurred_at, name, user_id, session_id, properties)
    SELECT event_id, occurred_at, name, user_id, session_id, properties
    FROM ingest_events
    ON CONFLICT (event_id, occurred_at) DO NOTHING
    RETURNING name, occurred_at
), rollups AS (
    INSERT INTO analytics_event_rollups AS rollup (name, bucket, events)
    SELECT name, date_trunc('hour', occurred_at, 'UTC'), count(*)
    FROM events
    GROUP BY 1, 2
    ORDER BY 1, 2
    ON CONFLICT (name, bucket) DO UPDATE SET events = rollup.events + EXCLUDED.events
)
SELECT count(*) FROM events
"""
INSERT_ACTIVITIES = """
INSERT INTO user_activities
    (event_id, created_at, user_id, activity, resource, ip_address, user_agent, details)
SELECT event_id, created_at, user_id, activity, resource, ip_address, user_agent, details
FROM ingest_activities
ON CONFLICT (event_id, created_at) DO NOTHING
"""

Row = tuple[Any, ...]


class Split:
    """A batch's records as staging rows: events and activities apart, each row with the
    index of its record in the batch."""

    def __init__(self, records: list[AnalyticsRecord], checks: RecordChecks) -> None:
        self.events: list[Row] = []
        self.event_indexes: list[int] = []
        self.activities: list[Row] = []
        self.activity_indexes: list[int] = []
        self.stamps: list[dt.datetime] = []
        json_object = checks.json_object
        for index, r in enumerate(records):
            if isinstance(r, EventRecord):
                row: Row = (
                    storable_or_none(r.event_id),
                    checks.timestamp(r.occurred_at, index, "occurred_at"),
                    storable(r.name),
                    r.user_id,
                    storable_or_none(r.session_id),
                    json_object(r.properties, index, "properties"),
                )
                self.events.append(row)
                self.event_indexes.append(index)
            else:
                row = self._activity(r, index, checks)
                self.activities.append(row)
                self.activity_indexes.append(index)
            self.stamps.append(row[1])

    @staticmethod
    def _activity(r: ActivityRecord, index: int, checks: RecordChecks) -> Row:
        return (
            storable_or_none(r.event_id),
            checks.timestamp(r.created_at, index, "created_at"),
            r.user_id,
            storable(r.activity),
            storable_or_none(r.resource),
            storable_or_none(r.ip_address),
            storable_or_none(r.user_agent),
            checks.json_object(r.details, index, "details"),
        )

    def staged(self) -> list[Staged]:
        parts = []
        if self.events:
            parts.append(Staged(EVENTS, self.events, self.event_indexes))
        if self.activities:
            parts.append(Staged(ACTIVITIES, self.activities, self.activity_indexes))
        return parts

    def write(self) -> Callable[[asyncpg.Connection], Awaitable[int]]:
        """The statements of this batch (only those of the kinds it holds): rows inserted."""

        async def write(conn: asyncpg.Connection) -> int:
            inserted = 0
            if self.events:
                inserted += await conn.fetchval(INSERT_EVENTS)
            if self.activities:
                inserted += affected_rows(await conn.execute(INSERT_ACTIVITIES))
            return inserted

        return write

    def ensure(self) -> Callable[[asyncpg.Connection], Awaitable[None]]:
        """Creates the partitions of the days the batch falls on (when one is missing)."""
        tables = [
            table
            for table, rows in (
                ("analytics_events", self.events),
                ("user_activities", self.activities),
            )
            if rows
        ]
        return ensure_covering(tables, self.stamps)


@post(
    "/events",
    status_code=200,
    tags=["ingestion"],
    operation_class=batch_operation(AnalyticsRecord),
    # The batch limit is MULTI_DB_INGEST_MAX_BYTES, enforced while reading (read_body).
    request_max_body_size=None,
    **protected(auth.INGEST, 400, 413, 415, 503, 504),
)
async def ingest_events(request: Request[auth.Principal, Any, Any], state: State) -> IngestReceipt:
    """Store a batch of events (`"type": "event"`) and user activities
    (`"type": "activity"`): a JSON array (`application/json`) or one record per line
    (`application/x-ndjson`).

    All or nothing: a bad record is a 400 naming its `index` and `field`, and nothing is
    stored. A record whose `event_id` and timestamp were stored before is skipped
    (`inserted` counts the new ones); new events add to the hourly rollups. Timestamps
    carry their offset and lie within the last MULTI_DB_EVENTS_RETENTION_DAYS days (and at
    most 1 day ahead). Needs `ingest:write` (or `ingest:write:analytics`).
    """
    runtime: RoleRuntime = state.runtime
    settings = runtime.settings
    limits = IngestLimits.from_settings(settings)
    body = await read_body(request, limits)
    records = decode_batch(body, request.headers.get("content-type"), DECODER, limits)
    if not records:
        return IngestReceipt(received=0, inserted=0)
    window = TimeWindow.around(
        dt.datetime.now(dt.UTC), settings.events_retention_days, "MULTI_DB_EVENTS_RETENTION_DAYS"
    )
    split = Split(records, RecordChecks(limits, window))
    pool = await runtime.ingest_pool()
    write = write_batch(
        pool.acquire, "analytics", split.staged(), split.write(), ensure=split.ensure()
    )
    inserted = await cancel_on_disconnect(request.receive, write)
    return IngestReceipt(received=len(records), inserted=inserted)


ROUTES = [ingest_events]
