"""Hook implementations that register the archive role."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from litestar.types import ControllerRouterHandler

from multidb import RoleSpec, hookimpl
from multidb.jobs import BackgroundJob
from multidb.service.runtime import RoleRuntime
from multidb.settings import Settings
from multidb_archive import command, models, runs, runs_route
from multidb_archive.mover import load_archive_settings


@hookimpl
def multidb_role_spec() -> RoleSpec:
    return RoleSpec(
        name="archive",
        database="ocr_archive_db",
        metadata=models.ArchiveBase.metadata,
        models=(models.ArchivedMedia, models.ArchivedPeople, models.ArchivedUser),
        migrations=Path(__file__).parent / "migrations",
        port=8004,
        pool_size=3,
        max_overflow=5,
    )


@hookimpl
def multidb_plugin_settings(env: Mapping[str, str]) -> Mapping[str, Any]:
    """The mover's settings: MULTI_DB_ARCHIVE_POLICY, MULTI_DB_ARCHIVE_INTERVAL and the
    batch size and lag bounds (see :mod:`multidb_archive.mover.settings`)."""
    return {runs.EXTENSION: load_archive_settings(env)}


@hookimpl
def multidb_service_resources(
    role: str, runtime: RoleRuntime
) -> AbstractAsyncContextManager[Any] | None:
    """The archive service's one mover, closed when the service stops."""
    return runs.mover_running(runtime) if role == runs.ROLE else None


@hookimpl
def multidb_service_routes(role: str) -> Sequence[ControllerRouterHandler] | None:
    """``/runs`` (scope ``db:admin``) on the archive service only."""
    return runs_route.ROUTES if role == runs.ROLE else None


@hookimpl
def multidb_background_jobs(role: str, settings: Settings) -> Sequence[BackgroundJob] | None:
    """Policy archiving every ``MULTI_DB_ARCHIVE_INTERVAL`` (none when ``off``)."""
    if role != runs.ROLE:
        return None
    job = runs.scheduled_job(settings)
    return [job] if job is not None else None


@hookimpl
def multidb_stats_detail(role: str, runtime: RoleRuntime) -> Awaitable[Any] | None:
    """``detail.archiving``: the mover's status (runs, rows archived, open ledger entries)."""
    return runs.archiving_detail(runtime) if role == runs.ROLE else None


@hookimpl
def multidb_cli_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``multidb archive run|status|unarchive``."""
    command.add_commands(commands)
