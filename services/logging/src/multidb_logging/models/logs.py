from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Index,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from multidb_logging.models.base import LoggingBase

# Both tables are range-partitioned by day on ``created_at`` (partitions
# ``<table>_pYYYYMMDD``, kept by the logging service: multidb.partitions), so their primary
# key and their unique constraint include it. ``event_id`` is the producer's idempotency
# key: a record sent twice is stored once (NULLs never conflict).


class ApplicationLog(LoggingBase):
    """One application log record."""

    __tablename__ = "application_logs"
    __table_args__ = (
        UniqueConstraint("event_id", "created_at"),
        # Newest first, and the keyset cursor (created_at, id).
        Index("ix_application_logs_created_at_id", text("created_at DESC"), text("id DESC")),
        Index(
            "ix_application_logs_level_created_at",
            "level",
            text("created_at DESC"),
            text("id DESC"),
        ),
        Index("ix_application_logs_logger_created_at", "logger", text("created_at DESC")),
        Index("ix_application_logs_request_id", "request_id"),
        {"postgresql_partition_by": "RANGE (created_at)"},
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), primary_key=True, server_default=func.now()
    )
    event_id: Mapped[str | None] = mapped_column(String(64))
    level: Mapped[str] = mapped_column(String(20))
    logger: Mapped[str] = mapped_column(String(255))
    message: Mapped[str] = mapped_column(Text)
    context: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    request_id: Mapped[str | None] = mapped_column(String(64))


class ErrorLog(LoggingBase):
    """An error (exception) with its stack trace, until someone marks it resolved."""

    __tablename__ = "error_logs"
    __table_args__ = (
        UniqueConstraint("event_id", "created_at"),
        Index("ix_error_logs_created_at_id", text("created_at DESC"), text("id DESC")),
        Index("ix_error_logs_request_id", "request_id"),
        Index("ix_error_logs_error_type_created_at", "error_type", text("created_at DESC")),
        {"postgresql_partition_by": "RANGE (created_at)"},
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), primary_key=True, server_default=func.now()
    )
    event_id: Mapped[str | None] = mapped_column(String(64))
    logger: Mapped[str | None] = mapped_column(String(255))
    level: Mapped[str] = mapped_column(String(20), server_default="ERROR")
    error_type: Mapped[str] = mapped_column(String(255))
    message: Mapped[str] = mapped_column(Text)
    stack_trace: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(64))
    context: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    resolved: Mapped[bool] = mapped_column(Boolean, server_default=false())
