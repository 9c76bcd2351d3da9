"""The archive role's models."""

from multidb_archive.models.archived import ArchivedMedia, ArchivedPeople, ArchivedUser
from multidb_archive.models.base import ArchiveBase
from multidb_archive.models.mover import ArchiveBatch, ArchiveRun

__all__ = [
    "ArchiveBase",
    "ArchiveBatch",
    "ArchiveRun",
    "ArchivedMedia",
    "ArchivedPeople",
    "ArchivedUser",
]
