from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, Index, String, Text, false, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from multidb_logging.models.base import LoggingBase


class ApplicationLog(LoggingBase):
    """One application log record."""

    __tablename__ = "application_logs"
    __table_args__ = (Index("ix_application_logs_level_created_at", "level", "created_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    level: Mapped[str] = mapped_column(String(20))
    logger: Mapped[str] = mapped_column(String(255))
    message: Mapped[str] = mapped_column(Text)
    context: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    request_id: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )


class ErrorLog(LoggingBase):
    """An error (exception) with its stack trace, until someone marks it resolved."""

    __tablename__ = "error_logs"
    __table_args__ = (Index("ix_error_logs_resolved_created_at", "resolved", "created_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    error_type: Mapped[str] = mapped_column(String(255), index=True)
    message: Mapped[str] = mapped_column(Text)
    stack_trace: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(64), index=True)
    context: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    resolved: Mapped[bool] = mapped_column(Boolean, server_default=false())
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )
