"""What a role service holds while it runs: pools, execute logins, the catalog sampler, the
role's background jobs and its backups."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pluggy

from multidb import probes
from multidb.backups.engine import JOB_NAME as BACKUP_JOB
from multidb.backups.manager import BackupCollector, BackupManager
from multidb.errors import CONNECTION_ERRORS, DatabaseUnavailableError, describe
from multidb.execute import ExecuteLimits
from multidb.execute_logins import (
    ExecuteLogin,
    LoginLimits,
    derive_logins,
    provision_execute_logins,
)
from multidb.jobs import JobRunner
from multidb.metrics import PoolWatch
from multidb.replicas.metrics import ReplicaCollector, routed_counter
from multidb.replicas.monitor import Node, ReplicaSet
from multidb.replicas.routing import Router
from multidb.roles import RoleSpec
from multidb.service.caller_limit import CallerLimit
from multidb.service.metrics import RoleMetrics
from multidb.service.sampler import CatalogSampler
from multidb.settings import DatabaseSettings, Settings
from multidb.tls import Connect
from multidb.wire import DEGRADED, HEALTHY, HealthReport, StatsReport

log = logging.getLogger("multidb.service")

UNREACHABLE: tuple[type[Exception], ...] = (TimeoutError, *CONNECTION_ERRORS)
# Probes, the background catalog sample and plugin detail hooks share it: room for a
# sample while two probes run, so a sample never makes a health check wait.
ADMIN_POOL_SIZE = 3
# Concurrent read queries of a role's own routes (log search, rollups) per service.
QUERY_POOL_SIZE = 4
# A background sample may take longer than a health check: it counts the tables.
SAMPLE_TIMEOUT_MS = 10_000


async def _keep_session(_: asyncpg.Connection) -> None:
    return None


def _json_text(value: Any) -> str:
    return msgspec.json.encode(value).decode()


async def _init_execute_connection(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(
            kind, schema="pg_catalog", encoder=_json_text, decoder=msgspec.json.decode
        )


def _pool(
    database: DatabaseSettings, size: int, connect: Connect | None = None, **extra: Any
) -> asyncpg.Pool:
    # min_size=0: creating the pool opens nothing, so a service starts with its database down.
    arguments = {**database.connect_arguments, **extra}
    return asyncpg.create_pool(
        min_size=0,
        max_size=size,
        timeout=10,
        command_timeout=None,
        connect=connect or database.connector(),
        **arguments,
    )


class RoleRuntime:
    """One role's live resources inside its service."""

    def __init__(
        self,
        spec: RoleSpec,
        database: DatabaseSettings,
        settings: Settings,
        plugins: pluggy.PluginManager,
        *,
        metrics: RoleMetrics | None = None,
        head: str | None = None,
    ) -> None:
        self.spec = spec
        self.database = database
        self.settings = settings
        self.plugins = plugins
        self.limits = ExecuteLimits.from_settings(settings)
        self.callers = CallerLimit(
            settings.execute_concurrency_per_caller, retry_after_s=self.limits.retry_after_s
        )
        # A role with replicas or a cluster: its servers watched, reads routed to replicas.
        self.replicas: ReplicaSet | None = None
        # How the pools reach the primary: for a cluster, the one the monitor found first.
        self._connect: Connect = database.connector()
        if ReplicaSet.wanted(database):
            self.replicas = ReplicaSet(
                database,
                timeout_ms=settings.health_timeout_ms,
                on_primary_change=self._primary_changed,
            )
            self._connect = self.replicas.primary_first(self._connect)
        # The admin pool runs only our fixed read-only catalog queries, which leave no session
        # state behind: skipping asyncpg's reset-on-release saves a round trip per check.
        # Execute pools keep the reset, since user SQL may leave state.
        self.admin = _pool(database, ADMIN_POOL_SIZE, self._connect, reset=_keep_session)
        self.admin_watch = PoolWatch(self.admin)
        self._execute_pools: dict[bool, asyncpg.Pool] = {}
        self._ingest: PoolWatch | None = None
        self._queries: PoolWatch | None = None
        self.pool_watches: dict[str, PoolWatch] = {"admin": self.admin_watch}
        self._provision_lock = asyncio.Lock()
        self._health_detail = self._detail_hook("multidb_health_detail")
        self._stats_detail = self._detail_hook("multidb_stats_detail")
        self.metrics = metrics or RoleMetrics(spec.name)
        self.sampler = CatalogSampler(
            spec.name,
            self.admin_watch.acquire,
            spec.version_table,
            settings.metrics_sample_s,
            max(settings.health_timeout_ms, SAMPLE_TIMEOUT_MS),
        )
        self.metrics.watch(self.sampler, lambda: self.pool_watches, head)
        # What plugins open for the life of the service (multidb_service_resources).
        self.extensions: dict[str, Any] = {}
        self._resources = contextlib.AsyncExitStack()
        declared = plugins.hook.multidb_background_jobs(role=spec.name, settings=settings)
        jobs = [job for found in declared for job in found or ()]
        self.backups = BackupManager(spec, database, settings)
        backup_job = self.backups.job()
        self.jobs = JobRunner(self, [*jobs, *([backup_job] if backup_job else [])])
        self.backups.job_status = lambda: self.jobs.job_status(BACKUP_JOB)
        self.metrics.watch_jobs(self.jobs.status)
        self.metrics.registry.register(BackupCollector(self.backups))
        if self.replicas is not None:
            self.metrics.registry.register(ReplicaCollector(spec.name, self.replicas))
        self._replica_pools: dict[str, asyncpg.Pool] = {}
        self.router = Router(
            spec.name,
            replicas=self.replicas,
            pool_for=self._statement_pool,
            waiting=self._statement_waiting,
            limits=self.limits,
            wait_ms=settings.read_your_writes_wait_ms,
            counted=routed_counter(self.metrics.registry, spec.name),
        )

    async def start(self) -> None:
        await self.admin
        if self.replicas is not None:
            await self.replicas.start()
        self.sampler.start()
        for resource in self.plugins.hook.multidb_service_resources(
            role=self.spec.name, runtime=self
        ):
            if resource is not None:
                await self._resources.enter_async_context(resource)
        await self.jobs.start()
        try:
            await self.execute_pool(read_only=True)
        except DatabaseUnavailableError as exc:
            log.warning("role %s: execute logins not ready yet: %s", self.spec.name, exc.detail)

    async def stop(self) -> None:
        await self.backups.stop()
        await self.jobs.stop()
        try:
            await self._resources.aclose()
        finally:
            await self._close_pools()

    async def _close_pools(self) -> None:
        await self.sampler.stop()
        if self.replicas is not None:
            await self.replicas.stop()
        pools = [self.admin, *self._execute_pools.values(), *self._replica_pools.values()]
        if self._ingest is not None:
            pools.append(self._ingest.pool)
        if self._queries is not None:
            pools.append(self._queries.pool)
        await asyncio.gather(*(pool.close() for pool in pools), return_exceptions=True)

    async def execute_pool(self, *, read_only: bool) -> asyncpg.Pool:
        """The pool of the reader (or writer) login, provisioned on first use."""
        pool = self._execute_pools.get(read_only)
        if pool is not None:
            return pool
        async with self._provision_lock:
            if read_only not in self._execute_pools:
                try:
                    async with asyncio.timeout(self.settings.health_timeout_ms / 1000):
                        async with self.admin.acquire() as conn:
                            logins = await provision_execute_logins(
                                conn,
                                self.database,
                                LoginLimits.from_settings(self.settings),
                                self.spec.system_tables,
                            )
                except UNREACHABLE as exc:
                    timeout = self.settings.health_timeout_ms
                    msg = f"database {self.spec.name!r} is unavailable: {describe(exc, timeout)}"
                    raise DatabaseUnavailableError(msg) from None
                except asyncpg.PostgresError as exc:
                    # Typically a login without CREATEROLE: say so instead of a bare 500.
                    msg = f"execute logins not ready for {self.spec.name!r}: {describe(exc)}"
                    raise DatabaseUnavailableError(msg) from None
                for flag, login in ((True, logins.reader), (False, logins.writer)):
                    pool = await self._login_pool(login, writer=not flag)
                    self._execute_pools[flag] = pool
                    self.pool_watches["reader" if flag else "writer"] = PoolWatch(pool)
        return self._execute_pools[read_only]

    def _primary_pools(self) -> list[asyncpg.Pool]:
        pools = [self.admin, *self._execute_pools.values()]
        pools += [watch.pool for watch in (self._ingest, self._queries) if watch is not None]
        return pools

    async def _primary_changed(self) -> None:
        """Failover: connections pooled to the old primary go (each closes when next
        acquired or released); new ones find the new primary (target_session_attrs)."""
        await asyncio.gather(*(pool.expire_connections() for pool in self._primary_pools()))

    async def replica_pool(self, node: Node) -> asyncpg.Pool:
        """The reader login's pool on the one server ``node`` (a replica, or the primary
        the monitor found), made on first use. The login exists on a replica by
        replication, and its password is derived: no primary is needed to read."""
        pool = self._replica_pools.get(node.name)
        if pool is None:
            reader = derive_logins(self.database).reader
            pool = await _pool(
                node.settings,
                self.database.pool_size,
                user=reader.username,
                password=reader.password,
                init=_init_execute_connection,
            )
            if node.name in self._replica_pools:
                await pool.close()
            else:
                self._replica_pools[node.name] = pool
                self.pool_watches[f"server {node.name}"] = PoolWatch(pool)
        return self._replica_pools[node.name]

    async def _statement_pool(self, node: Node | None, read_only: bool) -> asyncpg.Pool:
        if node is None:
            return await self.execute_pool(read_only=read_only)
        return await self.replica_pool(node)

    def _statement_waiting(
        self, node: Node | None, read_only: bool
    ) -> contextlib.AbstractContextManager[None]:
        if node is None:
            return self.pool_waiting(read_only=read_only)
        watch = self.pool_watches.get(f"server {node.name}")
        return watch.waiting() if watch else contextlib.nullcontext()

    async def ingest_pool(self) -> PoolWatch:
        """The pool ingestion batches are written with (:mod:`multidb.ingest`), made on
        first use: the service's own login, up to the role's pool size plus overflow, apart
        from the admin pool so that a burst of batches never delays a health check."""
        if self._ingest is None:
            size = self.database.pool_size + self.database.max_overflow
            pool: asyncpg.Pool = await _pool(self.database, size, self._connect)
            if self._ingest is None:
                self._ingest = PoolWatch(pool)
                self.pool_watches["ingest"] = self._ingest
            else:
                await pool.close()
        return self._ingest

    async def query_pool(self) -> asyncpg.Pool:
        """The pool the roles' read routes (log search, rollups) query with, made on first
        use: a few connections of the service's own login, apart from the admin pool, so
        that slow searches (up to their statement timeout) never hold up a health check or
        an audit write; a caller waiting longer than the pool's timeout is told so."""
        if self._queries is None:
            pool: asyncpg.Pool = await _pool(
                self.database, QUERY_POOL_SIZE, self._connect, reset=_keep_session
            )
            if self._queries is None:
                self._queries = PoolWatch(pool)
                self.pool_watches["queries"] = self._queries
            else:
                await pool.close()
        return self._queries.pool

    async def _login_pool(self, login: ExecuteLogin, *, writer: bool) -> asyncpg.Pool:
        size = max(2, self.database.pool_size // 2) if writer else self.database.pool_size
        pool: asyncpg.Pool = await _pool(
            self.database,
            size,
            self._connect,
            user=login.username,
            password=login.password,
            init=_init_execute_connection,
        )
        return pool

    async def revision(self) -> tuple[str | None, str | None]:
        """The role's migration revision in its database, or why it could not be read."""
        timeout = self.settings.health_timeout_ms
        table = self.spec.version_table
        try:
            async with asyncio.timeout(timeout / 1000), self.admin.acquire() as conn:
                if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
                    return None, None
                revision: str | None = await conn.fetchval(f'SELECT version_num FROM "{table}"')
        except Exception as exc:
            return None, describe(exc, timeout)
        return revision, None

    def _detail_hook(self, hook: str) -> probes.Detail | None:
        caller = getattr(self.plugins.hook, hook)
        if not caller.get_hookimpls():
            return None  # no plugin adds detail: nothing to call on the hot path

        async def detail(conn: asyncpg.Connection) -> dict[str, Any] | None:
            results = caller(role=self.spec.name, connection=conn, runtime=self)
            return await probes.merged_detail(results)

        return detail

    def pool_waiting(self, *, read_only: bool) -> contextlib.AbstractContextManager[None]:
        """Counts the caller among the waiters of the reader (writer) pool while it waits."""
        watch = self.pool_watches.get("reader" if read_only else "writer")
        return watch.waiting() if watch else contextlib.nullcontext()

    async def health(self) -> HealthReport:
        """The primary's health, checked live; with replicas, every server as the monitor
        last saw it, and ``degraded`` when one is down or lagging."""
        with self.metrics.health_latency.time():
            report = await probes.check_health(
                self.spec.name,
                self.admin_watch.acquire,
                self.settings.health_timeout_ms,
                self._health_detail,
            )
        if self.replicas is not None:
            report.nodes = self.replicas.reports()
            reason = self.replicas.degradation()
            if report.status == HEALTHY and reason is not None:
                report.status, report.reason = DEGRADED, reason
        return report

    async def stats(self) -> StatsReport:
        """Activity read live (one ``pg_stat_database`` row); table count and size from the
        sampler's snapshot, with their ages, so the cost does not grow with the tables."""
        report, _ = await probes.collect_stats(
            self.spec.name,
            self.admin_watch.acquire,
            self.settings.health_timeout_ms,
            self.sampler.latest,
            self._stats_detail,
            take_snapshot=self.sampler.take,
        )
        if self.replicas is not None:
            report.nodes = self.replicas.reports()
        return report


@contextlib.asynccontextmanager
async def running(runtime: RoleRuntime) -> AsyncIterator[RoleRuntime]:
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()
