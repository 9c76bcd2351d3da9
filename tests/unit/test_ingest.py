"""Ingestion batches without a server: parsing (JSON array, NDJSON), errors that name the
record and the field, the limits and the timestamp window."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import pytest

from multidb.errors import (
    BadRequestError,
    MultiDBError,
    PayloadTooLargeError,
    SettingsError,
    UnsupportedMediaTypeError,
)
from multidb.ingest import IngestLimits, LogRecord, RecordChecks, TimeWindow, decode_batch
from multidb.ingest.body import NDJSON, BatchDecoder
from multidb.ingest.records import ActivityRecord, AnalyticsRecord, EventRecord
from multidb.plugins import get_roles
from multidb.settings import load_settings

LIMITS = IngestLimits(max_records=5, max_bytes=1 << 20, max_field_bytes=16)
LOGS: BatchDecoder[LogRecord] = BatchDecoder(LogRecord)
EVENTS: BatchDecoder[AnalyticsRecord] = BatchDecoder(AnalyticsRecord)
NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)


def log(**fields: Any) -> dict[str, Any]:
    record = {
        "timestamp": "2025-06-01T11:00:00Z",
        "level": "INFO",
        "logger": "app",
        "message": "hi",
    }
    return {**record, **fields}


def as_json(*records: Any) -> bytes:
    return msgspec.json.encode(list(records))


def as_ndjson(*records: Any) -> bytes:
    return b"\n".join(msgspec.json.encode(record) for record in records) + b"\n"


def refused(body: bytes, content_type: str | None = "application/json") -> MultiDBError:
    with pytest.raises(MultiDBError) as caught:
        decode_batch(body, content_type, LOGS, LIMITS)
    return caught.value


def test_a_json_array_and_ndjson_decode_to_the_same_records() -> None:
    records = [log(event_id="a"), log(event_id="b", error={"type": "E", "message": "boom"})]
    from_array = decode_batch(as_json(*records), "application/json; charset=utf-8", LOGS, LIMITS)
    from_lines = decode_batch(b"\n" + as_ndjson(*records) + b"\n\n", NDJSON, LOGS, LIMITS)
    assert from_array == from_lines
    assert [r.event_id for r in from_array] == ["a", "b"]
    assert from_array[1].error is not None
    assert from_array[1].error.type == "E"
    assert from_array[0].timestamp == dt.datetime(2025, 6, 1, 11, tzinfo=dt.UTC)
    # No Content-Type: a JSON array. Empty batches are fine (nothing to store).
    assert decode_batch(as_json(log()), None, LOGS, LIMITS)[0].message == "hi"
    assert decode_batch(b"[]", "application/json", LOGS, LIMITS) == []
    assert decode_batch(b"", NDJSON, LOGS, LIMITS) == []


@pytest.mark.parametrize(
    ("record", "field", "says"),
    [
        (log(colour="red"), "colour", "unknown field `colour`"),
        (log(level="LOUD"), "level", "one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        (log(message=3), "message", "Expected `str`, got `int`"),
        (
            {"timestamp": "2025-06-01T11:00:00Z", "level": "INFO", "logger": "a"},
            "message",
            "missing",
        ),
        (log(timestamp="2025-06-01T11:00:00"), "timestamp", "timezone"),
        (log(logger="x" * 256), "logger", "length <= 255"),
        (log(event_id="e" * 65), "event_id", "length <= 64"),
        (log(error={"message": "m"}), "error.type", "missing required field"),
        (log(error={"type": "E", "message": "m", "stack": "s"}), "error.stack", "unknown field"),
    ],
)
def test_a_bad_record_is_a_400_naming_its_index_and_field(
    record: dict[str, Any], field: str, says: str
) -> None:
    for body, kind in (
        (as_json(log(), log(), record), "application/json"),
        (as_ndjson(log(), log(), record), NDJSON),
    ):
        error = refused(body, kind)
        assert isinstance(error, BadRequestError)
        assert error.extra == {"index": 2, "field": field}
        assert error.detail.startswith(f"record 2, field '{field}': ")
        assert says in error.detail


def test_malformed_bodies_are_400s_that_say_what_is_wrong() -> None:
    assert "not valid JSON" in refused(b"[{").detail
    assert "JSON array of records" in refused(b'{"level": "INFO"}').detail
    assert "empty" in refused(b" ").detail
    error = refused(msgspec.json.encode(log()) + b"\n\n{", NDJSON)
    assert "record 1 (line 3) is not valid JSON" in error.detail
    assert isinstance(refused(b"[1]"), BadRequestError)


def test_other_content_types_are_415() -> None:
    error = refused(as_json(log()), "application/x-www-form-urlencoded")
    assert isinstance(error, UnsupportedMediaTypeError)
    assert error.status_code == 415
    assert "application/x-ndjson" in error.detail


def test_too_many_records_is_a_413_naming_the_setting() -> None:
    for body, kind in (
        (as_json(*[log()] * 6), "application/json"),
        (as_ndjson(*[log()] * 6), NDJSON),
    ):
        error = refused(body, kind)
        assert isinstance(error, PayloadTooLargeError)
        assert "6 records, more than 5 (MULTI_DB_INGEST_MAX_RECORDS)" in error.detail
    # A bad record past the limit: the batch is too long, whatever it holds.
    error = refused(as_json(*[log()] * 7, log(level=1)))
    assert isinstance(error, PayloadTooLargeError)


def test_analytics_records_are_told_apart_by_their_type() -> None:
    body = as_ndjson(
        {"type": "event", "name": "upload", "occurred_at": "2025-06-01T11:00:00+02:00"},
        {
            "type": "activity",
            "user_id": 7,
            "activity": "login",
            "created_at": "2025-06-01T11:00:00Z",
        },
    )
    event, activity = decode_batch(body, NDJSON, EVENTS, LIMITS)
    assert isinstance(event, EventRecord)
    assert event.occurred_at == dt.datetime(2025, 6, 1, 9, tzinfo=dt.UTC)
    assert isinstance(activity, ActivityRecord)
    assert activity.user_id == 7
    with pytest.raises(BadRequestError) as caught:
        decode_batch(as_json({"type": "click", "name": "x"}), None, EVENTS, LIMITS)
    assert caught.value.extra == {"index": 0, "field": "type"}
    assert "'event' or 'activity'" in caught.value.detail
    with pytest.raises(BadRequestError) as caught:
        decode_batch(
            as_json({"type": "event", "name": "x", "user_id": 2**63}), None, EVENTS, LIMITS
        )
    assert caught.value.extra == {"index": 0, "field": "user_id"}


def test_the_window_refuses_old_and_future_timestamps_naming_the_record() -> None:
    window = TimeWindow.around(NOW, 30, "MULTI_DB_LOG_RETENTION_DAYS")
    window.check(NOW - dt.timedelta(days=30), 0, "timestamp")
    window.check(NOW + dt.timedelta(days=1), 0, "timestamp")
    with pytest.raises(BadRequestError) as caught:
        window.check(NOW - dt.timedelta(days=31), 4, "timestamp")
    assert caught.value.extra == {"index": 4, "field": "timestamp"}
    assert "older than the 30 days kept (MULTI_DB_LOG_RETENTION_DAYS)" in caught.value.detail
    with pytest.raises(BadRequestError, match=r"record 1, field 'occurred_at': .* future"):
        window.check(NOW + dt.timedelta(days=1, seconds=1), 1, "occurred_at")


def test_long_texts_and_json_objects_are_bounded_in_bytes_and_made_storable() -> None:
    checks = RecordChecks(LIMITS, TimeWindow.around(NOW, 30))
    assert checks.long_text("x" * 16, 0, "message") == "x" * 16
    assert checks.long_text("a\x00b", 0, "message") == "a\ufffdb"
    with pytest.raises(BadRequestError) as caught:
        checks.long_text("é" * 9, 3, "message")  # 9 characters, 18 bytes
    assert caught.value.extra == {"index": 3, "field": "message"}
    assert "longer than 16 bytes (MULTI_DB_INGEST_MAX_FIELD_BYTES)" in caught.value.detail

    assert checks.json_object(msgspec.Raw(b'{"a": 1}'), 0, "context") == '{"a": 1}'
    assert checks.json_object(msgspec.UNSET, 0, "context") == "{}"
    nul = msgspec.Raw(b'{"a\\u0000":1}')  # jsonb refuses \u0000
    assert msgspec.json.decode(checks.json_object(nul, 0, "c")) == {"a\ufffd": 1}
    for other in (b"[1]", b"null", b'"{}"'):
        with pytest.raises(BadRequestError, match="record 1, field 'context': must be a JSON obj"):
            checks.json_object(msgspec.Raw(other), 1, "context")
    with pytest.raises(BadRequestError, match="record 2, field 'properties': longer than 16"):
        checks.json_object(msgspec.Raw(b'{"a": "' + b"x" * 20 + b'"}'), 2, "properties")


def test_the_limits_are_settings_with_their_defaults() -> None:
    defaults = IngestLimits.from_settings(load_settings({}, get_roles()))
    assert defaults == IngestLimits(max_records=10_000, max_bytes=8 << 20, max_field_bytes=65_536)
    env = {"MULTI_DB_INGEST_MAX_RECORDS": "500", "MULTI_DB_INGEST_MAX_BYTES": "1024"}
    assert IngestLimits.from_settings(load_settings(env, get_roles())).max_records == 500
    with pytest.raises(SettingsError, match="MULTI_DB_INGEST_MAX_FIELD_BYTES"):
        load_settings({"MULTI_DB_INGEST_MAX_FIELD_BYTES": "0"}, get_roles())
