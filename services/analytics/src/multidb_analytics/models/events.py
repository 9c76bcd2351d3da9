from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Float, Index, String, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from multidb_analytics.models.base import AnalyticsBase

# Events and activities are range-partitioned by day on their timestamp (partitions
# ``<table>_pYYYYMMDD``, kept by the analytics service: multidb.partitions), so their primary
# key and their unique constraint include it. ``event_id`` is the producer's idempotency
# key: a record sent twice is stored once (NULLs never conflict).


class AnalyticsEvent(AnalyticsBase):
    """One product event (an upload, an OCR run, a login...) with free-form properties."""

    __tablename__ = "analytics_events"
    __table_args__ = (
        UniqueConstraint("event_id", "occurred_at"),
        Index("ix_analytics_events_name_occurred_at", "name", "occurred_at"),
        Index("ix_analytics_events_user_id", "user_id"),
        {"postgresql_partition_by": "RANGE (occurred_at)"},
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    occurred_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), primary_key=True, server_default=func.now()
    )
    event_id: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(100))
    user_id: Mapped[int | None] = mapped_column(BigInteger)
    session_id: Mapped[str | None] = mapped_column(String(100))
    properties: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")


class UserActivity(AnalyticsBase):
    """What a user did, per request, for activity reports."""

    __tablename__ = "user_activities"
    __table_args__ = (
        UniqueConstraint("event_id", "created_at"),
        Index("ix_user_activities_user_id_created_at", "user_id", "created_at"),
        Index("ix_user_activities_created_at", "created_at"),
        {"postgresql_partition_by": "RANGE (created_at)"},
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), primary_key=True, server_default=func.now()
    )
    event_id: Mapped[str | None] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(BigInteger)
    activity: Mapped[str] = mapped_column(String(100))
    resource: Mapped[str | None] = mapped_column(String(255))
    ip_address: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")


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
