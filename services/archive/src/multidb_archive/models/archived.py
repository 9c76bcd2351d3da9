from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from multidb_archive.models.base import ArchiveBase, ArchivedRowMixin


class ArchivedUser(ArchivedRowMixin, ArchiveBase):
    """A user removed from the main database; ``data`` holds the whole ``users`` row."""

    __tablename__ = "archived_users"

    username: Mapped[str | None] = mapped_column(String(50), index=True)
    email: Mapped[str | None] = mapped_column(String(255), index=True)


class ArchivedPeople(ArchivedRowMixin, ArchiveBase):
    """A person removed from the main database; ``data`` holds the whole ``people`` row."""

    __tablename__ = "archived_people"

    full_name: Mapped[str | None] = mapped_column(String(310), index=True)
    national_id_number: Mapped[str | None] = mapped_column(String(50), index=True)


class ArchivedMedia(ArchivedRowMixin, ArchiveBase):
    """A medium removed from the main database; ``data`` holds the whole ``media`` row."""

    __tablename__ = "archived_media"

    filename: Mapped[str | None] = mapped_column(String(255), index=True)
    mime_type: Mapped[str | None] = mapped_column(String(127), index=True)
