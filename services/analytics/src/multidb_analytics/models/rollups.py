from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from multidb.models import SYSTEM_TABLE
from multidb_analytics.models.base import AnalyticsBase


class AnalyticsEventRollup(AnalyticsBase):
    """How many events named ``name`` occurred in the UTC hour starting at ``bucket``
    (``date_trunc('hour', occurred_at)``): what ``GET /events/rollup`` reads, never the raw
    events. Kept by the ingestion transaction that stores the events (only rows actually
    inserted count). Not one of the role's spec models: a system table, out of the execute
    logins' reach.
    """

    __tablename__ = "analytics_event_rollups"
    __table_args__ = ({"info": SYSTEM_TABLE},)

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    bucket: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    events: Mapped[int] = mapped_column(BigInteger)
