"""``POST /stats/samples`` and ``GET /stats/history``: the fleet's stats history.

The gateway samples every role's ``/stats`` and delivers the samples here in batches
(:mod:`multidb.stats_samples`). A batch goes in with one statement over ``unnest`` of one
array per column; ``ON CONFLICT (sample_id) DO NOTHING`` stores each sample once, however
many gateways sampled it and however often a batch is sent again.
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
from multidb.errors import (
    BadRequestError,
    DatabaseUnavailableError,
    TimeoutExceededError,
    describe,
)
from multidb.execute import affected_rows
from multidb.openapi import protected
from multidb.service.runtime import UNREACHABLE, RoleRuntime
from multidb.stats_samples import StatsSampleRecord
from multidb.wire import StatsHistory
from multidb_analytics.history import QUERY_TIMEOUT_S, parse_query, read_history

MAX_BATCH = 1000
INSERT_TIMEOUT_S = 10.0

INSERT_STATS_SAMPLES = """
INSERT INTO stats_samples (
    sample_id, role, sampled_at, status, error, table_count, database_size_bytes,
    connections, commits, rollbacks, cache_hit_ratio, deadlocks, temp_bytes
)
SELECT * FROM unnest(
    $1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::int4[],
    $7::int8[], $8::int4[], $9::int8[], $10::int8[], $11::float8[], $12::int8[], $13::int8[]
)
ON CONFLICT (sample_id) DO NOTHING
"""

COLUMNS = tuple(StatsSampleRecord.__struct_fields__)


class SamplesReceipt(msgspec.Struct, kw_only=True):
    """``received``: samples in the batch; ``inserted``: rows new to the table."""

    received: int
    inserted: int


def _storable(value: object) -> object:
    # PostgreSQL text cannot hold NUL, and an error message may quote one.
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


def _columns(samples: list[StatsSampleRecord]) -> list[list[object]]:
    return [[_storable(getattr(sample, name)) for sample in samples] for name in COLUMNS]


def _unavailable(exc: BaseException, timeout_s: float) -> DatabaseUnavailableError:
    reason = describe(exc, int(timeout_s * 1000))
    return DatabaseUnavailableError(f"database 'analytics' is unavailable: {reason}")


@post(
    "/stats/samples",
    status_code=200,
    tags=["stats history"],
    **protected(auth.ADMIN, 400, 413, 503, database=auth.EVERY_DATABASE),
)
async def record_samples(
    data: Annotated[
        list[StatsSampleRecord], Body(media_type=RequestEncodingType.JSON, max_items=MAX_BATCH)
    ],
    state: State,
) -> SamplesReceipt:
    """Store a batch of at most 1000 stats samples; each ``sample_id`` is stored once."""
    if not data:
        return SamplesReceipt(received=0, inserted=0)
    runtime: RoleRuntime = state.runtime
    try:
        async with asyncio.timeout(INSERT_TIMEOUT_S), runtime.admin.acquire() as conn:
            status = await conn.execute(INSERT_STATS_SAMPLES, *_columns(data))
    except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
        raise BadRequestError(f"a sample was refused: {describe(exc)}") from None
    except UNREACHABLE as exc:
        raise _unavailable(exc, INSERT_TIMEOUT_S) from None
    return SamplesReceipt(received=len(data), inserted=affected_rows(status))


@get(
    "/stats/history",
    tags=["stats history"],
    # The history of a database is that database's to read, wherever it is kept.
    **protected(auth.READ, 400, 503, 504, database=auth.QUERY_PREFIX + "database"),
)
async def stats_history(
    state: State,
    database: Annotated[str | None, Parameter(description="the role, like 'default'")] = None,
    since: Annotated[str | None, Parameter(description="ISO-8601; default: until - 1 h")] = None,
    until: Annotated[str | None, Parameter(description="ISO-8601; default: now")] = None,
    step: Annotated[str | None, Parameter(description="seconds per point (>= 1)")] = None,
) -> StatsHistory:
    """A role's stats history, downsampled to ``step`` seconds (at most 2000 points).

    Needs `db:read` on the database asked about (`db:read` or `db:read:<database>`).
    """
    query = parse_query(database, since, until, step)
    runtime: RoleRuntime = state.runtime
    try:
        async with asyncio.timeout(QUERY_TIMEOUT_S + 1), runtime.admin.acquire() as conn:
            return await read_history(conn, query)
    except TimeoutError:
        msg = f"the history query took over {QUERY_TIMEOUT_S:g} s; ask for a shorter range"
        raise TimeoutExceededError(msg) from None
    except UNREACHABLE as exc:
        raise _unavailable(exc, QUERY_TIMEOUT_S) from None


ROUTES = [record_samples, stats_history]
