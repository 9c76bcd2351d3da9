"""Hook implementations that register the default role."""

from __future__ import annotations

from pathlib import Path

from multidb import RoleSpec, hookimpl
from multidb_default import models


@hookimpl
def multidb_role_spec() -> RoleSpec:
    return RoleSpec(
        name="default",
        database="ocr_identity_db",
        metadata=models.IdentityBase.metadata,
        models=(
            models.User,
            models.People,
            models.Media,
            models.IdentityDocument,
            models.AuditLog,
            models.OCRJob,
            models.Mediable,
        ),
        migrations=Path(__file__).parent / "migrations",
        port=8001,
        pool_size=10,
        max_overflow=20,
        env_prefix="DB_",
        env_database_key="NAME",
        # The identity data changes all day and matters most: hourly, not daily.
        backup_interval="1h",
    )
