"""Storing a batch of access records as the next links of their writer's chain.

One transaction per batch: a transaction-scoped advisory lock on the writer (so two batches
of one writer, from two gateway replicas or a retry racing its first attempt, take turns
and never fork the chain), then the event ids already stored and the chain's head, then
one ``INSERT`` over ``unnest`` of one array per column, then the new head in
``access_log_chains``. Records whose ``event_id`` is already stored (an earlier attempt, or
twice in the batch) are left out before numbering, so a retry never adds a link.

Values are made storable here, in Python (text cut to its column, NUL replaced), so the
hash covers exactly what the row holds; the ``INSERT`` returns the rows as stored and each
link is checked against them before the transaction commits.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import asyncpg
from sqlalchemy import String

from multidb.audit_records import AccessRecord
from multidb_logging.chain import GENESIS, RECORD_FIELDS, canonical, link_hash
from multidb_logging.models import AccessLog

log = logging.getLogger("multidb.logging.audit")

# The first key of the chain's advisory locks ("mdbc"); the second is hashtext(writer).
# Apart from the background jobs' key space, so a chain never waits on a job.
CHAIN_LOCK_SPACE = 0x6D646263
# A batch restarts (rolled back) when another writer stored one of its event ids meanwhile.
ATTEMPTS = 3

COLUMNS = tuple(AccessRecord.__struct_fields__)
# Text longer than its column is cut to fit rather than refused: one odd record never
# blocks a batch.
_LENGTHS: dict[str, int] = {
    column.name: column.type.length
    for column in AccessLog.__table__.columns
    if isinstance(column.type, String) and column.type.length
}
WRITER_LENGTH = _LENGTHS["chain_writer"]

LOCK_CHAIN = "SELECT pg_advisory_xact_lock($1, hashtext($2))"

# Which of the batch's event ids are stored already, and the chain's head as
# access_log_chains records it and as the table's last link has it (both, so that records
# cut off the end leave a gap after them instead of being numbered again).
CHAIN_STATE = """
SELECT
    (SELECT coalesce(array_agg(event_id), '{}') FROM access_logs
     WHERE event_id = ANY($2::text[])) AS stored,
    head.last_seq AS head_seq, head.last_hash AS head_hash,
    tail.chain_seq AS tail_seq, tail.row_hash AS tail_hash
FROM (VALUES (1)) AS one (x)
LEFT JOIN access_log_chains AS head ON head.writer = $1
LEFT JOIN LATERAL (
    SELECT chain_seq, row_hash FROM access_logs
    WHERE chain_writer = $1 ORDER BY chain_seq DESC LIMIT 1
) AS tail ON true
"""

_TYPES = (
    "text",
    "timestamptz",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "bool",
    "text",
    "int4",
    "int4",
    "float8",
    "text",
    "text",
)
_LINK_COLUMNS = ("chain_writer", "chain_seq", "prev_hash", "row_hash")
_LINK_TYPES = ("text", "int8", "text", "text")
_ARRAYS = ", ".join(f"${i}::{kind}[]" for i, kind in enumerate((*_TYPES, *_LINK_TYPES), start=1))
INSERT_LINKS = f"""
INSERT INTO access_logs ({", ".join((*COLUMNS, *_LINK_COLUMNS))})
SELECT * FROM unnest({_ARRAYS})
ON CONFLICT (event_id) DO NOTHING
RETURNING {", ".join((*RECORD_FIELDS, *_LINK_COLUMNS))}
"""

SAVE_HEAD = """
INSERT INTO access_log_chains (writer, last_seq, last_hash) VALUES ($1, $2, $3)
ON CONFLICT (writer) DO UPDATE
SET last_seq = excluded.last_seq, last_hash = excluded.last_hash, updated_at = now()
"""


class ChainMismatchError(RuntimeError):
    """A row as stored does not hash to the link computed for it: a bug, never stored."""


class _RacedError(Exception):
    """Another writer stored one of the batch's event ids after this batch looked."""


