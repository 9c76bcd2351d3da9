"""The mover: archive and unarchive runs, one at a time across every process (an
advisory lock on the archive database), recorded in ``archive_runs``. What a run does,
batch by batch, and why it loses nothing: :mod:`multidb_archive.mover.batches`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import msgspec

from multidb.errors import DatabaseUnavailableError, describe
from multidb.jobs import LOCK_SPACE, lock_key
from multidb.settings import DatabaseSettings
from multidb_archive.mover import keys
from multidb_archive.mover.batches import CONNECT_TIMEOUT_S, SESSION, Progress, Run, StopRunError
from multidb_archive.mover.catalog import ARCHIVE_ORDER, CATALOG, UNARCHIVE_ORDER
from multidb_archive.mover.errors import MoverBusyError, MoverError
from multidb_archive.mover.settings import ArchiveSettings
from multidb_archive.mover.wire import ArchiveStatus, ModelReport, RunReport, RunRequest

log = logging.getLogger("multidb.archive.mover")


LOCK_KEY = lock_key("archive", "mover")
MAX_IDS = 10_000
LEDGER_KEEP_DAYS = 30
COUNT_EXACT_UP_TO = 100_000


class _Lease:
    """The mover's lock, held by a session on the archive database, and that session."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def release(self) -> None:
        try:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.conn.close(), 10)
        finally:
            if not self.conn.is_closed():
                self.conn.terminate()  # cancelled while closing: the lock goes with it


def _now() -> datetime:
    return datetime.now(UTC)


