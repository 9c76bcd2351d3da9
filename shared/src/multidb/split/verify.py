"""The same checksum of a table on both sides of a split.

``count(*)`` and the sum, as a number, of the first 64 bits of ``md5(ROW(columns)::text)``
of every row: independent of the rows' order (no sort of a large table), computed by each
server over its own copy. The columns are the copied ones, in the source's order; where
the target's type differs, the target's side casts the column to the source's type, so
both sides hash the same text. Both sessions run with the settings of
:data:`multidb.split.source.SESSION_SETTINGS` (UTC, ISO dates, the same float digits).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import asyncpg

from multidb.partitions import quote_identifier


@dataclass(frozen=True)
class Checksum:
    rows: int
    sum: int

    def __str__(self) -> str:
        return f"{self.rows} rows, {self.sum & 0xFFFFFFFFFFFFFFFF:016x}"


def checksum_sql(table: str, columns: Sequence[str], casts: Mapping[str, str]) -> str:
    listed = ", ".join(
        f"{quote_identifier(name)}::{casts[name]}" if name in casts else quote_identifier(name)
        for name in columns
    )
    return (
        "SELECT count(*), coalesce(sum(('x' || left(md5(ROW("
        + listed
        + ")::text), 16))::bit(64)::bigint), 0)::text FROM "
        + quote_identifier(table)
    )


async def checksum(
    conn: asyncpg.Connection,
    table: str,
    columns: Sequence[str],
    casts: Mapping[str, str] | None = None,
) -> Checksum:
    """The checksum of ``table`` as ``conn`` sees it (in its transaction's snapshot)."""
    row = await conn.fetchrow(checksum_sql(table, columns, casts or {}))
    assert row is not None  # noqa: S101 - an aggregate always answers one row
    return Checksum(int(row[0]), int(row[1]))
