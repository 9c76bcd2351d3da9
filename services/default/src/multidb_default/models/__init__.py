"""The default role's models."""

from multidb_default.models.audit import AuditLog
from multidb_default.models.base import IdentityBase
from multidb_default.models.documents import (
    DOCUMENT_STATUSES,
    OCR_JOB_STATUSES,
    IdentityDocument,
    OCRJob,
)
from multidb_default.models.identity import People, User
from multidb_default.models.media import Media, Mediable

__all__ = [
    "DOCUMENT_STATUSES",
    "OCR_JOB_STATUSES",
    "AuditLog",
    "IdentityBase",
    "IdentityDocument",
    "Media",
    "Mediable",
    "OCRJob",
    "People",
    "User",
]
