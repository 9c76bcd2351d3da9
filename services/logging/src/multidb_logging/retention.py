"""Retention of the logs: a background job of the logging service (``partitions``), once an
hour and shortly after start-up, by one replica at a time (see :mod:`multidb.jobs`),
creates the daily partitions of ``application_logs`` and ``error_logs`` for the next days
and drops whole those older than ``MULTI_DB_LOG_RETENTION_DAYS`` (30 by default); see
:mod:`multidb.partitions`. The audit trail (``access_logs``) is not aged out here.
"""

from __future__ import annotations

from operator import attrgetter

from multidb.partitions import upkeep_job

PARTITIONS = upkeep_job(("application_logs", "error_logs"), attrgetter("log_retention_days"))
