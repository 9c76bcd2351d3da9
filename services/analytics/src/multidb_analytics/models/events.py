from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Float, Index, String, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from multidb_analytics.models.base import AnalyticsBase


class AnalyticsEvent(AnalyticsBase):
    """One product event (an upload, an OCR run, a login...) with free-form properties."""

    __tablename__ = "analytics_events"
    __table_args__ = (Index("ix_analytics_events_name_occurred_at", "name", "occurred_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    user_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    session_id: Mapped[str | None] = mapped_column(String(100))
    properties: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    occurred_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class UserActivity(AnalyticsBase):
    """What a user did, per request, for activity reports."""

    __tablename__ = "user_activities"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    activity: Mapped[str] = mapped_column(String(100))
    resource: Mapped[str | None] = mapped_column(String(255))
    ip_address: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )


class SystemMetrics(AnalyticsBase):
    """A sampled system measurement (queue depth, OCR latency, ...)."""

    __tablename__ = "system_metrics"
    __table_args__ = (Index("ix_system_metrics_name_recorded_at", "name", "recorded_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    value: Mapped[float] = mapped_column(Float)
    unit: Mapped[str | None] = mapped_column(String(20))
    labels: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    recorded_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
