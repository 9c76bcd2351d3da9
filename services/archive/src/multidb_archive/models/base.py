from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from multidb.models import role_metadata


class ArchiveBase(DeclarativeBase):
    """Declarative base of the archive role: its own MetaData, so its own migrations."""

    metadata = role_metadata()


class ArchivedRowMixin:
    """What every archived row has: the original id, when/who/why, and the row as JSONB."""

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, sort_order=-100)
    original_id: Mapped[int] = mapped_column(BigInteger, index=True, unique=True, sort_order=-99)
    archived_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True, sort_order=100
    )
    archived_by: Mapped[str | None] = mapped_column(String(255), sort_order=101)
    reason: Mapped[str | None] = mapped_column(Text, sort_order=102)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, sort_order=103)
    # What moved with the row (multidb_archive.mover): rows of the tables whose foreign key
    # cascades from it, ``{"table": [row, ...]}``, and the rows that pointed at it with a
    # key PostgreSQL set to NULL, ``{"table.column": [id, ...]}``; both are put back on
    # unarchive. ``checksum`` is the md5 the mover verified the copy against.
    dependents: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}", sort_order=104)
    links: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}", sort_order=105)
    checksum: Mapped[str | None] = mapped_column(String(32), sort_order=106)