def _text(value: str, limit: int | None) -> str:
    # PostgreSQL text cannot hold NUL, and a query preview may quote one a caller sent.
    value = value.replace("\x00", "\ufffd")
    return value[:limit] if limit else value


def storable(record: AccessRecord) -> dict[str, Any]:
    """``record``'s fields as the row will hold them."""
    values: dict[str, Any] = {}
    for name in COLUMNS:
        value = getattr(record, name)
        values[name] = _text(value, _LENGTHS.get(name)) if isinstance(value, str) else value
    return values


def chain_writer(subject: str) -> str:
    """The chain a batch posted by ``subject`` extends: the subject, as the column holds it.

    Never the empty name, which is the pre-chain seal's."""
    return _text(subject, WRITER_LENGTH) or "-"


def _first_of_each(records: Iterable[AccessRecord]) -> list[AccessRecord]:
    seen: dict[str, AccessRecord] = {}
    for record in records:
        seen.setdefault(record.event_id, record)
    return list(seen.values())


def _head(state: Mapping[str, Any]) -> tuple[int, str]:
    heads = [
        (state[f"{kind}_seq"], state[f"{kind}_hash"])
        for kind in ("head", "tail")
        if state[f"{kind}_seq"] is not None
    ]
    return max(heads, default=(0, GENESIS))


def _check(rows: Sequence[asyncpg.Record], expected: Mapping[str, dict[str, Any]]) -> None:
    for row in rows:
        recomputed = link_hash(row["chain_writer"], row["chain_seq"], row["prev_hash"], row)
        if recomputed == row["row_hash"]:
            continue
        values = expected[row["event_id"]]
        differ = [
            name
            for name in RECORD_FIELDS
            if canonical("", 0, "", {**values, name: row[name]}) != canonical("", 0, "", values)
        ]
        msg = (
            f"audit chain: record {row['event_id']} reads back differently from how it was "
            f"hashed ({', '.join(differ) or 'link fields'}); the batch is not stored"
        )
        raise ChainMismatchError(msg)


async def _store_once(conn: asyncpg.Connection, writer: str, records: list[AccessRecord]) -> int:
    async with conn.transaction():
        await conn.execute(LOCK_CHAIN, CHAIN_LOCK_SPACE, writer)
        state = await conn.fetchrow(CHAIN_STATE, writer, [rec.event_id for rec in records])
        stored = set(state["stored"])
        fresh = {rec.event_id: storable(rec) for rec in records if rec.event_id not in stored}
        if not fresh:
            return 0
        seq, prev = _head(state)
        links: list[tuple[int, str, str]] = []
        for values in fresh.values():
            seq += 1
            row_hash = link_hash(writer, seq, prev, values)
            links.append((seq, prev, row_hash))
            prev = row_hash
        arrays = [[values[name] for values in fresh.values()] for name in COLUMNS]
        rows = await conn.fetch(
            INSERT_LINKS,
            *arrays,
            [writer] * len(links),
            *([link[i] for link in links] for i in range(3)),
        )
        if len(rows) != len(fresh):
            raise _RacedError
        _check(rows, fresh)
        await conn.execute(SAVE_HEAD, writer, seq, prev)
        return len(rows)


async def store_records(
    conn: asyncpg.Connection, writer: str, records: Sequence[AccessRecord]
) -> int:
    """Store ``records`` as the next links of ``writer``'s chain; return how many were new.

    Raises :class:`ChainMismatchError` (nothing stored) when a row reads back differently
    from how it was hashed, and asyncpg's errors as they come (nothing stored either).
    """
    batch = _first_of_each(records)
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return await _store_once(conn, writer, batch)
        except _RacedError:
            log.warning(
                "audit chain %r: an event id of the batch was stored by another writer "
                "meanwhile; attempt %d of %d",
                writer,
                attempt,
                ATTEMPTS,
            )
    msg = f"audit chain {writer!r}: the batch kept racing another writer; not stored"
    raise ChainMismatchError(msg)
