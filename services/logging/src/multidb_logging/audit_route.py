"""``POST /audit/access``: the gateway's batches of access records, stored at most once each;
``GET /audit/access?limit=``: the latest records, newest first (for the dashboard).

The whole batch goes in with one statement over ``unnest`` of one array per column, and
``ON CONFLICT (event_id) DO NOTHING`` makes a batch safe to send again: records already
stored (by an earlier attempt, or twice in the same batch) are skipped and not counted in
``inserted``. Strings longer than their column are cut to fit rather than refused, so one
odd record never blocks a batch; a value the table's checks refuse is a 400.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import asyncpg
import msgspec
from litestar import get, post
from litestar.datastructures import State
from litestar.enums import RequestEncodingType
from litestar.params import Body, Parameter

from multidb import auth
from multidb.audit_records import AccessRecord, AccessRecords
from multidb.errors import (
    BadRequestError,
    DatabaseUnavailableError,
    TimeoutExceededError,
    describe,
)
from multidb.execute import affected_rows
from multidb.openapi import protected
from multidb.service.runtime import UNREACHABLE, RoleRuntime

MAX_BATCH = 1000
INSERT_TIMEOUT_S = 10.0
RECENT_DEFAULT = 20
RECENT_MAX = 200
RECENT_TIMEOUT_S = 5.0

# One array parameter per column, cast to the column's type; text cut to the column length.
INSERT_ACCESS_LOGS = """
INSERT INTO access_logs (
    event_id, created_at, request_id, principal, auth_method, method, path, target_role,
    query_fingerprint, query_preview, read_only, outcome, status_code, row_count,
    duration_ms, error, client_ip
)
SELECT event_id, created_at, left(request_id, 64), left(principal, 255), auth_method,
       left(method, 10), left(path, 2048), left(target_role, 63), left(query_fingerprint, 64),
       query_preview, read_only, outcome, status_code, row_count, duration_ms, error,
       left(client_ip, 45)
FROM unnest(
    $1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[],
    $7::text[], $8::text[], $9::text[], $10::text[], $11::bool[], $12::text[], $13::int4[],
    $14::int4[], $15::float8[], $16::text[], $17::text[]
) AS batch(
    event_id, created_at, request_id, principal, auth_method, method, path, target_role,
    query_fingerprint, query_preview, read_only, outcome, status_code, row_count,
    duration_ms, error, client_ip
)
ON CONFLICT (event_id) DO NOTHING
"""

COLUMNS = tuple(AccessRecord.__struct_fields__)

# Walks the created_at index backwards and stops at the limit: bounded whatever the table's
# size. The column names are the struct's own fields, never input.
SELECT_RECENT = f"""
SELECT {", ".join(COLUMNS)}
FROM access_logs
ORDER BY created_at DESC, id DESC
LIMIT $1
"""


class AuditReceipt(msgspec.Struct, kw_only=True):
    """``received``: records in the batch; ``inserted``: rows new to the table."""

    received: int
    inserted: int


def _storable(value: object) -> object:
    # PostgreSQL text cannot hold NUL, and a query preview may quote one a caller sent.
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


def _columns(records: list[AccessRecord]) -> list[list[object]]:
    return [[_storable(getattr(record, name)) for record in records] for name in COLUMNS]


@post(
    "/audit/access",
    status_code=200,
    tags=["audit"],
    **protected(auth.ADMIN, 400, 413, 503),
)
async def record_access(
    data: Annotated[
        list[AccessRecord], Body(media_type=RequestEncodingType.JSON, max_items=MAX_BATCH)
    ],
    state: State,
) -> AuditReceipt:
    """Store a batch of at most 1000 access records; each ``event_id`` is stored once."""
    if not data:
        return AuditReceipt(received=0, inserted=0)
    runtime: RoleRuntime = state.runtime
    try:
        async with asyncio.timeout(INSERT_TIMEOUT_S), runtime.admin.acquire() as conn:
            status = await conn.execute(INSERT_ACCESS_LOGS, *_columns(data))
    except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
        raise BadRequestError(f"a record was refused: {describe(exc)}") from None
    except UNREACHABLE as exc:
        msg = f"database 'logging' is unavailable: {describe(exc, int(INSERT_TIMEOUT_S * 1000))}"
        raise DatabaseUnavailableError(msg) from None
    return AuditReceipt(received=len(data), inserted=affected_rows(status))


@get("/audit/access", tags=["audit"], **protected(auth.ADMIN, 400, 503, 504))
async def recent_access(
    state: State,
    limit: Annotated[
        int, Parameter(ge=1, le=RECENT_MAX, description="how many records, newest first")
    ] = RECENT_DEFAULT,
) -> AccessRecords:
    """The latest ``limit`` access records (at most 200), newest first."""
    runtime: RoleRuntime = state.runtime
    try:
        async with asyncio.timeout(RECENT_TIMEOUT_S), runtime.admin.acquire() as conn:
            rows = await conn.fetch(SELECT_RECENT, limit)
    except TimeoutError:
        msg = f"reading the audit trail took over {RECENT_TIMEOUT_S:g} s"
        raise TimeoutExceededError(msg) from None
    except UNREACHABLE as exc:
        msg = f"database 'logging' is unavailable: {describe(exc, int(RECENT_TIMEOUT_S * 1000))}"
        raise DatabaseUnavailableError(msg) from None
    return AccessRecords(records=[AccessRecord(**dict(row)) for row in rows])


ROUTES = [record_access, recent_access]
