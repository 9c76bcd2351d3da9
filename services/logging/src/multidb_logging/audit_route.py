"""``POST /audit/access``: the gateway's batches of access records, stored at most once each;
``GET /audit/access?limit=``: the latest records, newest first (for the dashboard).

A batch is stored as the next links of its sender's hash chain (the writer is the
authenticated subject that posted it; see :mod:`multidb_logging.store`), in one
transaction: records already stored (by an earlier attempt, or twice in the same batch)
are skipped, add no link and are not counted in ``inserted``, so a batch is safe to send
again. Strings longer than their column are cut to fit rather than refused, so one odd
record never blocks a batch; a value the table's checks refuse is a 400.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

import asyncpg
import msgspec
from litestar import Request, get, post
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
from multidb.openapi import protected
from multidb.service.runtime import UNREACHABLE, RoleRuntime
from multidb_logging.store import ChainMismatchError, chain_writer, store_records

MAX_BATCH = 1000
INSERT_TIMEOUT_S = 10.0
RECENT_DEFAULT = 20
RECENT_MAX = 200
RECENT_TIMEOUT_S = 5.0
log = logging.getLogger("multidb.logging.audit")

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


@post(
    "/audit/access",
    status_code=200,
    tags=["audit"],
    **protected(auth.ADMIN, 400, 413, 503, database=auth.EVERY_DATABASE),
)
async def record_access(
    data: Annotated[
        list[AccessRecord], Body(media_type=RequestEncodingType.JSON, max_items=MAX_BATCH)
    ],
    state: State,
    request: Request[auth.Principal, Any, Any],
) -> AuditReceipt:
    """Store a batch of at most 1000 access records; each ``event_id`` is stored once."""
    if not data:
        return AuditReceipt(received=0, inserted=0)
    runtime: RoleRuntime = state.runtime
    writer = chain_writer(request.user.subject)
    try:
        async with asyncio.timeout(INSERT_TIMEOUT_S), runtime.admin.acquire() as conn:
            inserted = await store_records(conn, writer, data)
    except ChainMismatchError as exc:
        # The unexpected-error handler logs where, never the message: say it here.
        log.error("%s", exc)
        raise
    except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
        raise BadRequestError(f"a record was refused: {describe(exc)}") from None
    except UNREACHABLE as exc:
        msg = f"database 'logging' is unavailable: {describe(exc, int(INSERT_TIMEOUT_S * 1000))}"
        raise DatabaseUnavailableError(msg) from None
    return AuditReceipt(received=len(data), inserted=inserted)


@get(
    "/audit/access",
    tags=["audit"],
    **protected(auth.ADMIN, 400, 503, 504, database=auth.EVERY_DATABASE),
)
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
