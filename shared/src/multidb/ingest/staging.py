"""Writing a batch: one transaction, ``COPY`` into a TEMP staging table, then ``INSERT``.

``COPY`` (asyncpg's ``copy_records_to_table``, binary) is the fastest way in, but it
cannot skip rows already stored. So a batch is copied into a TEMP table that lives until
the commit (``ON COMMIT DROP``), and the role's statements move it into its tables with
``INSERT ... SELECT ... FROM <staging> ON CONFLICT (event_id, <ts>) DO NOTHING``: a batch
sent again stores nothing twice, and a batch is stored whole or not at all.

A value PostgreSQL refuses while copying is a 400 naming the record (the ``COPY``'s line)
and the column; a missing daily partition is created (by the role's ``ensure`` callback)
and the batch tried once more; a database that cannot be reached is a 503, one that does
not finish in time a 504 (the transaction is rolled back).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
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
# "COPY ingest_logs, line 3, column context: ..." (the CONTEXT of a refused COPY value).
_COPY_LINE = re.compile(r"COPY \w+, line (?P<line>\d+)(?:, column (?P<column>\w+))?")
_NO_PARTITION = "no partition of relation"


class Staging(msgspec.Struct, frozen=True):
    """A TEMP table a batch is copied into: ``name`` and ``(column, type)`` pairs, in the
    order of the rows given to :func:`write_batch`."""

    name: str
    columns: tuple[tuple[str, str], ...]

    @property
    def names(self) -> list[str]:
        return [column for column, _ in self.columns]

    @property
    def create(self) -> str:
        listed = ", ".join(f"{column} {kind}" for column, kind in self.columns)
        return f"CREATE TEMP TABLE {self.name} ({listed}) ON COMMIT DROP"


async def copy_into_staging(
    conn: asyncpg.Connection, staging: Staging, rows: Iterable[Sequence[Any]]
) -> None:
    """Create ``staging`` and copy ``rows`` into it (inside the caller's transaction)."""
    await conn.execute(staging.create)
    await conn.copy_records_to_table(staging.name, records=rows, columns=staging.names)


def _refused(exc: asyncpg.PostgresError, role: str) -> BadRequestError:
    where = _COPY_LINE.search(getattr(exc, "context", None) or "")
    if where is None:
        return BadRequestError(f"the {role} database refused the batch: {describe(exc)}")
    index = int(where["line"]) - 1
    field = where["column"]
    said = f"record {index}" + (f", field '{field}'" if field else "")
    return BadRequestError(f"{said}: {describe(exc)}", index=index, field=field)


def _missing_partition(exc: asyncpg.PostgresError) -> bool:
    return isinstance(exc, asyncpg.CheckViolationError) and _NO_PARTITION in str(exc)


async def write_batch(
    acquire: Callable[[], AbstractAsyncContextManager[asyncpg.Connection]],
    role: str,
    staging: Staging,
    rows: Sequence[Sequence[Any]],
    write: Callable[[asyncpg.Connection], Awaitable[T]],
    *,
    ensure: Callable[[asyncpg.Connection], Awaitable[object]] | None = None,
    timeout_s: float = WRITE_TIMEOUT_S,
) -> T:
    """Copy ``rows`` into ``staging`` and run ``write`` (the role's statements, reading
    ``staging``) in one transaction on a connection of ``acquire``; ``write``'s result.

    When a row has no partition to go to, ``ensure`` (creating the partitions the batch
    needs) runs and the batch is tried once more.
    """
    try:
        async with asyncio.timeout(timeout_s), acquire() as conn:
            for attempt in range(2):
                try:
                    async with conn.transaction():
                        await copy_into_staging(conn, staging, rows)
                        return await write(conn)
                except asyncpg.CheckViolationError as exc:
                    if ensure is None or attempt or not _missing_partition(exc):
                        raise
                await ensure(conn)
            msg = "unreachable: the second attempt returns or raises"
            raise AssertionError(msg)
    except TimeoutError:
        msg = f"writing the batch to {role!r} took over {timeout_s:g} s; nothing was stored"
        raise TimeoutExceededError(msg) from None
    except CONNECTION_ERRORS as exc:
        msg = f"database {role!r} is unavailable: {describe(exc)}"
        raise DatabaseUnavailableError(msg) from None
    except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
        raise _refused(exc, role) from None
