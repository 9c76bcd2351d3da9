"""Hook implementations that register the logging role."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from litestar.types import ControllerRouterHandler

from multidb import RoleSpec, hookimpl
from multidb.jobs import BackgroundJob
from multidb_logging import (
    audit_route,
    drills_route,
    ingest_route,
    logs_route,
    models,
    retention,
    verify,
)


@hookimpl
def multidb_role_spec() -> RoleSpec:
    return RoleSpec(
        name="logging",
        database="ocr_logging_db",
        metadata=models.LoggingBase.metadata,
        models=(models.ApplicationLog, models.ErrorLog, models.AccessLog),
        migrations=Path(__file__).parent / "migrations",
        port=8003,
        pool_size=5,
        max_overflow=10,
    )


@hookimpl
def multidb_service_routes(role: str) -> Sequence[ControllerRouterHandler] | None:
    """``/audit/access`` and ``/backups/drills`` (scope ``db:admin``), ``GET /logs``
    (scope ``db:read``) and ``POST /logs`` (scope ``ingest:write``) on the logging service
    only."""
    if role != "logging":
        return None
    return [*audit_route.ROUTES, *drills_route.ROUTES, *logs_route.ROUTES, *ingest_route.ROUTES]


@hookimpl
def multidb_background_jobs(role: str) -> Sequence[BackgroundJob] | None:
    """Keep the daily partitions of the logs, dropping those beyond
    ``MULTI_DB_LOG_RETENTION_DAYS`` (hourly)."""
    return [retention.PARTITIONS] if role == "logging" else None


@hookimpl
def multidb_cli_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``multidb audit verify``: check the audit trail's hash chains."""
    verify.add_commands(commands)
