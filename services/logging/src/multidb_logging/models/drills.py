from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Float, Index, String, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from multidb.models import SYSTEM_TABLE
from multidb_logging.models.base import LoggingBase


class BackupDrill(LoggingBase):
    """One restore drill of a role's backup, as the role's service reported it
    (:class:`multidb.backups.wire.DrillRecord`), plus when it arrived here.

    ``drill_id`` is the sender's idempotency key: a result sent again is stored once.
    ``differences`` is a JSON array of strings: what the scratch restore got wrong (or why
    it failed); empty when the drill passed. Written by the logging service's own login
    (from ``POST /backups/drills``), never through execute. Not one of the role's spec
    models: the fleet's bookkeeping, not an application log.
    """

    __tablename__ = "backup_drills"
    __table_args__ = (
        # GET /backups/drills?role=: one role's drills, newest first, read off the index.
        Index("ix_backup_drills_role_finished_at", "role", text("finished_at DESC")),
        {"info": SYSTEM_TABLE},
    )

    drill_id: Mapped[str] = mapped_column(String(96), primary_key=True)
    role: Mapped[str] = mapped_column(String(63))
    backup_id: Mapped[str] = mapped_column(String(12))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    duration_s: Mapped[float] = mapped_column(Float)
    passed: Mapped[bool] = mapped_column(Boolean)
    differences: Mapped[list[str]] = mapped_column(JSONB, server_default="[]")
    recorded_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
