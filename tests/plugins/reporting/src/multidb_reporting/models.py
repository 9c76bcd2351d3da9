from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, String, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from multidb.models import role_metadata


class ReportingBase(DeclarativeBase):
    metadata = role_metadata()


class ReportSnapshot(ReportingBase):
    __tablename__ = "report_snapshots"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
