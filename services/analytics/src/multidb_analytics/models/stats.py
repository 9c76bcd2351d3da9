from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from multidb.models import SYSTEM_TABLE, check_in
from multidb.stats_samples import SAMPLE_STATUSES
from multidb_analytics.models.base import AnalyticsBase


class StatsSample(AnalyticsBase):
    """One role's statistics as the gateway sampled them: the fleet's stats history.

    ``sample_id`` is ``<role>:<bucket epoch>`` (the sample time floored to the sampling
    interval), so gateways sampling at once store each sample once. ``status`` is
    ``available`` or ``unavailable``; an unavailable sample keeps its ``error`` and has no
    figures, so a gap shows. Written by the analytics service's own login (from
    ``POST /stats/samples``) and pruned after ``MULTI_DB_STATS_RETENTION_DAYS``; never
    through execute.
    """

    __tablename__ = "stats_samples"
    __table_args__ = (
        CheckConstraint(check_in("status", SAMPLE_STATUSES), name="status"),
        Index("ix_stats_samples_role_sampled_at", "role", "sampled_at"),
        Index("ix_stats_samples_sampled_at", "sampled_at"),
        {"info": SYSTEM_TABLE},
    )

    sample_id: Mapped[str] = mapped_column(String(96), primary_key=True)
    role: Mapped[str] = mapped_column(String(63))
    sampled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(20))
    error: Mapped[str | None] = mapped_column(Text)
    table_count: Mapped[int | None] = mapped_column(Integer)
    database_size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    connections: Mapped[int | None] = mapped_column(Integer)
    commits: Mapped[int | None] = mapped_column(BigInteger)
    rollbacks: Mapped[int | None] = mapped_column(BigInteger)
    cache_hit_ratio: Mapped[float | None] = mapped_column(Float)
    deadlocks: Mapped[int | None] = mapped_column(BigInteger)
    temp_bytes: Mapped[int | None] = mapped_column(BigInteger)
