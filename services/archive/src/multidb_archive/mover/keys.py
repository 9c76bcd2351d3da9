"""What moves with a row, read from the default database's foreign keys at run time.

For an archivable table, every foreign key that points at it (or at a table moving with
it) decides one of three things:

- ``ON DELETE CASCADE`` from a table that is not archivable itself: those rows would be
  deleted with the row, so they move with it (``dependents``) and come back with it;
- ``ON DELETE SET NULL`` from a table that is not archivable: PostgreSQL clears the key
  when the row goes; the ids of those rows are kept (``links``) and the key is set back on
  unarchive;
- anything else (a key from another archivable table, whatever its action, or a
  ``NO ACTION``/``RESTRICT``/``SET DEFAULT`` key): the row is held back while such a row
  points at it. So a medium waits for its derived media, and a user for their people and
  media: children leave first, and parents come back first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import asyncpg
import msgspec

from multidb_archive.mover.catalog import SOURCE_TABLES, Archivable

FOREIGN_KEYS_SQL = """
SELECT src.relname AS referencing, a.attname AS column, tgt.relname AS referenced,
       ta.attname AS referenced_column, c.confdeltype::text AS action
FROM pg_constraint c
JOIN pg_class src ON src.oid = c.conrelid
JOIN pg_class tgt ON tgt.oid = c.confrelid
JOIN pg_namespace n ON n.oid = tgt.relnamespace
JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
JOIN pg_attribute ta ON ta.attrelid = c.confrelid AND ta.attnum = c.confkey[1]
WHERE c.contype = 'f' AND n.nspname = current_schema() AND cardinality(c.conkey) = 1
ORDER BY src.relname, a.attname
"""
TABLES_SQL = """
SELECT c.relname, EXISTS (
    SELECT 1 FROM pg_attribute a
    WHERE a.attrelid = c.oid AND a.attname = 'id' AND NOT a.attisdropped
) AS has_id
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
"""


class ForeignKey(msgspec.Struct, frozen=True, kw_only=True):
    referencing: str
    column: str
    referenced: str
    referenced_column: str
    action: str  # pg_constraint.confdeltype: c cascade, n set null, a/r/d the others

    @property
    def name(self) -> str:
        return f"{self.referencing}.{self.column}"


class Path(msgspec.Struct, frozen=True, kw_only=True):
    """A table reached from the root through foreign keys: ``steps[0]`` points at the
    root, each next one at the table before it."""

    steps: tuple[ForeignKey, ...]

    @property
    def table(self) -> str:
        return self.steps[-1].referencing

    def rows_sql(self, alias: str) -> str:
        """``<table> <alias> WHERE ...``: the rows of this path under the root row ``r``."""
        parent = f"r.{quote(self.steps[0].referenced_column)}"
        for depth, step in enumerate(self.steps[:-1]):
            wanted = quote(self.steps[depth + 1].referenced_column)
            parent = (
                f"(SELECT p{depth}.{wanted} FROM {quote(step.referencing)} p{depth} "
                f"WHERE p{depth}.{quote(step.column)} {_match(parent)})"
            )
        last = self.steps[-1]
        where = f"{alias}.{quote(last.column)} {_match(parent)}"
        return f"{quote(last.referencing)} {alias} WHERE {where}"


class ModelKeys(msgspec.Struct, frozen=True, kw_only=True):
    """How one archivable table is tied to the rest of the default database."""

    entry: Archivable
    dependents: tuple[Path, ...]  # breadth first: a table comes after what it points at
    links: tuple[Path, ...]  # the last step is the SET NULL key
    holds: tuple[Path, ...]  # the last step is the key that holds the row back

    @property
    def tables(self) -> set[str]:
        return {self.entry.source_table, *(path.table for path in self.dependents)}

    @property
    def link_columns(self) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for path in self.links:
            found.setdefault(path.table, set()).add(path.steps[-1].column)
        return found

    @property
    def hold_tables(self) -> set[str]:
        return {path.table for path in self.holds}


class UnsupportedTableError(Exception):
    """A table the mover cannot handle (a missing table or a key it cannot follow)."""


def plan(entry: Archivable, keys: Sequence[ForeignKey], tables: Mapping[str, bool]) -> ModelKeys:
    """Follow the keys that point at ``entry``'s table, breadth first. ``tables``: the
    default database's tables, and whether each has an ``id`` column (a link is kept by
    the ids of the rows that pointed at the moved one)."""
    if entry.source_table not in tables:
        raise UnsupportedTableError(f"the default database has no table {entry.source_table!r}")
    by_target: dict[str, list[ForeignKey]] = {}
    for key in keys:
        by_target.setdefault(key.referenced, []).append(key)
    dependents: list[Path] = []
    links: list[Path] = []
    holds: list[Path] = []
    frontier: list[tuple[ForeignKey, ...]] = [()]
    seen = {entry.source_table}
    while frontier:
        following: list[tuple[ForeignKey, ...]] = []
        for steps in frontier:
            table = steps[-1].referencing if steps else entry.source_table
            for key in by_target.get(table, ()):
                path = Path(steps=(*steps, key))
                movable = key.action == "c" or (key.action == "n" and tables.get(key.referencing))
                if key.referencing in SOURCE_TABLES or not movable:
                    holds.append(path)
                elif key.action == "n":
                    links.append(path)
                elif key.referencing in seen:
                    # A second cascade path into a table already moving: hold rather than
                    # move one row twice.
                    holds.append(path)
                else:
                    seen.add(key.referencing)
                    dependents.append(path)
                    following.append(path.steps)
        frontier = following
    return ModelKeys(
        entry=entry, dependents=tuple(dependents), links=tuple(links), holds=tuple(holds)
    )


async def load(conn: asyncpg.Connection) -> tuple[list[ForeignKey], dict[str, bool]]:
    keys = [
        ForeignKey(
            referencing=row["referencing"],
            column=row["column"],
            referenced=row["referenced"],
            referenced_column=row["referenced_column"],
            action=row["action"],
        )
        for row in await conn.fetch(FOREIGN_KEYS_SQL)
    ]
    tables = {row["relname"]: row["has_id"] for row in await conn.fetch(TABLES_SQL)}
    return keys, tables


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _match(parent: str) -> str:
    return f"IN {parent}" if parent.startswith("(SELECT") else f"= {parent}"
