"""The log search behind ``GET /logs``: parameters checked, then one bounded keyset ``SELECT``.

Newest first (``created_at DESC, id DESC``): the order of the indexes
``(created_at DESC, id DESC)`` and ``(level, created_at DESC, id DESC)``, so a page walks
an index and stops at the limit, and ``since``/``until`` (default: the last 24 hours)
leave the daily partitions outside the range unread. ``level`` is a minimum: one branch per
level at or above it, each walking the level index, merged (a single ``level = ANY(...)``
scan could not use that index's order). The cursor is the (``created_at``, ``id``) of the
last row of a page, encoded (:func:`encode_cursor`); the next page starts after it, so rows
that arrive meanwhile (newer) never shift a page and no row is shown twice.

A page holds ``limit`` rows unless their text passes :data:`MAX_PAGE_BYTES` (2 MiB) first; it
then ends early and ``next_cursor`` goes on from there. Every figure here is a bound, so the
handler's work stays bounded whatever the table holds.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, timedelta
from typing import Annotated, Any

import asyncpg
import msgspec

from multidb.errors import BadRequestError
from multidb.queries import (
    LogEntry,
    LogPage,
    checked_text,
    parse_timestamp,
    read_bounded,
)

PARAMETERS = ("level", "since", "until", "logger", "request_id", "q", "limit", "cursor")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEFAULT_RANGE = timedelta(hours=24)
DEFAULT_LIMIT = 100
MAX_LIMIT = 500
MAX_PAGE_BYTES = 2 * 1024 * 1024
MAX_LOGGER = 255
MAX_REQUEST_ID = 64
MAX_Q = 1000
MAX_CURSOR = 200
WHOLE_NUMBER = "0123456789"

COLUMNS = "id, created_at, level, logger, message, context, request_id, event_id"
# The same, with the context as its JSON text (decoded once, by msgspec).
ANSWERED = "id, created_at, level, logger, message, context_text, request_id, event_id"


class Cursor(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """Where a page ended: its last row's ``created_at`` and ``id``."""

    created_at: Annotated[datetime, msgspec.Meta(tz=True)]
    id: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


_decode_cursor = msgspec.json.Decoder(Cursor).decode
_encode = msgspec.json.Encoder().encode


