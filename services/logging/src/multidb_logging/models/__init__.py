"""The logging role's models."""

from multidb_logging.models.access import (
    ACCESS_OUTCOMES,
    AUTH_METHODS,
    AccessLog,
    AccessLogChain,
)
from multidb_logging.models.base import LoggingBase
from multidb_logging.models.drills import BackupDrill
from multidb_logging.models.logs import ApplicationLog, ErrorLog

__all__ = [
    "ACCESS_OUTCOMES",
    "AUTH_METHODS",
    "AccessLog",
    "AccessLogChain",
    "ApplicationLog",
    "BackupDrill",
    "ErrorLog",
    "LoggingBase",
]
