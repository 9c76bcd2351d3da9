"""The role service's background sampler of its catalog: what /stats and /metrics serve.

Every ``MULTI_DB_METRICS_SAMPLE_S`` seconds one round trip reads the table count, the
``pg_stat_database`` counters and the migration revision; ``pg_database_size``, which
walks every relation file, runs at most every :data:`SIZE_REFRESH_S`. A scrape or a
/stats call never pays for either, so their cost does not grow with the tables.

A failed round is counted, logged (its type and where, or the database's own one-line
reason), and the loop carries on: the sampler never takes the service down.
"""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg

from multidb import probes
from multidb.errors import describe

log = logging.getLogger("multidb.service.sampler")

SIZE_REFRESH_S = 30.0


class CatalogSampler:
    """Keeps the latest :class:`~multidb.probes.Snapshot` of one role's database."""

    def __init__(
        self,
        role: str,
        acquire: probes.Acquire,
        version_table: str,
        interval_s: float,
        timeout_ms: int,
    ) -> None:
        self.role = role
        self.interval_s = interval_s
        self.timeout_ms = timeout_ms
        self._acquire = acquire
        self._version_table = version_table
        self.latest: probes.Snapshot | None = None
        self.failures = 0
        self.last_error: str | None = None
        self.last_ok = False
        self.last_duration_s: float | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def stale_after_s(self) -> float:
        """A sample older than this no longer says the database is up."""
        return 2 * self.interval_s + self.timeout_ms / 1000

    def up(self) -> bool:
        """The latest round succeeded and is recent."""
        latest = self.latest
        return self.last_ok and latest is not None and latest.catalog.age_s <= self.stale_after_s

    async def take(self, conn: asyncpg.Connection) -> probes.Snapshot:
        """A new snapshot on ``conn``; the size is reused while it is fresh enough."""
        catalog = await probes.sample_catalog(conn, self._version_table)
        previous = self.latest
        if previous is not None and previous.size.age_s < max(SIZE_REFRESH_S, self.interval_s):
            size = previous.size
        else:
            size = await probes.sample_size(conn)
        snapshot = probes.Snapshot(catalog, size)
        self.latest = snapshot
        return snapshot

    async def sample(self) -> None:
        """One round; failures are recorded, never raised."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_ms / 1000), self._acquire() as conn:
                await self.take(conn)
        except Exception as exc:
            self.failures += 1
            self.last_ok = False
            self.last_error = describe(exc, self.timeout_ms)
            log.warning(
                "role %s: stats sample failed: %s",
                self.role,
                self.last_error,
                extra={"role": self.role, "failures": self.failures},
            )
        else:
            self.last_ok = True
        self.last_duration_s = time.perf_counter() - started

    async def _run(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"multidb-sampler-{self.role}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
