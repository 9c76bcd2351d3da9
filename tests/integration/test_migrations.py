"""Every role's migrations go up and down cleanly and match its models (no drift)."""

from __future__ import annotations

import asyncio

import pytest
from alembic import command

from multidb import migrations
from multidb.roles import RoleSpec
from multidb.settings import DatabaseSettings
from multidb_devstack.embedded import EmbeddedPostgres
from tests.conftest import BUILTIN_ROLES


async def _tables(database: DatabaseSettings) -> set[str]:
    conn = await database.connect()
    try:
        # A partition is part of its table, not a table of its own.
        rows = await conn.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
        )
        return {row["relname"] for row in rows}
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def scratch(embedded: EmbeddedPostgres | None) -> EmbeddedPostgres:
    if embedded is None:
        pytest.skip("migration round trips run on the embedded server only")
    return embedded


@pytest.mark.parametrize("role", BUILTIN_ROLES)
def test_upgrade_downgrade_round_trip_without_drift(
    scratch: EmbeddedPostgres, roles: dict[str, RoleSpec], role: str
) -> None:
    spec = roles[role]
    name = f"migrations_{role}"
    asyncio.run(scratch.create_databases([name]))
    database = scratch.database_settings(spec, database=name)

    migrations.upgrade(spec, "head", database)
    tables = asyncio.run(_tables(database))
    assert set(spec.metadata.tables) | {spec.version_table} == tables
    # Autogenerate against the migrated database finds nothing to do: models and migrations agree.
    command.check(migrations.alembic_config(spec, database))

    migrations.downgrade(spec, "base", database)
    assert asyncio.run(_tables(database)) == {spec.version_table}

    migrations.upgrade(spec, "head", database)
    assert asyncio.run(_tables(database)) == tables
