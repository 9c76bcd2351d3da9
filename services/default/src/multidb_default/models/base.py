from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from multidb.models import role_metadata


class IdentityBase(DeclarativeBase):
    """Declarative base of the default role: its own MetaData, so its own migrations."""

    metadata = role_metadata()


class TimestampMixin:
    """``created_at`` and ``updated_at``, set by the database and refreshed on ORM updates."""

    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), sort_order=100
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), sort_order=101
    )


class SoftDeleteMixin:
    """``deleted_at``: rows are soft-deleted (set) rather than removed."""

    deleted_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), index=True, sort_order=102
    )