def encode_cursor(created_at: datetime, row_id: int) -> str:
    """The opaque cursor of a page that ended at this row (base64url, no padding)."""
    raw = _encode(Cursor(created_at=created_at, id=row_id))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(text: str) -> Cursor:
    """The position a cursor names; a :class:`BadRequestError` for anything this service
    did not hand out."""
    if len(text) > MAX_CURSOR:
        raise BadRequestError(f"cursor: at most {MAX_CURSOR} characters (got {len(text)})")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return _decode_cursor(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        msg = "cursor: not a cursor this service gave out (pass next_cursor back unchanged)"
        raise BadRequestError(msg) from None


class LogQuery(msgspec.Struct, frozen=True, kw_only=True):
    since: datetime
    until: datetime
    levels: tuple[str, ...] | None
    logger: str | None
    request_id: str | None
    q: str | None
    limit: int
    after: Cursor | None


def _level(text: str) -> tuple[str, ...]:
    wanted = text.strip().upper()
    if wanted not in LEVELS:
        msg = f"level: {text[:32]!r} is not one of {', '.join(LEVELS)}"
        raise BadRequestError(msg)
    return LEVELS[LEVELS.index(wanted) :]


def _limit(text: str) -> int:
    if not text or len(text) > 6 or text.strip(WHOLE_NUMBER):
        raise BadRequestError(f"limit: {text[:32]!r} is not a whole number")
    limit = int(text)
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequestError(f"limit: must be from 1 to {MAX_LIMIT} (got {limit})")
    return limit


def like_pattern(text: str) -> str:
    """``text`` as a LIKE pattern matching itself anywhere: ``%``, ``_`` and ``\\`` literal."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def parse_query(
    *,
    level: str | None,
    since: str | None,
    until: str | None,
    logger: str | None,
    request_id: str | None,
    q: str | None,
    limit: str | None,
    cursor: str | None,
    now: datetime,
) -> LogQuery:
    """The checked parameters of a log search; :class:`BadRequestError` says what is wrong."""
    end = parse_timestamp("until", until) if until is not None else now
    start = parse_timestamp("since", since) if since is not None else end - DEFAULT_RANGE
    if start >= end:
        msg = f"since ({start.isoformat()}) must be before until ({end.isoformat()})"
        raise BadRequestError(msg)
    return LogQuery(
        since=start,
        until=end,
        levels=_level(level) if level is not None else None,
        logger=checked_text("logger", logger, MAX_LOGGER),
        request_id=checked_text("request_id", request_id, MAX_REQUEST_ID),
        q=checked_text("q", q, MAX_Q),
        limit=_limit(limit) if limit is not None else DEFAULT_LIMIT,
        after=decode_cursor(cursor) if cursor is not None else None,
    )


def build_sql(query: LogQuery) -> tuple[str, list[object]]:
    """The page's ``SELECT`` and its arguments: fixed fragments only, every value bound."""
    args: list[object] = []

    def bind(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    limit = bind(query.limit + 1)  # one more than asked: is there a next page?
    budget = bind(MAX_PAGE_BYTES)
    where = [f"created_at >= {bind(query.since)}", f"created_at < {bind(query.until)}"]
    if query.after is not None:
        at, last_id = bind(query.after.created_at), bind(query.after.id)
        # The plain bound lets the planner prune partitions; the row comparison is the keyset.
        where += [f"created_at <= {at}", f"(created_at, id) < ({at}, {last_id})"]
    if query.logger is not None:
        where.append(f"logger = {bind(query.logger)}")
    if query.request_id is not None:
        where.append(f"request_id = {bind(query.request_id)}")
    if query.q is not None:
        where.append(f"message ILIKE {bind(like_pattern(query.q))} ESCAPE '\\'")
    common = " AND ".join(where)
    order = "ORDER BY created_at DESC, id DESC"

    def branch(condition: str) -> str:
        return f"(SELECT {COLUMNS} FROM application_logs WHERE {condition} {order} LIMIT {limit})"

    if query.levels is None:
        page = branch(common)
    else:
        # The level names are our own constants (LEVELS), never input.
        branches = [branch(f"level = '{name}' AND {common}") for name in query.levels]
        page = f"SELECT * FROM ({' UNION ALL '.join(branches)}) AS levels {order} LIMIT {limit}"
    sql = f"""
SELECT {ANSWERED}, found FROM (
    SELECT sized.*,
           sum(size) OVER (ORDER BY created_at DESC, id DESC ROWS UNBOUNDED PRECEDING) - size
             AS before,
           count(*) OVER () AS found
    FROM (
        SELECT page.*, page.context::text AS context_text,
               octet_length(page.message) + octet_length(page.logger)
                 + octet_length(page.context::text) + 200 AS size
        FROM ({page}) AS page
    ) AS sized
) AS bounded
WHERE before < {budget}
{order}
"""
    return sql, args


def _entry(row: asyncpg.Record) -> LogEntry:
    return LogEntry(
        id=row["id"],
        created_at=row["created_at"],
        level=row["level"],
        logger=row["logger"],
        message=row["message"],
        context=msgspec.json.decode(row["context_text"]),
        request_id=row["request_id"],
        event_id=row["event_id"],
    )


async def search_logs(pool: asyncpg.Pool, query: LogQuery) -> LogPage:
    """One page of the logs ``query`` asks for, with the cursor of the next one."""
    sql, args = build_sql(query)
    rows: list[Any] = await read_bounded(pool, "logging", "the logs", sql, *args)
    kept = rows[: query.limit]
    more = bool(rows) and rows[0]["found"] > len(kept)
    last = kept[-1] if kept else None
    next_cursor = encode_cursor(last["created_at"], last["id"]) if more and last else None
    return LogPage(logs=[_entry(row) for row in kept], next_cursor=next_cursor)
