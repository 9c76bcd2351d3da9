"""The archive service's mover: one per service process, its schedule and its status.

The service opens one :class:`~multidb_archive.mover.Mover` at start-up
(``multidb_service_resources``) from the default database's settings (the source) and its
own (the target), and closes it when it stops. Routes, the scheduled job and ``/stats``
find it on ``runtime.extensions``. An archive service deployed without the default
database's settings still starts: its runs are refused (503) and its status says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import asyncpg
import msgspec

from multidb.errors import BadRequestError, ConflictError, DatabaseUnavailableError, describe
from multidb.jobs import BackgroundJob
from multidb.service.runtime import UNREACHABLE, RoleRuntime
from multidb.settings import Settings
from multidb_archive.mover import (
    ArchiveSettings,
    Mover,
    MoverBusyError,
    MoverError,
    RunReport,
    RunRequest,
    load_archive_settings,
)

log = logging.getLogger("multidb.archive")

ROLE = "archive"
# The key of the archive's settings in Settings.plugins and of its mover in
# runtime.extensions.
EXTENSION = "archive"
# Not "mover": the job runner's leader lock is keyed by role and job name, and the mover
# takes its own lock under lock_key("archive", "mover"); a job of that name would hold the
# very lock its run then asks for, and every scheduled run would be "busy".
JOB_NAME = "archiver"
# A scheduled run goes on until it is done; this bounds a run that hangs.
JOB_TIMEOUT_S = 6 * 3600.0
# The first scheduled run comes this long after start-up (or after one interval, if
# shorter): a service that restarts often does not archive at every start.
FIRST_RUN_DELAY_S = 60.0
NO_SOURCE = "the default database is not configured for the archive service"
# archive_runs.requested_by and archived_*.archived_by are VARCHAR(255): who asked for a run
# is stored in both, so it is cut to fit (see requester).
REQUESTER_MAX = 255
_DIGEST_CHARS = 16


def archive_settings(settings: Settings) -> ArchiveSettings:
    """The mover's settings, as the ``multidb_plugin_settings`` hook parsed them (the
    defaults when the settings were built some other way)."""
    found = settings.plugins.get(EXTENSION)
    return found if isinstance(found, ArchiveSettings) else load_archive_settings({})


@contextlib.asynccontextmanager
async def mover_running(runtime: RoleRuntime) -> AsyncIterator[Mover]:
    """The service's mover, on ``runtime.extensions``, closed when the service stops."""
    mover = Mover(
        runtime.settings.databases.get("default"),
        runtime.database,
        archive_settings(runtime.settings),
    )
    if mover.source is None:
        log.warning("archive: %s: runs are refused until DB_HOST is set", NO_SOURCE)
    runtime.extensions[EXTENSION] = mover
    try:
        yield mover
    finally:
        runtime.extensions.pop(EXTENSION, None)
        await mover.close()


def service_mover(runtime: RoleRuntime) -> Mover:
    mover = runtime.extensions.get(EXTENSION)
    if not isinstance(mover, Mover):  # only while the service starts or stops
        raise DatabaseUnavailableError("the archive service's mover is not running")
    return mover


def requester(subject: str) -> str:
    """``subject`` (a caller's, e.g. a JWT's ``sub``) as a run's ``requested_by``: what the
    columns can hold, whatever the caller sent.

    Characters PostgreSQL text cannot store (NUL, a lone surrogate) become U+FFFD. A subject
    longer than :data:`REQUESTER_MAX` keeps its beginning, so a person still reads who it
    was, then ``…`` and the first hex digits of the whole subject's SHA-256, so two long
    subjects that share a beginning stay apart (a hash alone would say nothing to a reader;
    a bare cut would make them one)."""
    cleaned = "".join(
        "\ufffd" if char == "\x00" or "\ud800" <= char <= "\udfff" else char for char in subject
    )
    if len(cleaned) <= REQUESTER_MAX:
        return cleaned
    whole = subject.encode("utf-8", "surrogatepass")
    digest = hashlib.sha256(whole).hexdigest()[:_DIGEST_CHARS]
    return f"{cleaned[: REQUESTER_MAX - _DIGEST_CHARS - 1]}…{digest}"