class Mover:
    """Runs archive and unarchive runs; one at a time across every process (the lock)."""

    def __init__(
        self, source: DatabaseSettings | None, archive: DatabaseSettings, settings: ArchiveSettings
    ) -> None:
        self.source = source
        self.archive = archive
        self.settings = settings
        self._tasks: dict[str, asyncio.Task[RunReport]] = {}
        # Leases of started runs, released by the run itself or, when its task was
        # cancelled before it began, by close().
        self._leases: dict[str, _Lease] = {}
        self._current: RunReport | None = None

    # ---- public API ------------------------------------------------------------------

    async def start(
        self, request: RunRequest, *, trigger: str, requested_by: str | None = None
    ) -> RunReport:
        """Check ``request``, take the lock and record the run; it goes on in a task."""
        lease, report, models = await self._begin(request, trigger, requested_by)
        task = asyncio.create_task(self._execute(lease, report, request, models, None))
        self._tasks[report.id] = task
        return msgspec.structs.replace(report, models=dict(report.models))

    async def run(
        self,
        request: RunRequest,
        *,
        trigger: str,
        requested_by: str | None = None,
        progress: Progress | None = None,
    ) -> RunReport:
        """:meth:`start` and wait for the end (the CLI and the schedule)."""
        lease, report, models = await self._begin(request, trigger, requested_by)
        return await self._execute(lease, report, request, models, progress)

    async def _begin(
        self, request: RunRequest, trigger: str, requested_by: str | None
    ) -> tuple[_Lease, RunReport, list[str]]:
        models = self._models(request)
        lease = await self._lease()
        try:
            report = RunReport(
                id=secrets.token_hex(6),
                kind=request.kind,
                dry_run=request.dry_run,
                trigger=trigger,  # type: ignore[arg-type]
                state="running",
                started_at=_now(),
                requested_by=requested_by,
                models={model: ModelReport() for model in models},
            )
            await self._close_dead_runs(lease.conn)
            await self._save(lease.conn, report, insert=True)
        except BaseException:
            await lease.release()
            raise
        self._current = report
        self._leases[report.id] = lease
        return lease, report, models

    async def wait(self, run_id: str) -> RunReport:
        task = self._tasks.get(run_id)
        if task is not None:
            return await asyncio.shield(task)
        found = await self.get_run(run_id)
        if found is None:
            raise MoverError(f"no run {run_id!r}")
        return found

    async def get_run(self, run_id: str) -> RunReport | None:
        if self._current is not None and self._current.id == run_id:
            return msgspec.structs.replace(self._current, models=dict(self._current.models))
        async with self._archive_conn() as conn:
            row = await conn.fetchrow("SELECT * FROM archive_runs WHERE id = $1", run_id)
        return None if row is None else _report(row)

    async def runs(self, limit: int = 20) -> list[RunReport]:
        async with self._archive_conn() as conn:
            rows = await conn.fetch(
                "SELECT * FROM archive_runs ORDER BY started_at DESC LIMIT $1", limit
            )
        found = [_report(row) for row in rows]
        current = self._current
        return [current if current is not None and r.id == current.id else r for r in found]

    async def status(self) -> ArchiveStatus:
        status = ArchiveStatus(
            schedule=self.settings.describe_schedule(),
            policy={model: policy.describe() for model, policy in self.settings.policies.items()},
        )
        async with self._archive_conn() as conn:
            # Exact up to COUNT_EXACT_UP_TO rows, the planner's estimate beyond: /stats
            # stays as quick with millions of archived rows.
            counts = " UNION ALL ".join(
                f"SELECT '{model}', (SELECT count(*) FROM (SELECT 1 FROM "
                f"{keys.quote(entry.archive_table)} LIMIT {COUNT_EXACT_UP_TO + 1}) x), "
                f"(SELECT reltuples::bigint FROM pg_class WHERE oid = "
                f"'{keys.quote(entry.archive_table)}'::regclass)"
                for model, entry in CATALOG.items()
            )
            status.archived = {
                row[0]: row[1] if row[1] <= COUNT_EXACT_UP_TO else max(row[1], row[2])
                for row in await conn.fetch(counts)
            }
            held = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND classid = ($1::int8 & 4294967295)::oid "
                "AND objid = ($2::int8 & 4294967295)::oid AND objsubid = 2)",
                LOCK_SPACE,
                LOCK_KEY,
            )
            status.pending_batches = await conn.fetchval(
                "SELECT count(*) FROM archive_batches WHERE state IN ('copied', 'copying')"
            )
            last = await conn.fetchrow(
                "SELECT * FROM archive_runs ORDER BY started_at DESC LIMIT 1"
            )
        status.last_run = None if last is None else _report(last)
        current = self._current
        if current is not None:
            status.running = current.id
            status.last_run = current
        elif status.last_run is not None and status.last_run.state == "running":
            if held:
                status.running = status.last_run.id  # another process's run
            else:
                # Nobody holds the mover's lock: the process of that run is gone.
                status.last_run.state = "failed"
                status.last_run.message = (
                    "the mover stopped before the run ended; the next run finishes its batches"
                )
        return status

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        for lease in list(self._leases.values()):
            await lease.release()
        self._leases.clear()

    # ---- the run ---------------------------------------------------------------------

    def _models(self, request: RunRequest) -> list[str]:
        if self.source is None:
            msg = (
                "the default database is not configured for the archive service "
                "(DB_HOST and the other DB_ settings), so nothing can move"
            )
            raise MoverError(msg)
        _check_names(request)
        order = ARCHIVE_ORDER if request.kind == "archive" else UNARCHIVE_ORDER
        if request.ids is not None:
            wanted = set(request.ids)
            if request.models is not None and set(request.models) != wanted:
                msg = "models: leave it out when naming ids (the ids say which models)"
                raise MoverError(msg)
        elif request.models is not None:
            wanted = set(request.models)
        elif request.kind == "archive":
            wanted = set(self.settings.policies)
        else:
            msg = 'unarchive: say which rows, by ids ({"Media": [1, 2]}) or whole models'
            raise MoverError(msg)
        if request.kind == "archive" and request.ids is None:
            off = [model for model in wanted if model not in self.settings.policies]
            if off:
                msg = (
                    f"{', '.join(sorted(off))}: no archive policy (MULTI_DB_ARCHIVE_POLICY); "
                    "name rows by id to move them anyway"
                )
                raise MoverError(msg)
        if not wanted:
            raise MoverError("no model has an archive policy: nothing to do")
        return [model for model in order if model in wanted]

    async def _lease(self) -> _Lease:
        try:
            conn = await asyncio.wait_for(
                self.archive.connect(server_settings=SESSION), CONNECT_TIMEOUT_S
            )
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            msg = f"database 'archive' is unavailable: {describe(exc)}"
            raise DatabaseUnavailableError(msg) from None
        try:
            taken = await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", LOCK_SPACE, LOCK_KEY)
        except BaseException:
            await conn.close()
            raise
        if not taken:
            await conn.close()
            raise MoverBusyError("another archive run is in progress; try again when it ends")
        return _Lease(conn)

    @contextlib.asynccontextmanager
    async def _archive_conn(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            conn = await asyncio.wait_for(
                self.archive.connect(server_settings=SESSION), CONNECT_TIMEOUT_S
            )
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            msg = f"database 'archive' is unavailable: {describe(exc)}"
            raise DatabaseUnavailableError(msg) from None
        try:
            yield conn
        finally:
            await conn.close()

    async def _close_dead_runs(self, conn: asyncpg.Connection) -> None:
        """Runs still marked running belong to a process that died (we hold the lock).
        Closed ledger entries are kept for a while, to say what moved when."""
        await conn.execute(
            "DELETE FROM archive_batches WHERE state IN ('done', 'recovered') "
            f"AND updated_at < now() - interval '{LEDGER_KEEP_DAYS} days'"
        )
        await conn.execute(
            "UPDATE archive_runs SET state = 'failed', finished_at = now(), "
            "message = 'the mover stopped before the run ended (its process or connection "
            "went away); the next run finished its open batches' WHERE state = 'running'"
        )

    async def _save(self, conn: asyncpg.Connection, report: RunReport, *, insert: bool) -> None:
        models = msgspec.json.encode(report.models).decode()
        if insert:
            await conn.execute(
                "INSERT INTO archive_runs (id, kind, dry_run, trigger, state, started_at, "
                "finished_at, message, report, requested_by) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10)",
                report.id,
                report.kind,
                report.dry_run,
                report.trigger,
                report.state,
                report.started_at,
                report.finished_at,
                report.message,
                models,
                report.requested_by,
            )
        else:
            await conn.execute(
                "UPDATE archive_runs SET state = $2, finished_at = $3, message = $4, "
                "report = $5::jsonb WHERE id = $1",
                report.id,
                report.state,
                report.finished_at,
                report.message,
                models,
            )

    async def _execute(
        self,
        lease: _Lease,
        report: RunReport,
        request: RunRequest,
        models: list[str],
        progress: Progress | None,
    ) -> RunReport:
        source = self.source
        if source is None:  # _models refuses such a run first
            raise MoverError("the default database is not configured for the archive service")
        run = Run(
            source=source,
            settings=self.settings,
            target=lease.conn,
            report=report,
            request=request,
            save=lambda: self._save(lease.conn, report, insert=False),
            progress=progress,
        )
        try:
            await run.connect()
            await run.recover()
            for model in models:
                if request.kind == "archive":
                    await run.archive_model(model)
                else:
                    await run.unarchive_model(model)
            report.state = "done"
        except StopRunError as exc:
            report.state, report.message = "stopped", str(exc)
        except MoverError as exc:
            report.state, report.message = "failed", str(exc)
        except asyncio.CancelledError:
            report.state = "failed"
            report.message = (
                "the run was cancelled (the archive service stopping, or the scheduled job's "
                "time limit); the next run finishes its batches"
            )
            raise
        except Exception as exc:
            report.state, report.message = "failed", describe(exc)
            log.warning("archive run %s failed: %s", report.id, describe(exc))
        finally:
            try:
                report.finished_at = _now()
                await run.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._save(lease.conn, report, insert=False), 10)
            finally:
                await lease.release()
                self._current = None
                self._tasks.pop(report.id, None)
                self._leases.pop(report.id, None)
        return report


def _check_names(request: RunRequest) -> None:
    known = ", ".join(CATALOG)
    for model in [*(request.models or []), *(request.ids or {})]:
        if model not in CATALOG:
            raise MoverError(f"unknown model {model!r} (archivable: {known})")
    if request.ids is not None:
        total = sum(len(ids) for ids in request.ids.values())
        if total == 0:
            raise MoverError("ids: name at least one row")
        if total > MAX_IDS:
            raise MoverError(f"ids: at most {MAX_IDS} rows per run (got {total})")
        for model, ids in request.ids.items():
            wrong = next((i for i in ids if not 0 < i < 2**63), None)
            if wrong is not None:
                raise MoverError(f"ids: {model} {wrong} is not a row id (1 to 2^63-1)")


def _report(row: asyncpg.Record) -> RunReport:
    report = msgspec.json.decode(row["report"], type=dict[str, ModelReport])
    return RunReport(
        id=row["id"],
        kind=row["kind"],
        dry_run=row["dry_run"],
        trigger=row["trigger"],
        state=row["state"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        message=row["message"],
        requested_by=row["requested_by"],
        models=report,
    )
