"""One lazily created async engine per role, and sessions on it (the spec's ``get_db``).

A role with replicas (or a cluster of servers) also gets an engine per server: a read
session (``get_db(name, readonly=True)``) goes to a replica that serves reads, chosen by
the role's :class:`~multidb.replicas.ReplicaSet`, or to the primary when none does; with
``min_lsn`` only to a replica that has replayed it (waiting at most
``MULTI_DB_READ_YOUR_WRITES_WAIT_MS``). Read sessions run read-only transactions.
"""

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

from multidb.replicas.lsn import parse_lsn
from multidb.replicas.monitor import ReplicaSet
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

    def __init__(
        self,
        databases: Mapping[str, DatabaseSettings],
        *,
        timeout_ms: int = 2000,
        wait_ms: int = 1000,
    ) -> None:
        self._databases = dict(databases)
        self._engines: dict[str, AsyncEngine] = {}
        self._sessions: dict[str, async_sessionmaker[AsyncSession]] = {}
        self._timeout_ms = timeout_ms
        self._wait_ms = wait_ms
        # Each watch runs on the event loop that started it: a process that runs one loop
        # per job (asyncio.run) gets a new one on each loop.
        self._replicas: dict[str, tuple[ReplicaSet, asyncio.AbstractEventLoop]] = {}
        self._readers: dict[tuple[str, str], async_sessionmaker[AsyncSession]] = {}
        self._reader_engines: list[AsyncEngine] = []

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

    def _database(self, name: str) -> DatabaseSettings:
        database = self._databases.get(name)
        if database is None:
            msg = f"database {name!r} is not configured"
            raise NotConfiguredError(msg)
        return database

    async def replica_set(self, name: str) -> ReplicaSet | None:
        """The watch of ``name``'s servers, started on first use; ``None`` without replicas."""
        database = self._database(name)
        if not ReplicaSet.wanted(database):
            return None
        loop = asyncio.get_running_loop()

        def current() -> ReplicaSet | None:
            found = self._replicas.get(name)
            return found[0] if found and found[1] is loop and found[0].running else None

        watching = current()
        if watching is not None:
            return watching
        made = ReplicaSet(database, timeout_ms=self._timeout_ms)
        await made.start()
        watching = current()  # another task of this loop may have started one meanwhile
        if watching is not None:
            await made.stop()
            return watching
        self._replicas[name] = (made, loop)
        return made

    def _read_only(self, engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
        return async_sessionmaker(
            engine.execution_options(postgresql_readonly=True), expire_on_commit=False
        )

    async def reader(
        self, name: str, min_lsn: str | None = None
    ) -> async_sessionmaker[AsyncSession]:
        """Read-only sessions on a replica of ``name`` that serves reads (one that has
        replayed ``min_lsn`` if given), or on its primary when none does."""
        position = None if min_lsn is None else parse_lsn(min_lsn)
        replicas = await self.replica_set(name)
        node = None if replicas is None else replicas.pick(position)
        wait_s = self._wait_ms / 1000
        if (
            replicas is not None
            and node is not None
            and position is not None
            and not await replicas.wait_replayed(node, position, wait_s)
        ):
            node = None
        key = (name, "primary" if node is None else node.name)
        factory = self._readers.get(key)
        if factory is None:
            if node is None:
                engine = self.engine(name)
            else:
                database = self._database(name)
                engine = create_engine(
                    node.settings,
                    pool_size=database.pool_size,
                    max_overflow=database.max_overflow,
                    echo=database.echo,
                    pool_pre_ping=True,
                )
                self._reader_engines.append(engine)
            factory = self._read_only(engine)
            self._readers[key] = factory
        return factory

    async def dispose(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(watch.stop() for watch, started in self._replicas.values() if started is loop)
        )
        engines = [*self._engines.values(), *self._reader_engines]
        await asyncio.gather(*(engine.dispose() for engine in engines))
        self._engines.clear()
        self._sessions.clear()
        self._replicas.clear()
        self._readers.clear()
        self._reader_engines.clear()


_registry: EngineRegistry | None = None


def get_engine_registry() -> EngineRegistry:
    """The process-wide registry, built from the settings on first use."""
    global _registry  # noqa: PLW0603 - one registry per process, created lazily
    if _registry is None:
        settings = get_settings()
        _registry = EngineRegistry(
            settings.databases,
            timeout_ms=settings.health_timeout_ms,
            wait_ms=settings.read_your_writes_wait_ms,
        )
    return _registry


async def dispose_engines() -> None:
    """Dispose every engine created so far (call on shutdown)."""
    if _registry is not None:
        await _registry.dispose()


async def get_db(
    name: str = "default", *, readonly: bool = False, min_lsn: str | None = None
) -> AsyncIterator[AsyncSession]:
    """Yield a session on database ``name``; usable as a dependency (``async for db in ...``).

    ``readonly=True``: a read-only session, on a replica that serves reads when the role
    has one (``min_lsn``: one that has replayed that write position, see
    :func:`multidb.replicas.write_position`), else on the primary.
    """
    registry = get_engine_registry()
    if readonly:
        factory = await registry.reader(name, min_lsn)
    else:
        factory = registry.sessionmaker(name)
    async with factory() as session:
        yield session


async def get_db_for_model(
    model: type, *, readonly: bool = False, min_lsn: str | None = None
) -> AsyncIterator[AsyncSession]:
    """Yield a session on the database ``model`` is routed to (see :func:`get_db`)."""
    name = get_database_router().get_database_for_model(model)
    async for session in get_db(name, readonly=readonly, min_lsn=min_lsn):
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