async def start_run(runtime: RoleRuntime, request: RunRequest, requested_by: str) -> RunReport:
    """Start a run for an HTTP caller (``requested_by``: its subject, cut to fit by
    :func:`requester`): 400 for a request the mover refuses, 409 while another mover runs,
    503 without a source or with the archive database down."""
    mover = service_mover(runtime)
    if mover.source is None:
        raise DatabaseUnavailableError(NO_SOURCE)
    try:
        return await mover.start(request, trigger="http", requested_by=requester(requested_by))
    except MoverBusyError as exc:
        raise ConflictError(f"another archive run holds the mover: {exc}") from None
    except MoverError as exc:
        raise BadRequestError(str(exc)) from None
    except (*UNREACHABLE, asyncpg.PostgresError) as exc:
        msg = f"the archive run could not start: {describe(exc)}"
        raise DatabaseUnavailableError(msg) from None


async def reading(runtime: RoleRuntime, what: Awaitable[Any]) -> Any:
    """``what`` (a read of the runs), bounded; a database that cannot answer is a 503."""
    timeout_ms = runtime.settings.health_timeout_ms * 2
    try:
        async with asyncio.timeout(timeout_ms / 1000):
            return await what
    except (*UNREACHABLE, asyncpg.PostgresError) as exc:
        msg = f"the archive runs cannot be read: {describe(exc, timeout_ms)}"
        raise DatabaseUnavailableError(msg) from None


async def archiving_detail(runtime: RoleRuntime) -> dict[str, Any]:
    """``/stats`` ``detail.archiving``: the mover's status, or one line saying why not."""
    timeout_ms = max(1, runtime.settings.health_timeout_ms // 2)
    mover = runtime.extensions.get(EXTENSION)
    if not isinstance(mover, Mover):
        return {"archiving": {"error": "the mover is not running"}}
    try:
        async with asyncio.timeout(timeout_ms / 1000):
            status = await mover.status()
    except Exception as exc:
        return {"archiving": {"error": f"status unavailable: {describe(exc, timeout_ms)}"}}
    detail: dict[str, Any] = msgspec.to_builtins(status)
    if mover.source is None:
        detail["error"] = f"{NO_SOURCE}: runs are refused"
    return {"archiving": detail}


class ScheduledRunFailedError(Exception):
    """A scheduled run ended ``failed``: counted as the job's failure."""


async def _scheduled_run(runtime: RoleRuntime, _lock: asyncpg.Connection) -> None:
    mover = service_mover(runtime)
    if mover.source is None:
        log.warning("archive: scheduled run skipped: %s", NO_SOURCE)
        return
    try:
        report = await mover.run(RunRequest(), trigger="schedule")
    except MoverBusyError:
        # A run from HTTP or the CLI is going: it does the same work.
        log.info("archive: scheduled run skipped: another run holds the mover")
        return
    line = f"archive run {report.id} {report.state}"
    if report.message:
        line += f": {report.message}"
    moved = sum(model.rows for model in report.models.values())
    if report.state == "failed":
        log.error("%s", line)
        raise ScheduledRunFailedError(line)
    if report.state == "stopped":
        log.warning("%s (%d rows moved)", line, moved)
    else:
        log.info("%s: %d rows moved", line, moved)


def scheduled_job(settings: Settings) -> BackgroundJob | None:
    """Policy archiving every ``MULTI_DB_ARCHIVE_INTERVAL`` (none when it is ``off``)."""
    interval_s = archive_settings(settings).interval_s
    if interval_s is None:
        return None
    return BackgroundJob(
        name=JOB_NAME,
        interval_s=interval_s,
        run=_scheduled_run,
        first_delay_s=min(interval_s, FIRST_RUN_DELAY_S),
        timeout_s=JOB_TIMEOUT_S,
    )
