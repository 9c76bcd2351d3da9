"""Copying one table: COPY out of the source and into the target, in keyset batches.

Every read of the source runs in one snapshot: a REPEATABLE READ, READ ONLY transaction
that exports it (``pg_export_snapshot()``), and each worker's connection imports it
(``SET TRANSACTION SNAPSHOT``), so tables copied side by side, and the verification after
them, see the same source. A batch is the rows after the last key copied up to a bound
found on the source's primary key index (``ORDER BY key LIMIT 1 OFFSET batch - 1``:
an index walk of one batch, never an OFFSET from the start), streamed through a small
queue from ``copy_from_query`` into ``copy_to_table``: one COPY, one commit in the target.
Batches of a table run in key order, so an interrupted copy leaves a prefix of the table
in the target and ``--resume`` continues after the target's greatest key.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from multidb.partitions import ensure_daily_partitions, quote_identifier
from multidb.split.plan import TablePlan

BATCH_ROWS = 10_000
# Chunks of COPY data between the two connections: memory stays bounded by this many
# chunks (each one network read) whatever the table's size.
QUEUE_CHUNKS = 16

# The most one batch's COPY may take, out of the source and into the target alike: a bound
# on a wait that would otherwise be endless (a peer gone without closing its connection).
BATCH_TIMEOUT_S = 30 * 60

# (table plan, rows copied so far) after each batch.
BatchDone = Callable[[TablePlan, int], None]


class _SourceFailedError(Exception):
    """Raised into the target's COPY when the source's side of the batch failed."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class Copied:
    rows: int = 0
    bytes: int = 0
    seconds: float = 0.0
    resumed_after: tuple[Any, ...] | None = None


async def begin_snapshot(conn: asyncpg.Connection, snapshot: str | None = None) -> str:
    """Open ``conn``'s REPEATABLE READ, READ ONLY transaction: in ``snapshot`` when given,
    otherwise in a new one it exports. The snapshot's name."""
    await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    if snapshot is not None:
        await conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
        return snapshot
    exported: str = await conn.fetchval("SELECT pg_export_snapshot()")
    return exported


def _keys(key: Sequence[str]) -> str:
    return ", ".join(quote_identifier(name) for name in key)


def _placeholders(key: Sequence[str], start: int) -> str:
    return ", ".join(f"${start + i}" for i in range(len(key)))


def _after(plan: TablePlan, start: int) -> str:
    return f"({_keys(plan.key)}) > ({_placeholders(plan.key, start)})"


async def last_key(conn: asyncpg.Connection, plan: TablePlan) -> tuple[Any, ...] | None:
    """The greatest key of ``plan``'s table on ``conn`` (None when empty)."""
    descending = ", ".join(f"{quote_identifier(name)} DESC" for name in plan.key)
    row = await conn.fetchrow(
        f"SELECT {_keys(plan.key)} FROM {plan.quoted} ORDER BY {descending} LIMIT 1"
    )
    return None if row is None else tuple(row)


async def _bound(
    source: asyncpg.Connection, plan: TablePlan, after: tuple[Any, ...] | None, rows: int
) -> tuple[Any, ...] | None:
    """The key of the last row of the next batch (None: the batch is the rest)."""
    where = f"WHERE {_after(plan, 2)} " if after is not None else ""
    row = await source.fetchrow(
        f"SELECT {_keys(plan.key)} FROM {plan.quoted} {where}"
        f"ORDER BY {_keys(plan.key)} LIMIT 1 OFFSET $1",
        rows - 1,
        *(after or ()),
    )
    return None if row is None else tuple(row)


