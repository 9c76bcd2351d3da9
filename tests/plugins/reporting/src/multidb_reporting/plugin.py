"""Hook implementations of the test-only ``reporting`` role: every hook kind, once."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asyncpg
from litestar import get

from multidb import RoleSpec, hookimpl
from multidb.wire import ExecuteVote
from multidb_reporting.models import ReportingBase, ReportSnapshot


@hookimpl
def multidb_role_spec() -> RoleSpec:
    return RoleSpec(
        name="reporting",
        database="ocr_reporting_db",
        metadata=ReportingBase.metadata,
        models=(ReportSnapshot,),
        migrations=Path(__file__).parent / "migrations",
        port=8005,
        pool_size=2,
        max_overflow=1,
    )


@hookimpl
async def multidb_health_detail(
    role: str, connection: asyncpg.Connection
) -> Mapping[str, Any] | None:
    if role != "reporting":
        return None
    return {"snapshots": await connection.fetchval("SELECT count(*) FROM report_snapshots")}


@hookimpl
def multidb_stats_detail(role: str) -> Mapping[str, Any] | None:
    return {"plugin": "multidb-reporting"} if role == "reporting" else None


@get("/reports/ping")
async def ping() -> dict[str, str]:
    return {"pong": "reporting"}


@hookimpl
def multidb_service_routes(role: str) -> list[Any] | None:
    return [ping] if role == "reporting" else None


@hookimpl
def multidb_execute_vote(role: str, query: str) -> ExecuteVote | None:
    if role == "reporting" and "report_snapshots" in query and "secret" in query:
        return ExecuteVote(allow=False, reason="reporting: secret snapshots are off limits")
    return None
