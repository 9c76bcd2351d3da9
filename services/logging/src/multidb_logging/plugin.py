"""Hook implementations that register the logging role."""

from __future__ import annotations

from pathlib import Path

from multidb import RoleSpec, hookimpl
from multidb_logging import models


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
