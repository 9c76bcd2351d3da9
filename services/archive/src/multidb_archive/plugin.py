"""Hook implementations that register the archive role."""

from __future__ import annotations

from pathlib import Path

from multidb import RoleSpec, hookimpl
from multidb_archive import models


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
