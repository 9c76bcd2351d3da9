"""One lazily created async engine per role, and sessions on it (the spec's ``get_db``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from multidb.router import UnknownDatabaseError, get_database_router
from multidb.settings import DatabaseSettings, get_settings


class NotConfiguredError(LookupError):
    """A role that is installed but whose database is not configured."""


def create_engine(database: DatabaseSettings, **options: Any) -> AsyncEngine:
    """An async engine on ``database`` whose connections go through :mod:`multidb.tls`
    (its ``ssl=`` argument, and its one-line TLS failures naming the role)."""
    arguments = database.connect_arguments  # the certificates are read once, here
    connect = database.connector()

    async def creator() -> Any:
        return await connect(**arguments)

    return create_async_engine(
        database.url(), async_creator=creator, hide_parameters=True, **options
    )


class EngineRegistry:
    """Engines and session factories by role, created on first use, disposed together."""

    def __init__(self, databases: Mapping[str, DatabaseSettings]) -> None:
        self._databases = dict(databases)
        self._engines: dict[str, AsyncEngine] = {}
        self._sessions: dict[str, async_sessionmaker[AsyncSession]] = {}

    @property
    def configured(self) -> list[str]:
        return list(self._databases)

    def engine(self, name: str) -> AsyncEngine:
        engine = self._engines.get(name)
        if engine is None:
            database = self._databases.get(name)
            if database is None:
                msg = f"database {name!r} is not configured"
                raise NotConfiguredError(msg)
            engine = create_engine(
                database,
                pool_size=database.pool_size,
                max_overflow=database.max_overflow,
                echo=database.echo,
                pool_pre_ping=True,
            )
            self._engines[name] = engine
        return engine

    def sessionmaker(self, name: str) -> async_sessionmaker[AsyncSession]:
        factory = self._sessions.get(name)
        if factory is None:
            factory = async_sessionmaker(self.engine(name), expire_on_commit=False)
            self._sessions[name] = factory
        return factory

    async def dispose(self) -> None:
        await asyncio.gather(*(engine.dispose() for engine in self._engines.values()))
        self._engines.clear()
        self._sessions.clear()


_registry: EngineRegistry | None = None


def get_engine_registry() -> EngineRegistry:
    """The process-wide registry, built from the settings on first use."""
    global _registry  # noqa: PLW0603 - one registry per process, created lazily
    if _registry is None:
        _registry = EngineRegistry(get_settings().databases)
    return _registry


async def dispose_engines() -> None:
    """Dispose every engine created so far (call on shutdown)."""
    if _registry is not None:
        await _registry.dispose()


async def get_db(name: str = "default") -> AsyncIterator[AsyncSession]:
    """Yield a session on database ``name``; usable as a dependency (``async for db in ...``)."""
    async with get_engine_registry().sessionmaker(name)() as session:
        yield session


async def get_db_for_model(model: type) -> AsyncIterator[AsyncSession]:
    """Yield a session on the database ``model`` is routed to."""
    name = get_database_router().get_database_for_model(model)
    async for session in get_db(name):
        yield session


__all__ = [
    "EngineRegistry",
    "NotConfiguredError",
    "UnknownDatabaseError",
    "create_engine",
    "dispose_engines",
    "get_db",
    "get_db_for_model",
    "get_engine_registry",
]
