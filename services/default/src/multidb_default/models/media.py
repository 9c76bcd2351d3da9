from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from multidb_default.models.base import IdentityBase, TimestampMixin


class Media(TimestampMixin, IdentityBase):
    """A stored file (an uploaded scan, or an image derived from one) and its metadata."""

    __tablename__ = "media"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("media.id", ondelete="CASCADE"), index=True
    )
    uploaded_by: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    filename: Mapped[str] = mapped_column(String(255))
    original_name: Mapped[str] = mapped_column(String(255))
    mime_type: Mapped[str] = mapped_column(String(127))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    disk: Mapped[str] = mapped_column(String(50), server_default="local")
    path: Mapped[str] = mapped_column(String(1024))
    checksum_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    # ``metadata`` is reserved on declarative classes: the attribute is ``meta``.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, server_default="{}")


class Mediable(IdentityBase):
    """Links a medium to any record (``mediable_type`` + ``mediable_id``) under a tag."""

    __tablename__ = "mediables"
    __table_args__ = (
        UniqueConstraint(
            "media_id",
            "mediable_type",
            "mediable_id",
            "tag",
            name="uq_mediables_media_id_mediable_type_mediable_id_tag",
        ),
        Index("ix_mediables_mediable_type_mediable_id", "mediable_type", "mediable_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    media_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("media.id", ondelete="CASCADE"))
    mediable_type: Mapped[str] = mapped_column(String(100))
    mediable_id: Mapped[int] = mapped_column(BigInteger)
    tag: Mapped[str] = mapped_column(String(50))
    order: Mapped[int] = mapped_column(Integer, server_default=text("0"))