async def _stream(
    source: asyncpg.Connection,
    target: asyncpg.Connection,
    plan: TablePlan,
    query: str,
    args: Sequence[Any],
) -> tuple[int, int]:
    """COPY ``query``'s rows from ``source`` into ``plan``'s table in ``target``: (rows, bytes)."""
    # Chunks, then None at the end, or the source's error when it failed midway.
    queue: asyncio.Queue[bytes | Exception | None] = asyncio.Queue(QUEUE_CHUNKS)
    size = 0
    fmt = "binary" if plan.binary else "text"

    async def sink(chunk: bytes) -> None:
        nonlocal size
        size += len(chunk)
        await queue.put(chunk)

    async def chunks() -> AsyncIterator[bytes]:
        while (chunk := await queue.get()) is not None:
            if isinstance(chunk, Exception):
                # asyncpg aborts the target's COPY (CopyFail): none of the batch is kept,
                # the target still holds a key-ordered prefix of the table.
                raise _SourceFailedError(chunk)
            yield chunk

    async def produce() -> None:
        try:
            await source.copy_from_query(
                query, *args, output=sink, format=fmt, timeout=BATCH_TIMEOUT_S
            )
        except Exception as exc:
            await queue.put(exc)  # never an end: that would commit part of the batch
            raise
        await queue.put(None)

    producer = asyncio.ensure_future(produce())
    try:
        status = await target.copy_to_table(
            plan.table,
            source=chunks(),
            columns=list(plan.columns),
            format=fmt,
            timeout=BATCH_TIMEOUT_S,
        )
        await producer
    except _SourceFailedError as failed:
        raise failed.error from None  # the source's own error
    finally:
        if not producer.done():
            producer.cancel()
        with contextlib.suppress(BaseException):
            await producer  # its error, if any, is retrieved: it is the one raised
    return int(status.rpartition(" ")[2] or 0), size


async def copy_table(
    source: asyncpg.Connection,
    target: asyncpg.Connection,
    plan: TablePlan,
    *,
    resume: bool,
    batch_rows: int = BATCH_ROWS,
    on_batch: BatchDone | None = None,
) -> Copied:
    """Copy ``plan``'s table (after the target's last key when ``resume``), batch by batch;
    ``source`` is in the split's snapshot, ``target`` outside any transaction."""
    done = Copied()
    after = await last_key(target, plan) if resume else None
    done.resumed_after = after
    columns = ", ".join(quote_identifier(name) for name in plan.columns)
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        bound = await _bound(source, plan, after, batch_rows)
        conditions, args = [], list(after or ())
        if after is not None:
            conditions.append(_after(plan, 1))
        if bound is not None:
            upto = _placeholders(plan.key, len(args) + 1)
            conditions.append(f"({_keys(plan.key)}) <= ({upto})")
            args.extend(bound)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        query = f"SELECT {columns} FROM {plan.quoted}{where}"
        rows, size = await _stream(source, target, plan, query, args)
        done.rows += rows
        done.bytes += size
        if on_batch is not None:
            on_batch(plan, done.rows)
        if bound is None:
            break
        after = bound
    done.seconds = loop.time() - started
    return done


async def ensure_partitions(
    source: asyncpg.Connection, target: asyncpg.Connection, plan: TablePlan
) -> list[str]:
    """Create the target's daily partitions for the days of the source's rows; the names
    of those created."""
    if plan.partition_key is None:
        return []
    column = quote_identifier(plan.partition_key)
    row = await source.fetchrow(
        f"SELECT (min({column}) AT TIME ZONE 'UTC')::date, (max({column}) AT TIME ZONE 'UTC')::date"
        f" FROM {plan.quoted}"
    )
    if row is None or row[0] is None:
        return []
    return await ensure_daily_partitions(target, plan.table, row[0], row[1])


_SEQUENCE_SQL = "SELECT pg_get_serial_sequence($1, $2)"


async def _sequence_position(conn: asyncpg.Connection, sequence: str) -> int:
    """The last value ``sequence`` handed out (0 when none yet)."""
    value = await conn.fetchval(
        f"SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM {sequence}"
    )
    return int(value or 0)


async def move_sequences(
    source: asyncpg.Connection, target: asyncpg.Connection, plan: TablePlan
) -> None:
    """Set each sequence of the target table's columns (serial or identity) past both the
    copied maximum and the source's own sequence, so new rows never reuse an id."""
    for column in plan.columns:
        sequence = await target.fetchval(_SEQUENCE_SQL, plan.quoted, column)
        if sequence is None:
            continue
        highest = await target.fetchval(
            f"SELECT max({quote_identifier(column)})::bigint FROM {plan.quoted}"
        )
        wanted = int(highest or 0)
        source_sequence = await source.fetchval(_SEQUENCE_SQL, plan.quoted, column)
        if source_sequence is not None:
            wanted = max(wanted, await _sequence_position(source, source_sequence))
        if wanted > await _sequence_position(target, sequence):
            await target.execute("SELECT setval($1::regclass, $2)", sequence, wanted)
