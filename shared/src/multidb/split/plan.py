"""What maps where: each role's model tables, from the source into the role's database.

A role is split out when its configured database is not the source itself; the tables it
takes are those of its models (``RoleSpec.models``): never its bookkeeping tables that
are no model (ledgers, rollups, chain heads) nor an Alembic version table. Everything is
checked here, before anything changes: the tables are in the source, each has a primary
key (the batches' keyset), and every source column has a place in the target (a column
the target lacks would be lost), while every target column the source lacks has a
default or takes NULL.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import asyncpg
from sqlalchemy import Table
from sqlalchemy.engine import URL

from multidb.partitions import quote_identifier
from multidb.roles import RoleSpec
from multidb.settings import DatabaseSettings
from multidb.split.errors import SplitError

_COLUMNS_SQL = """
SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type,
       NOT a.attnotnull AS nullable,
       a.atthasdef OR a.attidentity <> '' AS has_default,
       a.attgenerated <> '' AS generated
FROM pg_attribute a
WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""
_PRIMARY_KEY_SQL = """
SELECT a.attname
FROM pg_index i
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = to_regclass($1) AND i.indisprimary
ORDER BY k.position
"""
_PARTITION_KEY_SQL = "SELECT pg_get_partkeydef(to_regclass($1))"
_RANGE_ON_ONE_COLUMN = re.compile(r'RANGE \("?([A-Za-z_][A-Za-z0-9_$]*)"?\)')
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type(): "character varying(50)"; "" when read from a model
    nullable: bool
    has_default: bool
    generated: bool = False


@dataclass(frozen=True)
class TablePlan:
    """One table to copy, as checked: its columns in the source's order."""

    role: str
    table: str
    columns: tuple[str, ...]
    key: tuple[str, ...]  # the source's primary key: the order of the batches
    # Columns whose type in the target differs from the source's: the target's side of
    # the checksum casts them to the source's type, and the copy uses COPY's text format.
    casts: Mapping[str, str] = field(default_factory=dict)
    partition_key: str | None = None  # the target is PARTITION BY RANGE (this column)
    estimated_rows: int | None = None
    source_bytes: int = 0

    @property
    def name(self) -> str:
        return f"{self.role}.{self.table}"

    @property
    def quoted(self) -> str:
        return quote_identifier(self.table)

    @property
    def binary(self) -> bool:
        """COPY's binary format needs the same type on both sides; text otherwise."""
        return not self.casts


@dataclass(frozen=True)
class RolePlan:
    role: str
    database: DatabaseSettings
    tables: tuple[str, ...]
    # Why the role is left as it is (its database is the source), or None: it is split out.
    left_alone: str | None = None


def same_database(source: URL, database: DatabaseSettings) -> bool:
    """Whether ``database`` is the source itself: same host, port and database name."""

    def host(name: str | None) -> str:
        name = (name or "localhost").lower()
        return "localhost" if name in _LOCAL_HOSTS else name

    return (host(source.host), source.port or 5432, source.database) == (
        host(database.host),
        database.port,
        database.database,
    )


def model_tables(spec: RoleSpec) -> tuple[str, ...]:
    """The tables of ``spec``'s models, parents before the tables that refer to them."""
    names = {getattr(model, "__table__").name for model in spec.models}  # noqa: B009
    return tuple(table.name for table in spec.metadata.sorted_tables if table.name in names)


def role_plans(
    source: URL, roles: Mapping[str, RoleSpec], databases: Mapping[str, DatabaseSettings]
) -> list[RolePlan]:
    """Every configured role: split out, or left alone when its database is the source."""
    plans = []
    for name, database in databases.items():
        spec = roles.get(name)
        if spec is None:
            continue
        alone = None
        if same_database(source, database):
            alone = f"its database {database.database!r} is the source: left as it is"
        plans.append(RolePlan(name, database, model_tables(spec), alone))
    return plans


async def read_columns(conn: asyncpg.Connection, table: str) -> dict[str, Column] | None:
    """``table``'s columns as the database has them; None when there is no such table."""
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", quote_identifier(table))
    if not exists:
        return None
    rows = await conn.fetch(_COLUMNS_SQL, quote_identifier(table))
    return {
        row["name"]: Column(
            row["name"], row["type"], row["nullable"], row["has_default"], row["generated"]
        )
        for row in rows
    }


async def read_primary_key(conn: asyncpg.Connection, table: str) -> tuple[str, ...]:
    rows = await conn.fetch(_PRIMARY_KEY_SQL, quote_identifier(table))
    return tuple(row[0] for row in rows)


async def read_partition_key(conn: asyncpg.Connection, table: str) -> str | None:
    """The column of ``table``'s ``PARTITION BY RANGE (column)``, None if not so partitioned."""
    found = _RANGE_ON_ONE_COLUMN.fullmatch(
        await conn.fetchval(_PARTITION_KEY_SQL, quote_identifier(table)) or ""
    )
    return found[1] if found else None


def model_columns(table: Table) -> dict[str, Column]:
    """What the role's migrations give ``table`` at head, from its model (targets that are
    not migrated yet: a dry run migrates nothing)."""
    auto = table.autoincrement_column
    return {
        column.name: Column(
            column.name,
            "",
            bool(column.nullable),
            column.server_default is not None or column.identity is not None or column is auto,
            column.computed is not None,
        )
        for column in table.columns
    }


def model_partition_key(table: Table) -> str | None:
    found = _RANGE_ON_ONE_COLUMN.fullmatch(
        str(table.dialect_options["postgresql"].get("partition_by") or "")
    )
    return found[1] if found else None


def plan_table(
    role: str,
    table: str,
    *,
    source: Mapping[str, Column],
    key: Sequence[str],
    target: Mapping[str, Column],
    partition_key: str | None,
) -> TablePlan:
    """The checked plan of one table; :class:`SplitError` naming the first incompatibility."""
    where = f"{role}: table {table}"
    if not key:
        raise SplitError(f"{where}: the source table has no primary key to copy it in batches")
    lost = [name for name in source if name not in target]
    if lost:
        named = ", ".join(lost)
        msg = f"{where}: the target has no column {named} of the source (it would be lost)"
        raise SplitError(msg)
    unfilled = [
        column.name
        for column in target.values()
        if column.name not in source
        and not (column.nullable or column.has_default or column.generated)
    ]
    if unfilled:
        named = ", ".join(unfilled)
        msg = f"{where}: target column {named} is NOT NULL without a default and not in the source"
        raise SplitError(msg)
    columns = tuple(name for name in source if not target[name].generated)
    casts = {
        name: source[name].type
        for name in columns
        if target[name].type and target[name].type != source[name].type
    }
    return TablePlan(
        role=role,
        table=table,
        columns=columns,
        key=tuple(key),
        casts=casts,
        partition_key=partition_key,
    )
