"""Hook implementations that register the analytics role."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from pathlib import Path

import asyncpg
from litestar.types import ControllerRouterHandler

from multidb import RoleSpec, hookimpl
from multidb.jobs import BackgroundJob
from multidb_analytics import ingest_route, models, retention, rollup, rollup_route, stats_routes


@hookimpl
def multidb_role_spec() -> RoleSpec:
    return RoleSpec(
        name="analytics",
        database="ocr_analytics_db",
        metadata=models.AnalyticsBase.metadata,
        models=(models.AnalyticsEvent, models.UserActivity, models.SystemMetrics),
        migrations=Path(__file__).parent / "migrations",
        port=8002,
        pool_size=5,
        max_overflow=10,
    )


@hookimpl
def multidb_service_routes(role: str) -> Sequence[ControllerRouterHandler] | None:
    """``POST /stats/samples`` (``db:admin``), ``GET /stats/history`` and
    ``GET /events/rollup`` (``db:read``), ``POST /events`` (``ingest:write``)."""
    if role != "analytics":
        return None
    return [*stats_routes.ROUTES, *rollup_route.ROUTES, *ingest_route.ROUTES]


@hookimpl
def multidb_background_jobs(role: str) -> Sequence[BackgroundJob] | None:
    """Prune the stats history beyond ``MULTI_DB_STATS_RETENTION_DAYS``; keep the daily
    partitions of events and activities, dropping those beyond
    ``MULTI_DB_EVENTS_RETENTION_DAYS`` (hourly)."""
    return [retention.STATS_RETENTION, retention.PARTITIONS] if role == "analytics" else None


@hookimpl
def multidb_rows_arrived(role: str, connection: asyncpg.Connection) -> Awaitable[None] | None:
    """Events copied in by ``multidb split`` count in ``GET /events/rollup``."""
    return rollup.rebuild(connection) if role == "analytics" else None
