"""The role service's side of backups: its schedule, operations started over HTTP, and
what ``/backup/info`` and ``/metrics`` say.

The schedule is one background job, ``backups`` (:mod:`multidb.jobs`): one replica of the
role leads each tick through the role's advisory lock, the same lock an operation started
over HTTP or by ``multidb backup`` takes, so exactly one operation runs per role at a
time. Each tick, the leader reads the backup folder (shared by the replicas) and does
what is due: a backup when the newest good one is older than the role's interval (so a
failed attempt is retried at the next tick, not an interval later), then its verify; a
drill of the newest verified backup when the last drill is older than the drill
interval; pruning; and sending drill results the logging service has not taken yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg
from prometheus_client.core import GaugeMetricFamily, Metric

from multidb.backups.drill_records import DrillRecorder
from multidb.backups.engine import JOB_NAME, BackupError, RoleBackups, try_lead, while_led
from multidb.backups.wire import (
    BACKUP_ID,
    BackupManifest,
    BackupState,
    DrillResult,
    LastBackup,
    Operation,
    OperationStarted,
)
from multidb.errors import (
    CONNECTION_ERRORS,
    BadRequestError,
    ConflictError,
    DatabaseUnavailableError,
    NotFoundError,
    describe,
)
from multidb.jobs import BackgroundJob, JobStatus
from multidb.roles import RoleSpec
from multidb.settings import DatabaseSettings, Settings

if TYPE_CHECKING:
    from multidb.service.runtime import RoleRuntime

log = logging.getLogger("multidb.backups")
# The longest pause between two looks at what is due.
TICK_S = 30.0
FIRST_DELAY_S = 2.0


def _now() -> datetime:
    return datetime.now(UTC)


def newest_drill(manifests: Iterable[BackupManifest]) -> DrillResult | None:
    drills = [m.last_drill for m in manifests if m.last_drill is not None]
    return max(drills, key=lambda drill: drill.finished_at, default=None)


class BackupManager:
    """Backups of one role inside its service."""

    def __init__(self, spec: RoleSpec, database: DatabaseSettings, settings: Settings) -> None:
        self.engine = RoleBackups(settings.backups, spec, database)
        self.policy = self.engine.policy
        self.role = spec.name
        self.database = database
        self.timeout_s = settings.backups.timeout_s
        self.recorder = DrillRecorder(settings, spec.name)
        self.job_status: Callable[[], JobStatus | None] = lambda: None
        self._tasks: set[asyncio.Task[None]] = set()
        self.current: str | None = None
        # What the tick that made the job's n-th failure said (the job runner shows a
        # failure by its type only, and a BackupError's message is the one to show).
        self._tick_failures: dict[int, str] = {}

    # ---- the schedule ----------------------------------------------------------------

    def job(self) -> BackgroundJob | None:
        intervals = [s for s in (self.policy.interval_s, self.policy.drill_interval_s) if s]
        if not intervals:
            return None
        return BackgroundJob(
            name=JOB_NAME,
            interval_s=min(TICK_S, *intervals),
            run=self._tick,
            first_delay_s=FIRST_DELAY_S,
            # A backup, its verify and a drill, each bounded by the setting.
            timeout_s=3 * self.timeout_s,
        )

    async def _tick(self, _runtime: RoleRuntime, lock: asyncpg.Connection) -> None:
        """One look at what is due, as the role's leader (the job holds the lock)."""
        # The lock lives as long as this idle transaction (see try_lead).
        await lock.execute("SET idle_in_transaction_session_timeout = 0")
        try:
            await while_led(lock, self._due())
        except BackupError as exc:
            status = self.job_status()
            failures = (status.failures if status is not None else 0) + 1
            self._tick_failures = {
                n: said for n, said in self._tick_failures.items() if n >= failures - 1
            }
            self._tick_failures[failures] = str(exc)
            raise  # counted and shown as the job's failure; retried next tick

    async def _due(self) -> None:
        """Whatever else fails, pruning and sending drill results still run: pruning is what
        frees a full disk."""
        try:
            await self._backup_and_drill()
        finally:
            await self._housekeeping()

    async def _backup_and_drill(self) -> None:
        await asyncio.to_thread(self.engine.clean_up)
        await self.engine.drop_scratch_databases()
        now = _now()
        failure: BackupError | None = None
        manifests = self.engine.store.manifests()
        good = next((m for m in manifests if m.status == "ok"), None)
        interval = self.policy.interval_s
        if interval is not None and (good is None or _age(good, now) >= interval):
            try:
                good = await self._timed("backup", self.engine.run_backup("schedule"))
            except BackupError as exc:
                failure = exc
        if good is not None and good.verification is None:
            # Right after its backup, or one a stopped service never got to verify.
            await self._timed("verify", self.engine.verify(good))
        drill_every = self.policy.drill_interval_s
        if drill_every is not None:
            manifests = self.engine.store.manifests()
            target = next((m for m in manifests if m.status == "ok" and m.verified), None)
            last = newest_drill(manifests)
            if target is not None and (
                last is None or (now - last.finished_at).total_seconds() >= drill_every
            ):
                # A drill records its own failures and time-outs: it is not retried before
                # its interval, however it ended.
                await self._timed("drill", self.engine.drill(target))
        if failure is not None:
            raise failure

    async def _housekeeping(self) -> None:
        try:
            await asyncio.to_thread(self.engine.prune)
        except OSError as exc:
            log.error("role %s: pruning backups failed: %s", self.role, exc.strerror or exc)
        try:
            await self.recorder.send_pending(self.engine.store)
        except OSError as exc:
            log.error("role %s: recording drill results failed: %s", self.role, exc.strerror or exc)

    async def _timed(self, what: str, operation: Awaitable[BackupManifest]) -> BackupManifest:
        self.current = what
        try:
            # Each operation stops itself at the limit and records why; this is a backstop.
            async with asyncio.timeout(self.timeout_s + 30):
                return await operation
        finally:
            self.current = None

    # ---- operations started over HTTP ------------------------------------------------

    def find(self, backup_id: str) -> BackupManifest:
        if not BACKUP_ID.match(backup_id):
            msg = f"malformed backup id {backup_id[:40]!r}: an id is 12 lowercase hex digits"
            raise BadRequestError(msg)
        manifest = self.engine.store.get(backup_id)
        if manifest is None:
            raise NotFoundError(f"role {self.role!r} has no backup {backup_id!r}")
        return manifest

    def _complete(self, backup_id: str) -> BackupManifest:
        target = self.find(backup_id)
        if target.status != "ok":
            msg = (
                f"backup {backup_id} of role {self.role!r} is {target.status}: "
                "only a complete backup can be verified or drilled"
            )
            raise ConflictError(msg)
        return target

    async def start(self, operation: Operation, backup_id: str | None = None) -> OperationStarted:
        """Take the role's lock and start ``operation`` in the background; 409 if another
        runs, 404/400 for an unknown or malformed id, 503 if the database is down."""
        if backup_id is not None:
            self._complete(backup_id)  # 400/404/409 before any connection is opened
        if self.current is not None:
            raise self._busy(self.current)
        self.current = f"starting {operation}"  # one start at a time in this replica
        try:
            lock = await self._lead()
        except BaseException:
            self.current = None
            raise
        try:
            # The lock is ours, so no run is alive: a "running" one died with its process.
            await asyncio.to_thread(self.engine.clean_up)
            # Read again under the lock: an operation that ended meanwhile may have changed
            # or pruned it.
            target = (
                self._complete(backup_id)
                if backup_id is not None
                else self.engine.start_manifest("api")
            )
        except BackupError as exc:
            await _release(lock)
            self.current = None
            raise DatabaseUnavailableError(str(exc)) from None
        except BaseException:
            await _release(lock)
            self.current = None
            raise
        task = asyncio.create_task(self._run_led(lock, operation, target))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return OperationStarted(id=target.id, role=self.role, operation=operation)

    async def _lead(self) -> asyncpg.Connection:
        try:
            lock = await try_lead(self.database, self.role)
        except (TimeoutError, *CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
            msg = f"database {self.role!r} is unavailable: {describe(exc, 10_000)}"
            raise DatabaseUnavailableError(msg) from None
        if lock is None:
            raise self._busy(self._running_elsewhere())
        return lock

    def _busy(self, running: str) -> ConflictError:
        msg = (
            f"a backup operation of role {self.role!r} is running ({running}); "
            "try again when it has finished"
        )
        return ConflictError(msg)

    def _running_elsewhere(self) -> str:
        running = [m.id for m in self.engine.store.manifests() if m.status == "running"]
        return f"backup {running[0]}" if running else "on another replica"

    async def _run_led(
        self, lock: asyncpg.Connection, operation: Operation, target: BackupManifest
    ) -> None:
        try:
            await while_led(lock, self._operation(operation, target))
        except BackupError:
            pass  # recorded in the manifest and logged by the engine
        except Exception as exc:
            log.error("%s of role %s failed: %s", operation, self.role, describe(exc))
        finally:
            self.current = None
            await _release(lock)

    async def _operation(self, operation: Operation, target: BackupManifest) -> None:
        try:
            if operation == "backup":
                done = await self._timed("backup", self.engine.run_backup(manifest=target))
                await self._timed("verify", self.engine.verify(done))
            elif operation == "verify":
                await self._timed("verify", self.engine.verify(target))
            else:
                await self._timed("drill", self.engine.drill(target))
        finally:
            # With the schedule off, the API's backups are kept within the role's limits too.
            await self._housekeeping()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- what is shown ---------------------------------------------------------------

    def state(self) -> BackupState:
        now = _now()
        manifests = self.engine.store.manifests()
        good = next((m for m in manifests if m.status == "ok"), None)
        interval = self.policy.interval_s
        state = BackupState(schedule=self.policy.describe())
        if good is not None and good.finished_at is not None:
            state.last_backup = LastBackup(
                id=good.id,
                finished_at=good.finished_at,
                age_s=round(_age(good, now), 3),
                size_bytes=good.size_bytes or 0,
                verified=good.verified,
                last_drill=newest_drill(manifests),
            )
        if interval is not None:
            due = (
                good.finished_at + timedelta(seconds=interval) if good and good.finished_at else now
            )
            state.next_backup_at = max(due, now) if good is None else due
            state.stale = good is None or _age(good, now) > 2 * interval
        failed = next((m for m in manifests if m.status == "failed"), None)
        if failed is not None and (good is None or failed.started_at > good.started_at):
            state.last_failure, state.last_failure_at = failed.error, failed.finished_at
        status = self.job_status()
        if (
            status is not None
            and status.last_error
            and status.last_run_at is not None
            and (status.last_ok_at is None or status.last_run_at > status.last_ok_at)
            and (state.last_failure_at is None or status.last_run_at > state.last_failure_at)
            # A tick's good backup is on disk before the tick ends and the runner marks it
            # ok: a failure older than that backup is over.
            and (good is None or good.finished_at is None or status.last_run_at > good.finished_at)
        ):
            said = self._tick_failures.get(status.failures, status.last_error)
            state.last_failure, state.last_failure_at = said, status.last_run_at
        running = [m.id for m in manifests if m.status == "running"]
        state.running = self.current or (f"backup {running[0]}" if running else None)
        return state


def _age(manifest: BackupManifest, now: datetime) -> float:
    finished = manifest.finished_at or manifest.started_at
    return (now - finished).total_seconds()


async def _release(lock: asyncpg.Connection) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(lock.close(), 10)


class BackupCollector:
    """``multidb_backup_*`` per role, read from the backup folder at each scrape."""

    def __init__(self, manager: BackupManager) -> None:
        self.manager = manager

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        role = self.manager.role
        manifests = self.manager.engine.store.manifests()
        good = next((m for m in manifests if m.status == "ok"), None)
        families = {
            "last": GaugeMetricFamily(
                "multidb_backup_last_success_timestamp_seconds",
                "When the role's newest good backup finished (Unix time)",
                labels=["role"],
            ),
            "size": GaugeMetricFamily(
                "multidb_backup_size_bytes",
                "Size of the role's newest good backup",
                labels=["role"],
            ),
            "drill": GaugeMetricFamily(
                "multidb_backup_drill_success",
                "1 when the role's latest restore drill passed, 0 when it failed",
                labels=["role"],
            ),
        }
        if good is not None and good.finished_at is not None:
            families["last"].add_metric([role], good.finished_at.timestamp())
            families["size"].add_metric([role], good.size_bytes or 0)
        drill = newest_drill(manifests)
        if drill is not None:
            families["drill"].add_metric([role], 1.0 if drill.passed else 0.0)
        yield from families.values()
