from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from multidb.models import check_in
from multidb_default.models.base import IdentityBase, TimestampMixin

DOCUMENT_STATUSES = ("pending", "verified", "rejected", "expired")
OCR_JOB_STATUSES = ("queued", "processing", "completed", "failed")


class IdentityDocument(TimestampMixin, IdentityBase):
    """An identity document of a person (passport, ID card...) and what OCR read from it."""

    __tablename__ = "identity_documents"
    __table_args__ = (
        UniqueConstraint(
            "document_type",
            "document_number",
            "issuing_country",
            name="uq_identity_documents_document_type_number_country",
        ),
        CheckConstraint(check_in("status", DOCUMENT_STATUSES), name="status"),
        CheckConstraint("issuing_country ~ '^[A-Z]{3}$'", name="issuing_country_alpha3"),
        CheckConstraint(
            "expiry_date IS NULL OR issue_date IS NULL OR expiry_date >= issue_date",
            name="expiry_after_issue",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    person_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("people.id", ondelete="CASCADE"), index=True
    )
    media_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("media.id", ondelete="SET NULL"), index=True
    )
    document_type: Mapped[str] = mapped_column(String(50))
    document_number: Mapped[str] = mapped_column(String(100))
    issuing_country: Mapped[str] = mapped_column(String(3))  # ISO 3166-1 alpha-3
    issue_date: Mapped[date | None] = mapped_column(Date)
    expiry_date: Mapped[date | None] = mapped_column(Date, index=True)
    extracted_data: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    status: Mapped[str] = mapped_column(String(20), server_default="pending", index=True)


class OCRJob(IdentityBase):
    """One OCR run over a medium: its engine, input, output and timing."""

    __tablename__ = "ocr_jobs"
    __table_args__ = (
        CheckConstraint(check_in("status", OCR_JOB_STATUSES), name="status"),
        Index("ix_ocr_jobs_status_created_at", "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    media_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("media.id", ondelete="CASCADE"), index=True
    )
    document_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("identity_documents.id", ondelete="SET NULL"), index=True
    )
    status: Mapped[str] = mapped_column(String(20), server_default="queued")
    engine: Mapped[str] = mapped_column(String(50))
    input: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    output: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
    processing_time_ms: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
