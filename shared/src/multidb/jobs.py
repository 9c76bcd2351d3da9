"""Background jobs of a role's service, with one leader per role.

A role plugin declares jobs through ``multidb_background_jobs`` (see
:mod:`multidb.hookspecs`); the role's service runs each every ``interval_s`` seconds
(the first run ``first_delay_s`` after start-up) for as long as it runs.

One leader per role: each run opens its own connection to the role's database (never one
of the service's pools, which serve requests) and takes a transaction-level advisory lock
named after the role and the job (``pg_try_advisory_xact_lock``). A replica that does not
get it skips that run; the lock goes with the transaction, so a replica that dies
mid-run frees it at once. The job runs inside that transaction, on that connection:
what it writes there commits when it returns and is rolled back when it raises.

A failing job never takes the service down: the failure is logged (its type, where it
was raised, and the database's own error when there is one, never a connection detail),
counted, shown by :meth:`JobRunner.status` (the service's ``/readyz`` lists it), and the
job runs again at its next interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import asyncpg
import msgspec

from multidb.errors import describe, trace

if TYPE_CHECKING:
    from multidb.service.runtime import RoleRuntime

log = logging.getLogger("multidb.jobs")

# The first key of every multidb job lock ("mdb" + 0): the second names role and job.
LOCK_SPACE = 0x6D646200
CONNECT_TIMEOUT_S = 10.0

JobBody = Callable[["RoleRuntime", asyncpg.Connection], Awaitable[None]]


@dataclass(frozen=True, kw_only=True)
class BackgroundJob:
    """``run(runtime, connection)`` every ``interval_s`` seconds, by one replica at a time.

    ``name`` is unique within the role (it names the lock and the status entry);
    ``connection`` is the leader's own connection, inside the transaction that holds the
    lock; ``timeout_s`` bounds a run (it is cancelled, and rolled back, after that).
    """

    name: str
    interval_s: float
    run: JobBody
    first_delay_s: float = 0.0
    timeout_s: float = 300.0


class JobStatus(msgspec.Struct, kw_only=True):
    """``runs``: runs as the leader; ``skipped``: rounds another replica led;
    ``failures``: runs that raised or timed out, ``last_error`` the latest one (kept after
    recovery); ``last_run_at``/``last_ok_at``: ISO-8601 UTC."""

    name: str
    interval_s: float
    runs: int = 0
    skipped: int = 0
    failures: int = 0
    last_run_at: datetime | None = None
    last_ok_at: datetime | None = None
    last_error: str | None = None


def lock_key(role: str, job: str) -> int:
    """The second advisory-lock key of ``job`` of ``role``: a signed 32-bit CRC."""
    key = zlib.crc32(f"{role}:{job}".encode())
    return key - (1 << 32) if key >= 1 << 31 else key


class JobRunner:
    """Runs ``jobs`` for ``runtime``'s role, one task per job."""

    def __init__(self, runtime: RoleRuntime, jobs: Sequence[BackgroundJob]) -> None:
        self.runtime = runtime
        self.jobs = {job.name: job for job in jobs}
        self._status = {
            job.name: JobStatus(name=job.name, interval_s=job.interval_s) for job in jobs
        }
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        role = self.runtime.spec.name
        self._tasks = [
            asyncio.create_task(self._loop(job), name=f"multidb-job-{role}-{job.name}")
            for job in self.jobs.values()
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def status(self) -> list[JobStatus]:
        return list(self._status.values())

    def job_status(self, name: str) -> JobStatus | None:
        return self._status.get(name)

    async def run_once(self, name: str) -> bool:
        """Run job ``name`` now if this replica gets the lead; True when it ran (and did
        not fail), False when another replica led or the run failed (see status)."""
        job = self.jobs[name]
        status = self._status[name]
        role = self.runtime.spec.name
        try:
            async with asyncio.timeout(job.timeout_s):
                led = await self._lead_and_run(job)
        except Exception as exc:
            status.failures += 1
            status.last_run_at = datetime.now(UTC)
            status.last_error = describe(exc, int(job.timeout_s * 1000))
            log.error(
                "job %s of role %s failed: %s (%s)", name, role, status.last_error, trace(exc)
            )
            return False
        if not led:
            status.skipped += 1
            log.debug("job %s of role %s: another replica leads this round", name, role)
            return False
        status.runs += 1
        status.last_run_at = status.last_ok_at = datetime.now(UTC)
        return True

    async def _lead_and_run(self, job: BackgroundJob) -> bool:
        key = lock_key(self.runtime.spec.name, job.name)
        conn = await self.runtime.database.connect(timeout=CONNECT_TIMEOUT_S)
        try:
            async with conn.transaction():
                led = await conn.fetchval(
                    "SELECT pg_try_advisory_xact_lock($1, $2)", LOCK_SPACE, key
                )
                if led:
                    await job.run(self.runtime, conn)
                return bool(led)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), CONNECT_TIMEOUT_S)

    async def _loop(self, job: BackgroundJob) -> None:
        await asyncio.sleep(job.first_delay_s)
        while True:
            started = time.monotonic()
            await self.run_once(job.name)  # never raises: failures are counted and logged
            await asyncio.sleep(max(0.0, job.interval_s - (time.monotonic() - started)))
