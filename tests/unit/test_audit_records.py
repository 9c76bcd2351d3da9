"""The audit record's helpers and its wire rules."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

import msgspec
import pytest

from multidb.audit_records import AccessRecord, fingerprint, preview


def _record(**changes: object) -> AccessRecord:
    fields: dict[str, object] = {
        "event_id": uuid.uuid4().hex,
        "created_at": datetime.now(UTC),
        "request_id": None,
        "principal": "tester",
        "auth_method": "jwt",
        "method": "POST",
        "path": "/database/default/execute",
        "target_role": "default",
        "query_fingerprint": fingerprint("SELECT 1"),
        "query_preview": preview("SELECT 1"),
        "read_only": True,
        "outcome": "allowed",
        "status_code": 200,
        "row_count": 1,
        "duration_ms": 0.5,
        "error": None,
        "client_ip": "127.0.0.1",
    }
    fields.update(changes)
    return AccessRecord(**fields)  # type: ignore[arg-type]


def test_fingerprint_is_sha256_hex_of_the_whitespace_normalised_query() -> None:
    query = "  SELECT *\n\tFROM users   WHERE id = :id \n"
    expected = hashlib.sha256(b"SELECT * FROM users WHERE id = :id").hexdigest()
    assert fingerprint(query) == expected
    assert len(expected) == 64


def test_fingerprint_groups_layouts_and_separates_statements() -> None:
    assert fingerprint("SELECT 1") == fingerprint("SELECT\n      1  ")
    assert fingerprint("SELECT 1") != fingerprint("SELECT 2")
    assert fingerprint("SELECT 1") != fingerprint("select 1")  # case is kept
    assert fingerprint("SELECT 1 -- one") != fingerprint("SELECT 1")  # comments are kept
    # The query is not parsed: whitespace inside a literal is collapsed too.
    assert fingerprint("SELECT 'a  b'") == fingerprint("SELECT 'a b'")


def test_preview_normalises_and_keeps_a_short_query_whole() -> None:
    assert preview("SELECT\n  1") == "SELECT 1"
    assert preview("") == ""


def test_preview_cuts_a_long_query_to_the_limit_with_an_ellipsis() -> None:
    query = "SELECT " + ", ".join(f"column_{i}" for i in range(100))
    cut = preview(query, limit=50)
    assert len(cut) == 50
    assert cut.endswith("…")
    assert query.startswith(cut[:-1])
    assert len(preview(query)) == 200
    exact = "x" * 200
    assert preview(exact) == exact


def test_preview_refuses_a_limit_below_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        preview("SELECT 1", limit=0)


def test_records_round_trip_as_a_json_array() -> None:
    records = [_record(), _record(outcome="failed", error="42P01: no such table")]
    body = msgspec.json.encode(records)
    assert body.startswith(b"[")
    assert msgspec.json.decode(body, type=list[AccessRecord]) == records


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"surprise": 1}, "unknown field"),
        ({"event_id": "not-hex"}, "event_id"),
        ({"event_id": uuid.uuid4().hex.upper()}, "event_id"),
        ({"created_at": "2026-01-01T00:00:00"}, "created_at"),
        ({"status_code": "200"}, "status_code"),
    ],
)
def test_decoding_refuses_what_the_table_cannot_hold(
    change: dict[str, object], message: str
) -> None:
    raw = msgspec.to_builtins(_record())
    raw.update(change)
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.json.decode(msgspec.json.encode([raw]), type=list[AccessRecord])
