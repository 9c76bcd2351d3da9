"""Writing a batch: one transaction, ``COPY`` into TEMP staging tables, then ``INSERT``.

``COPY`` (asyncpg's ``copy_records_to_table``, binary) is the fastest way in, but it
cannot skip rows already stored. So a batch is copied into TEMP tables (one per
connection, emptied at each commit: ``ON COMMIT DELETE ROWS``), and the role's statements
move it into its tables with
``INSERT ... SELECT ... FROM <staging> ON CONFLICT (event_id, <ts>) DO NOTHING``: a batch
sent again stores nothing twice, and a batch is stored whole or not at all.

A value PostgreSQL refuses while copying is a 400 naming the record (by the ``COPY``'s
line) and the column. When a row has no daily partition to go to, the role's ``ensure``
creates the partitions and the batch is tried again; so is a batch that lost a deadlock
(two batches holding the same event ids, sent at once). A database that cannot be reached
is a 503, one that does not finish in time a 504; either way nothing was stored.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

import asyncpg
import msgspec

from multidb.errors import (
    CONNECTION_ERRORS,
    BadRequestError,
    DatabaseUnavailableError,
    TimeoutExceededError,
    describe,
)

T = TypeVar("T")
# How long one batch may take in the database, COPY and INSERTs together.
WRITE_TIMEOUT_S = 30.0
# Attempts of a batch that lost a deadlock or a serialization conflict.
ATTEMPTS = 3
# "COPY ingest_logs, line 3, column context: ..." (the CONTEXT of a refused COPY value).
_COPY_LINE = re.compile(r"COPY (?P<table>\w+), line (?P<line>\d+)(?:, column (?P<column>\w+))?")
_NO_PARTITION = "no partition of relation"


class Staging(msgspec.Struct, frozen=True):
    """A TEMP table a batch is copied into: ``name`` and ``(column, type)`` pairs, in the
    order of the rows' values."""

    name: str
    columns: tuple[tuple[str, str], ...]

    @property
    def names(self) -> list[str]:
        return [column for column, _ in self.columns]

    @property
    def create(self) -> str:
        listed = ", ".join(f"{column} {kind}" for column, kind in self.columns)
        # Made once per connection and emptied at each commit: creating and dropping a
        # table per batch costs catalog writes (measured ~8% of a batch).
        return f"CREATE TEMP TABLE IF NOT EXISTS {self.name} ({listed}) ON COMMIT DELETE ROWS"


class Staged(msgspec.Struct, frozen=True):
    """``rows`` for ``staging``; ``indexes[i]`` is the batch index of ``rows[i]`` (when
    the rows are not the whole batch in order), for the messages that name a record."""

    staging: Staging
    rows: Sequence[Sequence[Any]]
    indexes: Sequence[int] | None = None

    def index(self, line: int) -> int:
        return line - 1 if self.indexes is None else self.indexes[line - 1]


async def copy_into_staging(conn: asyncpg.Connection, staged: Sequence[Staged]) -> None:
    """Create each staging table and copy its rows into it (in the caller's transaction)."""
    for part in staged:
        await conn.execute(part.staging.create)
        if part.rows:
            await conn.copy_records_to_table(
                part.staging.name, records=part.rows, columns=part.staging.names
            )


def _refused(exc: asyncpg.PostgresError, role: str, staged: Sequence[Staged]) -> BadRequestError:
    where = _COPY_LINE.search(getattr(exc, "context", None) or "")
    part = next((p for p in staged if where and p.staging.name == where["table"]), None)
    if where is None or part is None:
        return BadRequestError(f"the {role} database refused the batch: {describe(exc)}")
    index = part.index(int(where["line"]))
    field = where["column"]
    said = f"record {index}" + (f", field '{field}'" if field else "")
    return BadRequestError(f"{said}: {describe(exc)}", index=index, field=field)


def _missing_partition(exc: asyncpg.PostgresError) -> bool:
    return isinstance(exc, asyncpg.CheckViolationError) and _NO_PARTITION in str(exc)


async def _attempts(
    conn: asyncpg.Connection,
    staged: Sequence[Staged],
    write: Callable[[asyncpg.Connection], Awaitable[T]],
    ensure: Callable[[asyncpg.Connection], Awaitable[object]] | None,
) -> T:
    ensured = False
    lost = 0  # attempts lost to a deadlock; creating partitions is not one
    while True:
        try:
            async with conn.transaction():
                await copy_into_staging(conn, staged)
                return await write(conn)
        except asyncpg.TransactionRollbackError:
            lost += 1
            if lost == ATTEMPTS:
                raise
        except asyncpg.CheckViolationError as exc:
            if ensure is None or ensured or not _missing_partition(exc):
                raise
            await ensure(conn)
            ensured = True


async def write_batch(
    acquire: Callable[[], AbstractAsyncContextManager[asyncpg.Connection]],
    role: str,
    staged: Sequence[Staged],
    write: Callable[[asyncpg.Connection], Awaitable[T]],
    *,
    ensure: Callable[[asyncpg.Connection], Awaitable[object]] | None = None,
    timeout_s: float = WRITE_TIMEOUT_S,
) -> T:
    """Copy each of ``staged`` into its staging table and run ``write`` (the role's
    statements, reading them) in one transaction on a connection of ``acquire``;
    ``write``'s result.

    When a row has no partition to go to, ``ensure`` (creating the partitions the batch
    needs) runs and the batch is tried once more.
    """
    try:
        async with asyncio.timeout(timeout_s), acquire() as conn:
            return await _attempts(conn, staged, write, ensure)
    except TimeoutError:
        msg = f"writing the batch to {role!r} took over {timeout_s:g} s; nothing was stored"
        raise TimeoutExceededError(msg) from None
    except CONNECTION_ERRORS as exc:
        msg = f"database {role!r} is unavailable: {describe(exc)}"
        raise DatabaseUnavailableError(msg) from None
    except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
        raise _refused(exc, role, staged) from None
    except asyncpg.TransactionRollbackError as exc:
        msg = f"database {role!r} kept refusing the batch: {describe(exc)}; send it again"
        raise DatabaseUnavailableError(msg, headers={"Retry-After": "1"}) from None
