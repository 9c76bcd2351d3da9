"""The archive role's models."""

from multidb_archive.models.archived import ArchivedMedia, ArchivedPeople, ArchivedUser
from multidb_archive.models.base import ArchiveBase

__all__ = ["ArchiveBase", "ArchivedMedia", "ArchivedPeople", "ArchivedUser"]
