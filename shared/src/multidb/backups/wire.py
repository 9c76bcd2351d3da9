"""What backups look like on disk and on the wire.

A backup of role ``R`` is two files in ``<MULTI_DB_BACKUP_DIR>/R/``:
``<stamp>-<id>.dump`` (``pg_dump -Fc``) and ``<stamp>-<id>.manifest.json`` (a
:class:`BackupManifest`). ``<stamp>`` is the start, ``YYYYmmddTHHMMSSZ``; ``<id>`` is 12
lowercase hex digits and names the backup in the API. Both files are written under a
temporary name, fsynced and renamed, so a file with its final name is always complete.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

import msgspec

BACKUP_ID = re.compile(r"^[0-9a-f]{12}$")
BackupId = Annotated[str, msgspec.Meta(pattern=BACKUP_ID.pattern)]
RoleName = Annotated[str, msgspec.Meta(min_length=1, max_length=63)]
# running: pg_dump is writing; ok: the dump is complete (``verified`` says whether it was
# read back whole since); failed: ``error`` says why, and no dump file is kept.
BackupStatus = Literal["running", "ok", "failed"]
Operation = Literal["backup", "verify", "drill"]


class DrillResult(msgspec.Struct, kw_only=True):
    """One restore drill: ``passed`` when the scratch restore had the manifest's Alembic
    revision and every table's row count; ``differences`` lists what differed (or why the
    restore failed)."""

    drill_id: str
    started_at: datetime
    finished_at: datetime
    duration_s: float
    passed: bool
    differences: list[str] = msgspec.field(default_factory=list)
    # Whether the logging role's database holds this result yet (sent again until it does).
    recorded: bool = False
    # Why the logging service refused the record (it is then not sent again).
    record_refused: str | None = None


class Verification(msgspec.Struct, kw_only=True):
    """The latest ``verify``: the sha256 matched and ``pg_restore`` read the whole archive."""

    checked_at: datetime
    passed: bool
    error: str | None = None


class BackupManifest(msgspec.Struct, kw_only=True):
    id: BackupId
    role: RoleName
    status: BackupStatus
    started_at: datetime
    file: str  # the dump's file name, beside the manifest
    finished_at: datetime | None = None
    duration_s: float | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    server_version: str | None = None
    pg_dump_version: str | None = None
    alembic_revision: str | None = None
    # schema-qualified table name -> exact row count, in the dump's own snapshot
    row_counts: dict[str, int] = msgspec.field(default_factory=dict)
    trigger: Literal["schedule", "api", "cli"] = "schedule"
    error: str | None = None
    verification: Verification | None = None
    last_drill: DrillResult | None = None

    @property
    def verified(self) -> bool:
        return self.verification is not None and self.verification.passed


class LastBackup(msgspec.Struct, kw_only=True):
    """The newest successful backup of a role, as ``/backup/info`` shows it."""

    id: str
    finished_at: datetime
    age_s: float
    size_bytes: int
    verified: bool
    last_drill: DrillResult | None = None


class BackupState(msgspec.Struct, kw_only=True):
    """What ``/backup/info`` adds per role: the newest good backup, when the next is due,
    whether the role is ``stale`` (its newest good backup is older than twice its
    interval, or it has none while backups are on), and the latest failure."""

    schedule: str  # "every 1h", "off"
    last_backup: LastBackup | None = None
    next_backup_at: datetime | None = None
    stale: bool = False
    last_failure: str | None = None
    last_failure_at: datetime | None = None
    running: str | None = None  # what runs now: "backup 3f2a...", "drill ..."


class OperationStarted(msgspec.Struct, kw_only=True):
    """The 202 answer of ``POST .../backups`` (and of verify, drill)."""

    id: str
    role: str
    operation: Operation
    status: str = "running"


class BackupList(msgspec.Struct, kw_only=True):
    role: str
    backups: list[BackupManifest]


class DrillRecord(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One drill as the logging role stores it (``backup_drills``), idempotent on
    ``drill_id``."""

    drill_id: Annotated[str, msgspec.Meta(min_length=1, max_length=96)]
    role: RoleName
    backup_id: BackupId
    started_at: Annotated[datetime, msgspec.Meta(tz=True)]
    finished_at: Annotated[datetime, msgspec.Meta(tz=True)]
    duration_s: Annotated[float, msgspec.Meta(ge=0)]
    passed: bool
    differences: Annotated[
        list[Annotated[str, msgspec.Meta(max_length=1000)]], msgspec.Meta(max_length=200)
    ] = msgspec.field(default_factory=list)
