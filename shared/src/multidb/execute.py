"""Safe execute: one user statement against a role's database, under layered guards.

The guards, outermost first: the caller's scopes and plugin votes (before this module);
a low-privilege login (see ``multidb.execute_logins``); the extended protocol, so exactly
one statement (``prepare`` refuses several); a ``READ ONLY`` transaction that is always
rolled back unless the caller asked to write; a server-side ``statement_timeout``; a row
cap and a byte cap on the answer (rows are fetched in batches and encoded as they come).
Before any of it, limits on the query's size and a bounded wait for a connection (503
with ``Retry-After``). Parameters are bound by name (``:name``) and never interpolated.

Values come back as JSON: numbers and booleans as such; ``numeric`` as strings (exact);
timestamps, dates and times in ISO 8601; intervals as ISO 8601 durations; UUIDs as
strings; ``bytea`` as base64; ``json``/``jsonb`` as JSON values; anything else as its
PostgreSQL text form.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg
import msgspec

from multidb.errors import (
    CONNECTION_ERRORS,
    BadRequestError,
    CommitOutcomeUnknownError,
    DatabaseUnavailableError,
    MultiDBError,
    ResultTooLargeError,
    SQLError,
    TimeoutExceededError,
    describe,
)
from multidb.named_params import to_positional
from multidb.settings import Settings
from multidb.wire import ExecuteRequest, ExecuteResult, TruncatedBy

T = TypeVar("T")
QUERY_CANCELED = "57014"
PROTOCOL_VIOLATION = "08P01"
STUCK_NETWORK_MARGIN_MS = 2000
RELEASE_TIMEOUT_S = 2.0
ROLLBACK_TIMEOUT_S = 1.0
log = logging.getLogger("multidb.execute")
# Queries longer than this are scanned for parameters in a worker thread.
SCAN_INLINE_CHARS = 16 * 1024
# Statements with more parameters than this have them converted in a worker thread.
BIND_INLINE_PARAMETERS = 1000

# Types whose JSON is short whatever the value: a result of only these is fetched at once.
FIXED_WIDTH_TYPES = frozenset(
    {
        "bool",
        "int2",
        "int4",
        "int8",
        "oid",
        "float4",
        "float8",
        "date",
        "time",
        "timetz",
        "timestamp",
        "timestamptz",
        "uuid",
        "interval",
        "money",
    }
)
FIXED_WIDTH_JSON_BYTES = 64
_encode_row = msgspec.json.Encoder(enc_hook=str).encode
_WORKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="multidb-execute")

# What a JSON parameter becomes for each PostgreSQL parameter type the server inferred.
PARAMETER_TYPES: dict[str, type] = {
    "bool": bool,
    "int2": int,
    "int4": int,
    "int8": int,
    "oid": int,
    "float4": float,
    "float8": float,
    "numeric": Decimal,
    "text": str,
    "varchar": str,
    "bpchar": str,
    "name": str,
    "uuid": uuid.UUID,
    "date": dt.date,
    "time": dt.time,
    "timetz": dt.time,
    "timestamp": dt.datetime,
    "timestamptz": dt.datetime,
    "interval": dt.timedelta,
    "bytea": bytes,
}


class ExecuteLimits(msgspec.Struct, frozen=True, kw_only=True):
    """What one execute may use: time, rows, result bytes, query bytes, time in the queue."""

    timeout_ms: int
    max_rows: int
    max_bytes: int = 8 * 1024 * 1024
    max_query_bytes: int = 256 * 1024
    queue_timeout_ms: int = 1000

    @property
    def longest_ms(self) -> int:
        """The longest one execute may take: its wait for a connection, then its run."""
        return self.queue_timeout_ms + self.timeout_ms + STUCK_NETWORK_MARGIN_MS

    @property
    def retry_after_s(self) -> int:
        """What a caller turned away is told to wait: about one queue wait."""
        return max(1, math.ceil(self.queue_timeout_ms / 1000))

    @classmethod
    def from_settings(cls, settings: Settings) -> ExecuteLimits:
        return cls(
            timeout_ms=settings.execute_timeout_ms,
            max_rows=settings.execute_max_rows,
            max_bytes=settings.execute_max_bytes,
            max_query_bytes=settings.execute_max_query_bytes,
            queue_timeout_ms=settings.execute_queue_timeout_ms,
        )


def check_request(request: ExecuteRequest, limits: ExecuteLimits) -> None:
    """Refuse (400) what PostgreSQL would refuse anyway or what exceeds a limit, before any I/O."""
    query = request.query
    if not query.strip():
        raise BadRequestError("query must not be empty")
    if len(query) > limits.max_query_bytes or len(query.encode()) > limits.max_query_bytes:
        msg = (
            f"the query is longer than {limits.max_query_bytes} bytes "
            "(MULTI_DB_EXECUTE_MAX_QUERY_BYTES)"
        )
        raise BadRequestError(msg)
    if "\x00" in query:
        # PostgreSQL's protocol ends a string at NUL: sent, it would break the connection.
        raise BadRequestError("the query contains a NUL character (\\u0000)")


async def _off_loop_when(large: bool, work: Callable[[], T]) -> T:
    """``work()``, in the one worker thread when ``large``, inline otherwise.

    The work is linear, but on a large input it would still hold every other request of
    the service for tens of milliseconds. One thread for all: several would take the GIL
    from the event loop in turns.
    """
    if not large:
        return work()
    return await asyncio.get_running_loop().run_in_executor(_WORKER, work)


async def positional_query(query: str) -> tuple[str, list[str]]:
    """:func:`~multidb.named_params.to_positional`, off the event loop for long queries."""
    return await _off_loop_when(len(query) > SCAN_INLINE_CHARS, lambda: to_positional(query))


def _listed(names: list[str], shown: int = 10) -> str:
    listed = ", ".join(":" + name for name in names[:shown])
    return listed if len(names) <= shown else f"{listed} and {len(names) - shown} more"


def bind_arguments(
    names: list[str], params: Mapping[str, Any], parameters: tuple[Any, ...]
) -> list[Any]:
    """Order ``params`` as ``$1..$n`` and convert each to the type PostgreSQL inferred."""
    missing = [name for name in names if name not in params]
    if missing:
        raise BadRequestError(f"missing parameter(s): {_listed(missing)}")
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise BadRequestError(f"unknown parameter(s): {_listed(unknown)}")
    if len(parameters) != len(names):
        msg = f"the statement has {len(parameters)} parameter(s) for {len(names)} name(s)"
        raise BadRequestError(msg)
    arguments = []
    for name, parameter in zip(names, parameters, strict=True):
        value = params[name]
        target = PARAMETER_TYPES.get(parameter.name)
        if target is str and isinstance(value, int | float) and not isinstance(value, bool):
            # An untyped parameter is text to PostgreSQL; a JSON number is meant as its digits.
            value = str(value)
        elif target is not None and value is not None:
            try:
                value = msgspec.convert(value, target, strict=False)
            except msgspec.ValidationError as exc:
                msg = f"parameter :{name} must be a {parameter.name}: {exc}"
                raise BadRequestError(msg) from None
        arguments.append(value)
    return arguments


class Rows(msgspec.Struct, frozen=True):
    """Rows already encoded as one JSON array, with why they stop where they do."""

    json: msgspec.Raw
    count: int
    truncated_by: TruncatedBy | None


NO_ROWS = Rows(msgspec.Raw(b"[]"), 0, None)


async def fetch_rows(
    statement: asyncpg.prepared_stmt.PreparedStatement,
    arguments: list[Any],
    limits: ExecuteLimits,
) -> Rows:
    """Fetch from a cursor in batches until the rows end or the row or byte cap is reached.

    Each row is encoded to JSON as it arrives, so the answer is never larger than
    ``max_bytes``; batches start at one row when a column's width is unknown (text, bytea,
    json, arrays...) and grow by at most 4x, sized by the largest row seen, so the memory a
    batch holds stays near the cap. A first row that alone exceeds the cap is refused.
    """
    attributes = statement.get_attributes()
    fixed = all(attribute.type.name in FIXED_WIDTH_TYPES for attribute in attributes)
    row_guess = FIXED_WIDTH_JSON_BYTES * max(1, len(attributes))
    cursor = await statement.cursor(*arguments)
    parts: list[bytes] = []
    used, largest = 2, 1  # the array's brackets
    batch = max(1, min(limits.max_rows + 1, limits.max_bytes // row_guess)) if fixed else 1
    truncated_by: TruncatedBy | None = None
    while truncated_by is None:
        rows = await cursor.fetch(batch)
        for row in rows:
            if len(parts) == limits.max_rows:
                truncated_by = "rows"
                break
            encoded = _encode_row(tuple(row))
            size = len(encoded) + 1  # and its comma
            if used + size > limits.max_bytes:
                if not parts:
                    msg = (
                        f"the first row alone is {size} bytes as JSON, more than the "
                        f"{limits.max_bytes}-byte result cap (MULTI_DB_EXECUTE_MAX_BYTES); "
                        "select fewer columns or a part of the value (left(), substring())"
                    )
                    raise ResultTooLargeError(msg)
                truncated_by = "bytes"
                break
            parts.append(encoded)
            used += size
            largest = max(largest, size)
        if len(rows) < batch:
            break
        room = (limits.max_bytes - used) // largest
        batch = max(1, min(room, batch * 4, limits.max_rows + 1 - len(parts)))
    return Rows(msgspec.Raw(b"[" + b",".join(parts) + b"]"), len(parts), truncated_by)


def affected_rows(status: str | None) -> int:
    """Rows a command reported in its status ("INSERT 0 3" → 3, "UPDATE 2" → 2); else 0."""
    last = (status or "").rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class Outcome(msgspec.Struct, frozen=True):
    columns: list[str]
    rows: Rows
    row_count: int
    status: str | None
    lsn: str | None = None


async def _run(
    conn: asyncpg.Connection,
    sql: str,
    names: list[str],
    request: ExecuteRequest,
    limits: ExecuteLimits,
) -> Outcome:
    mode = "READ ONLY" if request.read_only else "READ WRITE"
    # Our own constant text, so the simple protocol is safe here; user SQL never goes this way.
    await conn.execute(f"BEGIN {mode}; SET LOCAL statement_timeout = {int(limits.timeout_ms)}")
    try:
        statement = await conn.prepare(sql)
        arguments = await _off_loop_when(
            len(names) > BIND_INLINE_PARAMETERS,
            lambda: bind_arguments(names, request.params, statement.get_parameters()),
        )
        columns = [attribute.name for attribute in statement.get_attributes()]
        if columns:
            rows = await fetch_rows(statement, arguments, limits)
            status, row_count = None, rows.count
        else:
            await statement.fetch(*arguments)
            status = statement.get_statusmsg()
            rows, row_count = NO_ROWS, affected_rows(status)
    except BaseException:
        # Failed, timed out or cancelled (asyncpg has then asked the server to cancel the
        # statement): roll back, but never wait on a connection that stopped answering.
        await _roll_back_or_close(conn)
        raise
    if request.read_only:
        await conn.execute("ROLLBACK")
        return Outcome(columns, rows, row_count, status)
    try:
        await conn.execute("COMMIT")
    except CONNECTION_ERRORS:
        # Sent, unanswered: the server may have committed before it went away.
        msg = (
            "the connection to the database was lost while committing: the write may or "
            "may not have been applied; check before sending it again"
        )
        raise CommitOutcomeUnknownError(msg) from None
    return Outcome(columns, rows, row_count, status, await _write_position(conn))


async def _write_position(conn: asyncpg.Connection) -> str | None:
    """Where WAL is inserted now, so at or past the end of the commit just made (even with
    ``synchronous_commit`` off, when the commit record may not be written out yet): a
    replica that has replayed this far sees the write. ``None`` if it cannot be read: the
    write is done, and must not look failed for that."""
    with contextlib.suppress(TimeoutError, asyncpg.PostgresError, *CONNECTION_ERRORS):
        async with asyncio.timeout(ROLLBACK_TIMEOUT_S):
            lsn: str = await conn.fetchval("SELECT pg_current_wal_insert_lsn()::text")
            return lsn
    return None


async def _roll_back_or_close(conn: asyncpg.Connection) -> None:
    try:
        async with asyncio.timeout(ROLLBACK_TIMEOUT_S):
            await conn.execute("ROLLBACK")
    except Exception:
        # Wedged (a server that will not answer, a driver that lost its place): a closed
        # connection costs a reconnect, a reused one could hang the next caller.
        conn.terminate()


def _sql_error(role: str, exc: asyncpg.PostgresError, limits: ExecuteLimits) -> MultiDBError:
    if exc.sqlstate == QUERY_CANCELED:
        msg = f"the statement ran longer than {limits.timeout_ms} ms and was cancelled"
        return TimeoutExceededError(msg)
    if exc.sqlstate == PROTOCOL_VIOLATION:
        # Only the caller's bytes reach the protocol unchecked (the query, bound values).
        return BadRequestError(f"PostgreSQL refused the request's bytes: {describe(exc)}")
    if isinstance(exc, CONNECTION_ERRORS):
        return DatabaseUnavailableError(f"database {role!r} is unavailable: {describe(exc)}")
    return SQLError(
        exc.args[0] if exc.args else "SQL error",
        sqlstate=exc.sqlstate,
        hint=getattr(exc, "hint", None),
        position=getattr(exc, "position", None),
    )


async def _acquire(
    pool: asyncpg.Pool,
    role: str,
    limits: ExecuteLimits,
    waiting: contextlib.AbstractContextManager[None],
) -> asyncpg.Connection:
    """A connection of the execute pool, or 503 with Retry-After once the queue wait is up."""
    try:
        with waiting:
            conn: asyncpg.Connection = await pool.acquire(timeout=limits.queue_timeout_ms / 1000)
    except TimeoutError:
        msg = (
            f"every connection for statements on {role!r} stayed busy for "
            f"{limits.queue_timeout_ms} ms; retry later"
        )
        retry = str(limits.retry_after_s)
        raise DatabaseUnavailableError(msg, headers={"Retry-After": retry}) from None
    except asyncpg.PostgresError as exc:
        raise _sql_error(role, exc, limits) from None
    except CONNECTION_ERRORS as exc:
        raise DatabaseUnavailableError(
            f"database {role!r} is unavailable: {describe(exc)}"
        ) from None
    return conn


async def _give_back(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    try:
        await pool.release(conn, timeout=RELEASE_TIMEOUT_S)
    except Exception as exc:
        log.warning("execute connection not returned cleanly: %s", describe(exc))
        # The pool may have taken it back already (its server went away during the
        # reset): then it is the pool's to close, and the proxy refuses.
        with contextlib.suppress(asyncpg.InterfaceError):
            conn.terminate()


async def execute(
    pool: asyncpg.Pool,
    role: str,
    request: ExecuteRequest,
    limits: ExecuteLimits,
    waiting: contextlib.AbstractContextManager[None] | None = None,
) -> ExecuteResult:
    """Run ``request`` on ``pool``; raise a :class:`~multidb.errors.MultiDBError` on failure.

    Cancelling the calling task (the caller went away) cancels the statement in PostgreSQL.
    ``waiting`` is entered while the request waits for a connection (the pool's metrics).
    """
    check_request(request, limits)
    sql, names = await positional_query(request.query)
    started = time.perf_counter()
    conn = await _acquire(pool, role, limits, waiting or contextlib.nullcontext())
    # The server cancels at statement_timeout; this deadline only covers a stuck network.
    deadline = (limits.timeout_ms + STUCK_NETWORK_MARGIN_MS) / 1000
    try:
        async with asyncio.timeout(deadline):
            outcome = await _run(conn, sql, names, request, limits)
    except asyncpg.PostgresError as exc:
        raise _sql_error(role, exc, limits) from None
    except TimeoutError:
        msg = f"no answer from database {role!r} within {deadline:.1f} s"
        raise TimeoutExceededError(msg) from None
    except CONNECTION_ERRORS as exc:
        raise DatabaseUnavailableError(
            f"database {role!r} is unavailable: {describe(exc)}"
        ) from None
    finally:
        await _give_back(pool, conn)
    return ExecuteResult(
        database=role,
        query=request.query,
        params=request.params,
        result=outcome.rows.json,
        columns=outcome.columns,
        row_count=outcome.row_count,
        truncated=outcome.rows.truncated_by is not None,
        truncated_by=outcome.rows.truncated_by,
        duration_ms=round((time.perf_counter() - started) * 1000, 3),
        read_only=request.read_only,
        status=outcome.status,
        lsn=outcome.lsn,
    )
