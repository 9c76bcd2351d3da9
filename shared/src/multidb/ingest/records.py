"""The records producers send, and the checks their types cannot make.

msgspec enforces the types, the required fields, unknown fields and the length of the
short strings (each its column's length, in characters as PostgreSQL counts them).
:class:`RecordChecks` adds what depends on settings or needs a look at the value: the
timestamp window, ``MULTI_DB_INGEST_MAX_FIELD_BYTES`` for long texts and JSON objects,
and that a JSON field is an object. It also makes values storable: PostgreSQL text cannot
hold NUL, which becomes U+FFFD, as everywhere else in multidb.

``event_id`` is the producer's idempotency key: a record sent again with the same
``event_id`` and timestamp is stored once. Without one, every send stores a new row.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal, get_args

import msgspec

from multidb.errors import BadRequestError
from multidb.ingest.limits import IngestLimits, TimeWindow

AwareDatetime = Annotated[dt.datetime, msgspec.Meta(tz=True)]
EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
BigInt = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
Level = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LEVELS: tuple[str, ...] = get_args(Level)
# Strings of at most n characters: their column's length.
Text45 = Annotated[str, msgspec.Meta(max_length=45)]
Text64 = Annotated[str, msgspec.Meta(max_length=64)]
Text100 = Annotated[str, msgspec.Meta(max_length=100)]
Text255 = Annotated[str, msgspec.Meta(max_length=255)]
Text512 = Annotated[str, msgspec.Meta(max_length=512)]
Name100 = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


# A JSON field (context, properties, details) is kept as sent: checked to be an object and
# stored without being decoded and encoded again. Absent, it is stored as {}.
JsonObject = Annotated[
    msgspec.Raw, msgspec.Meta(extra_json_schema={"type": "object", "description": "any object"})
]
_EMPTY = "{}"
_NUL_ESCAPE = b"\\u0000"
# A UTF-8 character is at most 4 bytes: a text of at most limit/4 characters fits.
UTF8_MAX = 4


class ErrorInfo(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, gc=False):
    """The exception a log record carries: stored as an ``error_logs`` row too."""

    type: Text255
    message: str
    stack_trace: str | None = None


class LogRecord(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, gc=False):
    """One application log record (``POST /logs`` of the logging service)."""

    timestamp: AwareDatetime
    level: Level
    logger: Text255
    message: str
    event_id: EventId | None = None
    request_id: Text64 | None = None
    context: JsonObject | msgspec.UnsetType = msgspec.UNSET
    error: ErrorInfo | None = None


class EventRecord(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    gc=False,
    tag="event",
    tag_field="type",
):
    """A product event (``POST /events`` of the analytics service, ``"type": "event"``)."""

    name: Name100
    occurred_at: AwareDatetime
    event_id: EventId | None = None
    user_id: BigInt | None = None
    session_id: Text100 | None = None
    properties: JsonObject | msgspec.UnsetType = msgspec.UNSET


class ActivityRecord(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    gc=False,
    tag="activity",
    tag_field="type",
):
    """What a user did (``POST /events`` of the analytics service, ``"type": "activity"``)."""

    user_id: BigInt
    activity: Name100
    created_at: AwareDatetime
    event_id: EventId | None = None
    resource: Text255 | None = None
    ip_address: Text45 | None = None
    user_agent: Text512 | None = None
    details: JsonObject | msgspec.UnsetType = msgspec.UNSET


AnalyticsRecord = EventRecord | ActivityRecord


class IngestReceipt(msgspec.Struct, kw_only=True):
    """``received``: records in the batch; ``inserted``: those new to the table (a record
    whose ``event_id`` and timestamp were stored before is not inserted again)."""

    received: int
    inserted: int


# How deep a JSON object field may nest: what a log's context or an event's properties
# need, and far from what the code reading it back (and PostgreSQL) can take.
MAX_DEPTH = 64


def _depth(raw: bytes) -> int:
    """How deep ``raw`` (JSON, already checked to decode) nests, counted without recursion."""
    try:
        decoded = msgspec.json.decode(raw)
    except RecursionError:
        return MAX_DEPTH + 1
    deepest, stack = 0, [(decoded, 1)]
    while stack:
        value, level = stack.pop()
        deepest = max(deepest, level)
        children = value.values() if isinstance(value, dict) else value
        if isinstance(value, dict | list):
            stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


def _replace_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_replace_nul(key): _replace_nul(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_replace_nul(item) for item in value]
    return value


class RecordChecks:
    """The checks of one batch: ``limits`` and the timestamp ``window``."""

    def __init__(self, limits: IngestLimits, window: TimeWindow) -> None:
        self.max_field_bytes = limits.max_field_bytes
        self._short = limits.max_field_bytes // UTF8_MAX
        self.window = window

    def timestamp(self, value: dt.datetime, index: int, field: str) -> dt.datetime:
        self.window.check(value, index, field)
        return value

    def long_text(self, value: str, index: int, field: str) -> str:
        """``value``, storable; a 400 when it is longer than the field limit, in bytes."""
        if len(value) > self._short and len(value.encode()) > self.max_field_bytes:
            msg = (
                f"record {index}, field '{field}': longer than {self.max_field_bytes} bytes "
                "(MULTI_DB_INGEST_MAX_FIELD_BYTES)"
            )
            raise BadRequestError(msg, index=index, field=field)
        return storable(value)

    def json_object(self, value: msgspec.Raw | msgspec.UnsetType, index: int, field: str) -> str:
        """The JSON text of an object field, as ``jsonb`` takes it (``{}`` when absent)."""
        if value is msgspec.UNSET:
            return _EMPTY
        raw = bytes(value)
        if len(raw) > self.max_field_bytes:
            msg = (
                f"record {index}, field '{field}': longer than {self.max_field_bytes} bytes "
                "of JSON (MULTI_DB_INGEST_MAX_FIELD_BYTES)"
            )
            raise BadRequestError(msg, index=index, field=field)
        if raw[:1] != b"{":
            msg = f"record {index}, field '{field}': must be a JSON object"
            raise BadRequestError(msg, index=index, field=field)
        # Fewer brackets than the limit cannot nest deeper than it: only then decode.
        if raw.count(b"{") + raw.count(b"[") > MAX_DEPTH and _depth(raw) > MAX_DEPTH:
            msg = f"record {index}, field '{field}': nested deeper than {MAX_DEPTH} levels"
            raise BadRequestError(msg, index=index, field=field)
        if _NUL_ESCAPE in raw:
            # jsonb refuses \u0000: store U+FFFD instead, as for text.
            raw = msgspec.json.encode(_replace_nul(msgspec.json.decode(raw)))
        return raw.decode()


def storable(value: str) -> str:
    """``value`` as PostgreSQL text can hold it: NUL becomes U+FFFD."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def storable_or_none(value: str | None) -> str | None:
    return None if value is None else storable(value)
