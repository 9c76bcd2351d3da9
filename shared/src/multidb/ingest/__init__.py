"""Ingestion: batches of log records and events, checked, then written with ``COPY``.

What every ingestion API shares, whichever role serves it:

- :mod:`~multidb.ingest.limits`: the limits (``MULTI_DB_INGEST_MAX_RECORDS``,
  ``MULTI_DB_INGEST_MAX_BYTES``, ``MULTI_DB_INGEST_MAX_FIELD_BYTES``) and the window a
  record's timestamp must fall in;
- :mod:`~multidb.ingest.body`: reading the body (bounded) and decoding it, a JSON array
  or NDJSON by its Content-Type, into typed records; a bad record is a 400 that names its
  index and field, and nothing of the batch is stored;
- :mod:`~multidb.ingest.records`: the records (the wire format producers send) and the
  checks msgspec's types cannot make (timestamps in the window, bytes of long texts);
- :mod:`~multidb.ingest.staging`: one transaction per batch, ``COPY`` into a TEMP
  staging table, then the role's ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` into
  its tables, so a batch sent again stores nothing twice.

The role services own their routes and SQL: the logging service's ``POST /logs``, the
analytics service's ``POST /events``.
"""

from multidb.ingest.body import decode_batch, read_body
from multidb.ingest.limits import IngestLimits, TimeWindow
from multidb.ingest.records import (
    ActivityRecord,
    ErrorInfo,
    EventRecord,
    IngestReceipt,
    LogRecord,
    RecordChecks,
)
from multidb.ingest.staging import Staged, Staging, write_batch

__all__ = [
    "ActivityRecord",
    "ErrorInfo",
    "EventRecord",
    "IngestLimits",
    "IngestReceipt",
    "LogRecord",
    "RecordChecks",
    "Staged",
    "Staging",
    "TimeWindow",
    "decode_batch",
    "read_body",
    "write_batch",
]
