from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase

from multidb.models import role_metadata


class LoggingBase(DeclarativeBase):
    """Declarative base of the logging role: its own MetaData, so its own migrations."""

    metadata = role_metadata()
