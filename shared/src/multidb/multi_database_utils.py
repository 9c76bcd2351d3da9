"""The spec's utilities: health, stats, configuration, models and backup info of every database.

Everything that touches several databases runs concurrently, each database under its own
deadline; a database that is down is reported as such (``unhealthy``/``unavailable`` with
an ``error``), never dropped from the answer.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TypeVar

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from multidb import probes
from multidb.engines import EngineRegistry, get_engine_registry
from multidb.plugins import get_roles
from multidb.router import DatabaseRouter, UnknownDatabaseError, get_database_router
from multidb.settings import Settings, get_settings
from multidb.wire import BackupInfo, HealthReport, StatsReport

T = TypeVar("T")


def _raw_connection(
    engine: AsyncEngine,
) -> Callable[[], AbstractAsyncContextManager[asyncpg.Connection]]:
    @asynccontextmanager
    async def acquire() -> AsyncIterator[asyncpg.Connection]:
        async with engine.connect() as connection:
            raw = await connection.get_raw_connection()
            yield raw.driver_connection

    return acquire


class MultiDatabaseUtils:
    """Fleet-wide questions about the configured databases, answered in-process."""

    def __init__(
        self, settings: Settings, registry: EngineRegistry, router: DatabaseRouter
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.router = router

    def get_configured_databases(self) -> list[str]:
        return list(self.settings.databases)

    def _check(self, name: str) -> None:
        if name not in self.settings.databases:
            raise UnknownDatabaseError(name, self.get_configured_databases())

    def get_models_by_database(self) -> dict[str, list[str]]:
        return {name: self.router.get_models_for_database(name) for name in self.settings.databases}

    def get_backup_info(self) -> dict[str, BackupInfo]:
        """Connection details and TLS mode of every database; the url is redacted, no
        password anywhere, certificates and keys by path at most."""
        return {name: db.backup_info() for name, db in self.settings.databases.items()}

    async def health_check(self, name: str) -> HealthReport:
        self._check(name)
        acquire = _raw_connection(self.registry.engine(name))
        return await probes.check_health(name, acquire, self.settings.health_timeout_ms)

    async def get_database_stats(self, name: str) -> StatsReport:
        self._check(name)
        acquire = _raw_connection(self.registry.engine(name))
        # One call, no sampler: the table count and size are read now (age 0).
        taker = probes.snapshot_taker(get_roles()[name].version_table)
        report, _ = await probes.collect_stats(
            name, acquire, self.settings.health_timeout_ms, None, take_snapshot=taker
        )
        return report

    async def _all(self, check: Callable[[str], Awaitable[T]]) -> dict[str, T]:
        names = self.get_configured_databases()
        results = await asyncio.gather(*(check(name) for name in names))
        return dict(zip(names, results, strict=True))

    async def health_check_all_databases(self) -> dict[str, HealthReport]:
        return await self._all(self.health_check)

    async def get_all_database_stats(self) -> dict[str, StatsReport]:
        return await self._all(self.get_database_stats)


@functools.cache
def get_multi_database_utils() -> MultiDatabaseUtils:
    """The process-wide utilities, on the process-wide settings, engines and router."""
    return MultiDatabaseUtils(get_settings(), get_engine_registry(), get_database_router())


async def health_check_all() -> dict[str, HealthReport]:
    """Health of every configured database, checked concurrently."""
    return await get_multi_database_utils().health_check_all_databases()


async def get_database_stats_all() -> dict[str, StatsReport]:
    """Statistics of every configured database, collected concurrently."""
    return await get_multi_database_utils().get_all_database_stats()
