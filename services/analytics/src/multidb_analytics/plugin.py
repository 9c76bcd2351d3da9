"""Hook implementations that register the analytics role."""

from __future__ import annotations

from pathlib import Path

from multidb import RoleSpec, hookimpl
from multidb_analytics import models


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
