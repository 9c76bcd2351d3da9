from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, Index, Integer, String, Text, func, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from multidb.models import SYSTEM_TABLE
from multidb_archive.models.base import ArchiveBase


class ArchiveRun(ArchiveBase):
    """One run of the mover (multidb_archive.mover): archive or unarchive, real or dry,
    who started it, how it ended and what it moved per model (``report``)."""

    __tablename__ = "archive_runs"
    __table_args__ = (
        Index("ix_archive_runs_started_at", text("started_at DESC")),
        {"info": SYSTEM_TABLE},
    )

    id: Mapped[str] = mapped_column(String(12), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))
    dry_run: Mapped[bool] = mapped_column(Boolean)
    trigger: Mapped[str] = mapped_column(String(10))
    state: Mapped[str] = mapped_column(String(10))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    message: Mapped[str | None] = mapped_column(Text)
    report: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    requested_by: Mapped[str | None] = mapped_column(String(255))


class ArchiveBatch(ArchiveBase):
    """The mover's ledger: one row per batch, written before the batch's rows leave
    their database and closed after, so a run that died in between is finished by the next
    (``copied``/``copying``: open; ``done``/``recovered``: closed)."""

    __tablename__ = "archive_batches"
    __table_args__ = (
        Index(
            "ix_archive_batches_open",
            "state",
            postgresql_where=text("state IN ('copied', 'copying')"),
        ),
        {"info": SYSTEM_TABLE},
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    run_id: Mapped[str] = mapped_column(String(12), index=True)
    direction: Mapped[str] = mapped_column(String(10))
    model: Mapped[str] = mapped_column(String(63))
    ids: Mapped[list[int]] = mapped_column(ARRAY(BigInteger))
    checksum: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(10))
    rows: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
