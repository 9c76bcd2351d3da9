"""``POST /logs``: a batch of application log records, stored whole or not at all.

Each record becomes an ``application_logs`` row; a record with an ``error`` also becomes
an ``error_logs`` row (same ``event_id``, timestamp, logger and level). The batch is
checked (:mod:`multidb.ingest`), copied into a staging table and moved into both tables
in one transaction, skipping records whose ``event_id`` and timestamp are stored already:
``inserted`` counts the ``application_logs`` rows new to the table, so a batch sent again
answers ``inserted: 0``.
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
from multidb.ingest import (
    IngestLimits,
    IngestReceipt,
    LogRecord,
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
from multidb.ingest.records import storable_or_none
from multidb.openapi import protected
from multidb.partitions import ensure_covering
from multidb.service.runtime import RoleRuntime

TABLES = ("application_logs", "error_logs")
DECODER: BatchDecoder[LogRecord] = BatchDecoder(LogRecord)

STAGING = Staging(
    "ingest_logs",
    (
        ("event_id", "text"),
        ("created_at", "timestamptz"),
        ("level", "text"),
        ("logger", "text"),
        ("message", "text"),
        ("request_id", "text"),
        ("context", "jsonb"),
        ("error_type", "text"),
        ("error_message", "text"),
        ("stack_trace", "text"),
    ),
)

# One statement, one round trip: both tables, and how many rows each got.
INSERT_LOGS = """
WITH logs AS (
    INSERT INTO application_logs
        (event_id, created_at, level, logger, message, request_id, context)
    SELECT event_id, created_at, level, logger, message, request_id, context
    FROM ingest_logs
    ON CONFLICT (event_id, created_at) DO NOTHING
    RETURNING 1
), errors AS (
    INSERT INTO error_logs
        (event_id, created_at, level, logger, error_type, message, stack_trace, request_id,
         context)
    SELECT event_id, created_at, level, logger, error_type, error_message, stack_trace,
           request_id, context
    FROM ingest_logs
    WHERE error_type IS NOT NULL
    ON CONFLICT (event_id, created_at) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM logs), (SELECT count(*) FROM errors)
"""

Row = tuple[Any, ...]


def log_rows(records: list[LogRecord], checks: RecordChecks) -> list[Row]:
    """The staging rows of ``records``, in :data:`STAGING`'s column order; a 400 naming the
    record and field for the first value the checks refuse."""
    rows: list[Row] = []
    long_text, json_object = checks.long_text, checks.json_object
    for index, r in enumerate(records):
        error = r.error
        rows.append(
            (
                storable_or_none(r.event_id),
                checks.timestamp(r.timestamp, index, "timestamp"),
                r.level,
                storable_or_none(r.logger),
                long_text(r.message, index, "message"),
                storable_or_none(r.request_id),
                json_object(r.context, index, "context"),
                None if error is None else storable_or_none(error.type),
                None if error is None else long_text(error.message, index, "error.message"),
                None
                if error is None or error.stack_trace is None
                else long_text(error.stack_trace, index, "error.stack_trace"),
            )
        )
    return rows


def _ensure_for(rows: list[Row]) -> Callable[[asyncpg.Connection], Awaitable[None]]:
    """Creates the partitions of the days ``rows`` fall on (when one is missing)."""
    return ensure_covering(TABLES, [row[1] for row in rows])


async def _insert(conn: asyncpg.Connection) -> int:
    logs, _errors = await conn.fetchrow(INSERT_LOGS)
    inserted: int = logs
    return inserted


@post(
    "/logs",
    status_code=200,
    tags=["ingestion"],
    operation_class=batch_operation(LogRecord),
    # The batch limit is MULTI_DB_INGEST_MAX_BYTES, enforced while reading (read_body).
    request_max_body_size=None,
    **protected(auth.INGEST, 400, 413, 415, 503, 504),
)
async def ingest_logs(request: Request[auth.Principal, Any, Any], state: State) -> IngestReceipt:
    """Store a batch of log records: a JSON array (`application/json`) or one record per
    line (`application/x-ndjson`).

    All or nothing: a bad record is a 400 naming its `index` and `field`, and nothing is
    stored. A record whose `event_id` and `timestamp` were stored before is skipped
    (`inserted` counts the new ones). A record with `error` is also stored as an error.
    Timestamps carry their offset and lie within the last MULTI_DB_LOG_RETENTION_DAYS days
    (and at most 1 day ahead). Needs `ingest:write` (or `ingest:write:logging`).
    """
    runtime: RoleRuntime = state.runtime
    settings = runtime.settings
    limits = IngestLimits.from_settings(settings)
    body = await read_body(request, limits)
    records = decode_batch(body, request.headers.get("content-type"), DECODER, limits)
    if not records:
        return IngestReceipt(received=0, inserted=0)
    window = TimeWindow.around(
        dt.datetime.now(dt.UTC), settings.log_retention_days, "MULTI_DB_LOG_RETENTION_DAYS"
    )
    rows = log_rows(records, RecordChecks(limits, window))
    pool = await runtime.ingest_pool()
    staged = [Staged(STAGING, rows)]
    write = write_batch(pool.acquire, "logging", staged, _insert, ensure=_ensure_for(rows))
    inserted = await cancel_on_disconnect(request.receive, write)
    return IngestReceipt(received=len(records), inserted=inserted)


ROUTES = [ingest_logs]
