"""Alembic for every role: the body of each role's ``env.py`` and the programmatic API.

Each role keeps its own Alembic environment and version table. Its ``env.py`` only calls
:func:`run_env` with its role name. Upgrades take a PostgreSQL advisory lock so that two
processes migrating the same database at once run one after the other.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

from alembic import command, context
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.pool import NullPool

from multidb.engines import create_engine
from multidb.execute_logins import derive_logins, revoke_system_tables_sql
from multidb.plugins import get_roles
from multidb.roles import RoleSpec
from multidb.settings import DatabaseSettings, get_settings


def alembic_config(spec: RoleSpec, database: DatabaseSettings | None = None) -> Config:
    """An Alembic ``Config`` for ``spec``; ``database`` defaults to the configured one."""
    config = Config()
    config.set_main_option("script_location", str(spec.migrations))
    config.attributes["role"] = spec
    config.attributes["database"] = database
    return config


def head_revision(spec: RoleSpec) -> str | None:
    """The head revision of the role's migration scripts."""
    return ScriptDirectory.from_config(alembic_config(spec)).get_current_head()


def _lock_key(spec: RoleSpec) -> int:
    return zlib.crc32(f"multidb-migrate-{spec.name}".encode())


def _run(
    connection: Connection, spec: RoleSpec, config: Config, database: DatabaseSettings
) -> None:
    connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _lock_key(spec)})
    try:
        context.configure(
            connection=connection,
            target_metadata=spec.metadata,
            version_table=spec.version_table,
            compare_type=True,
            compare_server_default=True,
            include_name=_only_role_tables(spec),
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        # A migration may add a system table, which the schema's default privileges have
        # just granted to the execute logins: take it back before anyone can use it.
        revoke = revoke_system_tables_sql(derive_logins(database), spec.system_tables)
        connection.exec_driver_sql(revoke)
    finally:
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _lock_key(spec)})
        connection.commit()


def _only_role_tables(spec: RoleSpec) -> Any:
    # Roles may share one database: autogenerate compares only this role's tables.
    def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
        if type_ == "table":
            return name in spec.metadata.tables
        return True

    return include_name


def run_env(role: str) -> None:
    """The whole of a role's ``env.py``: run its migrations online against its database."""
    config = context.config
    spec: RoleSpec = config.attributes.get("role") or get_roles()[role]
    database: DatabaseSettings | None = config.attributes.get("database")
    if database is None:
        database = get_settings().databases.get(role)
    if database is None:
        msg = f"role {role!r} has no database configured (set {spec.prefix}HOST)"
        raise RuntimeError(msg)
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection, spec, config, database)
        return
    asyncio.run(_run_async(database, spec, config))


async def _run_async(database: DatabaseSettings, spec: RoleSpec, config: Config) -> None:
    engine = create_engine(database, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run, spec, config, database)
    finally:
        await engine.dispose()


def upgrade(
    spec: RoleSpec, revision: str = "head", database: DatabaseSettings | None = None
) -> None:
    command.upgrade(alembic_config(spec, database), revision)


def downgrade(
    spec: RoleSpec, revision: str = "base", database: DatabaseSettings | None = None
) -> None:
    command.downgrade(alembic_config(spec, database), revision)


def current_revision(connection: Connection, spec: RoleSpec) -> str | None:
    """The revision the database behind ``connection`` is at, for ``spec``."""
    context = MigrationContext.configure(connection, opts={"version_table": spec.version_table})
    return context.get_current_revision()
