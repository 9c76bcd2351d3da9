"""The roles' read APIs over their own data: bounded reads, their parameters, wire types.

The logging service's ``GET /logs`` and the analytics service's ``GET /events/rollup``
(and the gateway routes that forward to them) share these: the answers' wire types (the
gateway decodes an answer before passing it on), the parsing of a timestamp parameter,
and :func:`read_bounded`, which runs one fixed ``SELECT`` in a read-only transaction with
a server-side ``statement_timeout``, so a query that would scan too much is cancelled by
PostgreSQL itself, even when the caller has gone away.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, Protocol

import asyncpg
import msgspec

from multidb.errors import (
    CONNECTION_ERRORS,
    BadRequestError,
    DatabaseUnavailableError,
    TimeoutExceededError,
    describe,
)

QUERY_TIMEOUT_MS = 5000
# The server cancels at statement_timeout; these only cover a busy pool and a stuck network.
ACQUIRE_TIMEOUT_S = 5.0
STUCK_NETWORK_MARGIN_S = 1.0
ROLLBACK_TIMEOUT_S = 2.0
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LONGEST_TIMESTAMP = 64

UtcTime = Annotated[datetime, msgspec.Meta(tz=True)]


class LogEntry(msgspec.Struct, kw_only=True):
    """One application log record, as stored (``context``: the JSON object sent with it)."""

    id: int
    created_at: UtcTime
    level: str
    logger: str
    message: str
    context: Any
    request_id: str | None
    event_id: str | None


class LogPage(msgspec.Struct, kw_only=True):
    """A page of log records, newest first; ``next_cursor`` asks for the next (older) page,
    ``None`` once there is none."""

    logs: list[LogEntry]
    next_cursor: str | None


class RollupPoint(msgspec.Struct, kw_only=True):
    """Events named ``name`` in the bucket that starts at ``t`` (an hour or a UTC day)."""

    t: UtcTime
    events: int


class EventRollup(msgspec.Struct, kw_only=True):
    """Event counts per ``step`` (``hour`` or ``day``) for every bucket from the one holding
    ``since`` to the one holding ``until``, oldest first (zero where none arrived)."""

    name: str
    step: str
    since: UtcTime
    until: UtcTime
    points: list[RollupPoint]


def parse_timestamp(name: str, text: str) -> datetime:
    """An ISO-8601 timestamp parameter in UTC (one without a zone is read as UTC); a
    :class:`BadRequestError` naming ``name`` otherwise."""
    shown = text[:LONGEST_TIMESTAMP]
    try:
        if len(text) > LONGEST_TIMESTAMP:
            raise ValueError(text)
        value = datetime.fromisoformat(text.strip())
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError):
        msg = f"{name}: {shown!r} is not an ISO-8601 timestamp (like 2026-11-29T04:00:00Z)"
        raise BadRequestError(msg) from None
    if value < EARLIEST:
        msg = f"{name}: {value.isoformat()} is before 1970-01-01T00:00:00Z"
        raise BadRequestError(msg)
    return value


class QueryParams(Protocol):
    def getall(self, key: str, default: list[str]) -> list[str]: ...


def refuse_repeated(params: QueryParams, names: Iterable[str]) -> None:
    """A :class:`BadRequestError` when one of ``names`` is given more than once (each is
    one value; quietly using one of them would answer a question nobody asked)."""
    for name in names:
        count = len(params.getall(name, []))
        if count > 1:
            raise BadRequestError(f"give '{name}' once (it was given {count} times)")


def checked_text(name: str, text: str | None, longest: int) -> str | None:
    """A free-text filter, at most ``longest`` characters and without NUL (PostgreSQL text
    cannot hold one, so it could never match)."""
    if text is None:
        return None
    if len(text) > longest:
        msg = f"{name}: at most {longest} characters (got {len(text)})"
        raise BadRequestError(msg)
    if "\x00" in text:
        raise BadRequestError(f"{name}: must not contain a NUL character")
    return text


async def _roll_back_or_close(conn: asyncpg.Connection) -> None:
    try:
        async with asyncio.timeout(ROLLBACK_TIMEOUT_S):
            await conn.execute("ROLLBACK")
    except Exception:
        # A connection that will not answer could hang the next caller: close it instead.
        conn.terminate()


async def _read(conn: asyncpg.Connection, sql: str, args: tuple[object, ...]) -> list[Any]:
    # Our own constant text, so the simple protocol is safe here.
    await conn.execute(f"BEGIN READ ONLY; SET LOCAL statement_timeout = {QUERY_TIMEOUT_MS}")
    try:
        rows: list[Any] = await conn.fetch(sql, *args)
    except BaseException:
        # Failed, timed out or cancelled (asyncpg has then asked the server to cancel the
        # statement): the pool skips its reset, so never give back an open transaction.
        await _roll_back_or_close(conn)
        raise
    await conn.execute("ROLLBACK")
    return rows


async def read_bounded(
    pool: asyncpg.Pool, role: str, what: str, sql: str, *args: object
) -> list[Any]:
    """The rows of one fixed read-only ``sql``, cancelled by the server after
    :data:`QUERY_TIMEOUT_MS` (a 504 that says so); an unreachable database is a 503.
    ``what`` names the data in messages ("the logs")."""
    deadline = QUERY_TIMEOUT_MS / 1000 + STUCK_NETWORK_MARGIN_S
    try:
        conn = await pool.acquire(timeout=ACQUIRE_TIMEOUT_S)
    except TimeoutError:
        msg = f"every connection to database {role!r} stayed busy for {ACQUIRE_TIMEOUT_S:g} s"
        raise DatabaseUnavailableError(msg) from None
    except CONNECTION_ERRORS as exc:
        msg = f"database {role!r} is unavailable: {describe(exc)}"
        raise DatabaseUnavailableError(msg) from None
    try:
        async with asyncio.timeout(deadline):
            return await _read(conn, sql, args)
    except asyncpg.QueryCanceledError:
        msg = f"reading {what} took over {QUERY_TIMEOUT_MS} ms; narrow the range or the filters"
        raise TimeoutExceededError(msg) from None
    except TimeoutError:
        msg = f"no answer from database {role!r} within {deadline:g} s while reading {what}"
        raise TimeoutExceededError(msg) from None
    except CONNECTION_ERRORS as exc:
        msg = f"database {role!r} is unavailable: {describe(exc)}"
        raise DatabaseUnavailableError(msg) from None
    finally:
        await pool.release(conn)
