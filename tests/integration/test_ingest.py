"""The ingestion APIs: ``POST /logs`` (logging) and ``POST /events`` (analytics) on the real
service apps, and through a real gateway (processes), against real PostgreSQL.

Each test uses its own logger or event names, and removes its rows at the end.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from multidb.partitions import partition_name
from multidb.settings import Settings, load_settings
from multidb_gateway.app import create_gateway_app
from multidb_gateway.settings import GatewaySettings
from tests.conftest import API_KEY, JWT_SECRET, bearer
from tests.fleet import ProcessFleet

INGEST = bearer("ingest:write")
NOW = dt.datetime.now(dt.UTC)
NDJSON = {"content-type": "application/x-ndjson"}


def stamp(minutes_ago: float = 1.0) -> str:
    return (NOW - dt.timedelta(minutes=minutes_ago)).isoformat()


def as_ndjson(records: list[dict[str, Any]]) -> bytes:
    return b"".join(msgspec.json.encode(record) + b"\n" for record in records)


@pytest.fixture
def tag() -> str:
    """This test's own logger and event name prefix."""
    return f"ingest-test-{uuid.uuid4().hex[:10]}"


async def _connect(settings: Settings, role: str) -> asyncpg.Connection:
    return await settings.databases[role].connect()


@pytest.fixture
async def logs_db(settings: Settings, tag: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await _connect(settings, "logging")
    try:
        yield conn
    finally:
        for table in ("application_logs", "error_logs"):
            await conn.execute(f"DELETE FROM {table} WHERE logger LIKE $1", f"{tag}%")
        await conn.close()


@pytest.fixture
async def events_db(settings: Settings, tag: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await _connect(settings, "analytics")
    try:
        yield conn
    finally:
        for table, column in (
            ("analytics_events", "name"),
            ("analytics_event_rollups", "name"),
            ("user_activities", "activity"),
        ):
            await conn.execute(f"DELETE FROM {table} WHERE {column} LIKE $1", f"{tag}%")
        await conn.close()


def log(tag: str, n: int, **fields: Any) -> dict[str, Any]:
    record = {
        "event_id": f"{tag}-{n}",
        "timestamp": stamp(n),
        "level": "INFO",
        "logger": f"{tag}.app",
        "message": f"message {n}",
    }
    return {**record, **fields}


async def _logs(conn: asyncpg.Connection, tag: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT event_id, created_at, level, logger, message, request_id, context "
        "FROM application_logs WHERE logger LIKE $1 ORDER BY id",
        f"{tag}%",
    )
    return [dict(row) for row in rows]


async def _errors(conn: asyncpg.Connection, tag: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT event_id, created_at, level, logger, error_type, message, stack_trace, "
        "request_id, resolved FROM error_logs WHERE logger LIKE $1 ORDER BY id",
        f"{tag}%",
    )
    return [dict(row) for row in rows]


# ---- the logging service -------------------------------------------------------------------


async def test_a_log_batch_is_stored_once_however_often_it_is_sent(
    service_client: Any, logs_db: asyncpg.Connection, tag: str
) -> None:
    error = {"type": "ValueError", "message": "bad value", "stack_trace": "Traceback ...\n"}
    batch = [
        log(tag, 1, request_id="req-1", context={"user": 7, "nested": {"a": [1, 2]}}),
        log(tag, 2, level="ERROR", message="it broke", error=error),
        log(tag, 3, message="NUL \x00 inside"),
    ]
    async with service_client("logging") as client:
        first = await client.post("/logs", json=batch, headers=INGEST)
        assert first.status_code == 200, first.text
        assert first.json() == {"received": 3, "inserted": 3}
        again = await client.post("/logs", json=batch, headers=INGEST)
        assert again.json() == {"received": 3, "inserted": 0}
        # A record twice in one batch, beside a new one: the new one alone is stored.
        mixed = [log(tag, 4), log(tag, 4), log(tag, 1)]
        assert (await client.post("/logs", json=mixed, headers=INGEST)).json() == {
            "received": 3,
            "inserted": 1,
        }

    stored = await _logs(logs_db, tag)
    assert [row["event_id"] for row in stored] == [f"{tag}-{n}" for n in (1, 2, 3, 4)]
    first_row = stored[0]
    assert first_row["created_at"] == dt.datetime.fromisoformat(batch[0]["timestamp"])
    assert (first_row["level"], first_row["request_id"]) == ("INFO", "req-1")
    assert msgspec.json.decode(first_row["context"]) == {"user": 7, "nested": {"a": [1, 2]}}
    assert msgspec.json.decode(stored[1]["context"]) == {}
    assert stored[2]["message"] == "NUL \ufffd inside"

    [error_row] = await _errors(logs_db, tag)
    assert error_row == {
        "event_id": f"{tag}-2",
        "created_at": stored[1]["created_at"],
        "level": "ERROR",
        "logger": f"{tag}.app",
        "error_type": "ValueError",
        "message": "bad value",
        "stack_trace": "Traceback ...\n",
        "request_id": None,
        "resolved": False,
    }


async def test_ndjson_and_a_json_array_store_the_same_rows(
    service_client: Any, logs_db: asyncpg.Connection, tag: str
) -> None:
    records = [log(tag, n, logger=f"{tag}.array") for n in (1, 2)]
    lines = [log(tag, n, logger=f"{tag}.lines", event_id=f"{tag}-l{n}") for n in (1, 2)]
    async with service_client("logging") as client:
        array = await client.post("/logs", json=records, headers=INGEST)
        body = b"\n" + as_ndjson(lines) + b"\n"
        ndjson = await client.post("/logs", content=body, headers={**INGEST, **NDJSON})
        empty = await client.post("/logs", content=b"", headers={**INGEST, **NDJSON})
    assert array.json() == ndjson.json() == {"received": 2, "inserted": 2}
    assert empty.json() == {"received": 0, "inserted": 0}
    stored = await _logs(logs_db, tag)
    by_logger = {
        name: [(r["message"], r["created_at"]) for r in stored if r["logger"] == name]
        for name in (f"{tag}.array", f"{tag}.lines")
    }
    assert by_logger[f"{tag}.array"] == by_logger[f"{tag}.lines"]
    assert len(by_logger[f"{tag}.array"]) == 2


@pytest.mark.parametrize(
    "case",
    [
        ({"colour": "red"}, "colour", "unknown field"),
        ({"level": "LOUD"}, "level", "one of DEBUG, INFO"),
        ({"message": 12}, "message", "Expected `str`, got `int`"),
        ({"logger": "x" * 256}, "logger", "length <= 255"),
        ({"timestamp": "2025-01-01T10:00:00"}, "timestamp", "timezone"),
        ({"timestamp": "2001-01-01T10:00:00Z"}, "timestamp", "older than the 30 days kept"),
        ({"timestamp": (NOW + dt.timedelta(days=2)).isoformat()}, "timestamp", "future"),
        ({"context": [1]}, "context", "must be a JSON object"),
        ({"error": {"type": "E"}}, "error.message", "missing required field"),
    ],
)
async def test_one_bad_record_refuses_the_batch_naming_its_index_and_field(
    service_client: Any, logs_db: asyncpg.Connection, tag: str, case: tuple[Any, str, str]
) -> None:
    change, field, says = case
    batch = [log(tag, 1), log(tag, 2), {**log(tag, 3), **change}, log(tag, 4)]
    async with service_client("logging") as client:
        for body, kind in (
            (msgspec.json.encode(batch), "application/json"),
            (as_ndjson(batch), "application/x-ndjson"),
        ):
            answer = await client.post(
                "/logs", content=body, headers={**INGEST, "content-type": kind}
            )
            assert answer.status_code == 400, answer.text
            assert answer.headers["content-type"] == "application/problem+json"
            problem = answer.json()
            assert (problem["index"], problem["field"]) == (2, field)
            assert problem["detail"].startswith(f"record 2, field '{field}': ")
            assert says in problem["detail"]
    assert await _logs(logs_db, tag) == []
    assert await _errors(logs_db, tag) == []


async def test_limits_answer_413_or_400_with_the_setting_named(
    service_client: Any, settings: Settings, logs_db: asyncpg.Connection, tag: str
) -> None:
    limited = msgspec.structs.replace(
        settings, ingest_max_records=3, ingest_max_bytes=4096, ingest_max_field_bytes=100
    )
    async with service_client("logging", limited) as client:
        many = await client.post("/logs", json=[log(tag, n) for n in range(4)], headers=INGEST)
        assert many.status_code == 413, many.text
        assert "4 records, more than 3 (MULTI_DB_INGEST_MAX_RECORDS)" in many.json()["detail"]

        big = [log(tag, 1, context={"padding": "x" * 5000})]
        large = await client.post("/logs", json=big, headers=INGEST)
        assert large.status_code == 413, large.text
        assert "MULTI_DB_INGEST_MAX_BYTES" in large.json()["detail"]

        long_message = [log(tag, 1), log(tag, 2, message="é" * 51)]  # 102 bytes
        answer = await client.post("/logs", json=long_message, headers=INGEST)
        assert answer.status_code == 400, answer.text
        assert (answer.json()["index"], answer.json()["field"]) == (1, "message")
        assert "longer than 100 bytes (MULTI_DB_INGEST_MAX_FIELD_BYTES)" in answer.json()["detail"]
        trace = [log(tag, 1, error={"type": "E", "message": "m", "stack_trace": "s" * 101})]
        answer = await client.post("/logs", json=trace, headers=INGEST)
        assert answer.json()["field"] == "error.stack_trace"

        wrong = await client.post(
            "/logs", content=b"a=1", headers={**INGEST, "content-type": "text/plain"}
        )
        assert wrong.status_code == 415, wrong.text
    assert await _logs(logs_db, tag) == []


async def test_a_missing_daily_partition_is_created_for_the_batch(
    service_client: Any, logs_db: asyncpg.Connection, tag: str
) -> None:
    tomorrow = NOW + dt.timedelta(hours=23)
    day = tomorrow.date()
    for table in ("application_logs", "error_logs"):
        await logs_db.execute(f'DROP TABLE IF EXISTS "{partition_name(table, day)}"')
    record = log(tag, 1, timestamp=tomorrow.isoformat(), error={"type": "E", "message": "m"})
    async with service_client("logging") as client:
        answer = await client.post("/logs", json=[record], headers=INGEST)
    assert answer.json() == {"received": 1, "inserted": 1}, answer.text
    assert len(await _errors(logs_db, tag)) == 1


async def test_ingest_write_is_the_scope_and_only_for_its_role(
    service_client: Any, logs_db: asyncpg.Connection, tag: str
) -> None:
    async with service_client("logging") as client:
        for scopes in (("db:read",), ("db:write", "db:admin"), ("ingest:write:analytics",)):
            refused = await client.post("/logs", json=[log(tag, 1)], headers=bearer(*scopes))
            assert refused.status_code == 403, (scopes, refused.text)
            assert "'ingest:write' or 'ingest:write:logging'" in refused.json()["detail"]
        anonymous = await client.post("/logs", json=[log(tag, 1)])
        assert anonymous.status_code == 401
        allowed = await client.post(
            "/logs", json=[log(tag, 1)], headers=bearer("ingest:write:logging")
        )
        assert allowed.json() == {"received": 1, "inserted": 1}


# ---- the analytics service -----------------------------------------------------------------


def event(tag: str, n: int, name: str = "upload", at: dt.datetime | None = None) -> dict[str, Any]:
    return {
        "type": "event",
        "event_id": f"{tag}-e{n}",
        "name": f"{tag}-{name}",
        "occurred_at": (at or NOW - dt.timedelta(minutes=n)).isoformat(),
        "user_id": n,
        "properties": {"n": n},
    }


def activity(tag: str, n: int) -> dict[str, Any]:
    return {
        "type": "activity",
        "event_id": f"{tag}-a{n}",
        "user_id": 40 + n,
        "activity": f"{tag}-login",
        "resource": "/session",
        "ip_address": "2001:db8::1",
        "user_agent": "pytest",
        "created_at": stamp(n),
        "details": {"ok": True},
    }


async def _rollups(conn: asyncpg.Connection, tag: str) -> dict[tuple[str, dt.datetime], int]:
    rows = await conn.fetch(
        "SELECT name, bucket, events FROM analytics_event_rollups WHERE name LIKE $1", f"{tag}%"
    )
    return {(row["name"], row["bucket"]): row["events"] for row in rows}


async def test_events_and_activities_are_stored_once_and_rollups_count_inserted_rows(
    service_client: Any, events_db: asyncpg.Connection, tag: str
) -> None:
    hour = (NOW - dt.timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    earlier = hour - dt.timedelta(hours=1)
    batch = [
        event(tag, 1, at=hour + dt.timedelta(minutes=5)),
        activity(tag, 1),
        event(tag, 2, at=hour + dt.timedelta(minutes=59, seconds=59)),
        event(tag, 3, at=earlier + dt.timedelta(minutes=30)),
        event(tag, 4, name="ocr", at=hour),
        activity(tag, 2),
    ]
    expected = {
        (f"{tag}-upload", hour): 2,
        (f"{tag}-upload", earlier): 1,
        (f"{tag}-ocr", hour): 1,
    }
    async with service_client("analytics") as client:
        first = await client.post("/events", json=batch, headers=INGEST)
        assert first.status_code == 200, first.text
        assert first.json() == {"received": 6, "inserted": 6}
        assert await _rollups(events_db, tag) == expected

        again = await client.post("/events", content=as_ndjson(batch), headers={**INGEST, **NDJSON})
        assert again.json() == {"received": 6, "inserted": 0}
        assert await _rollups(events_db, tag) == expected

        # One known event, one new one in the same hour, one without an id (always new).
        plus = [batch[0], event(tag, 5, at=hour + dt.timedelta(minutes=1))]
        anonymous = {**event(tag, 6, at=hour), "event_id": None}
        answer = await client.post("/events", json=[*plus, anonymous], headers=INGEST)
        assert answer.json() == {"received": 3, "inserted": 2}
        expected[(f"{tag}-upload", hour)] = 4
        assert await _rollups(events_db, tag) == expected

    events = await events_db.fetch(
        "SELECT event_id, user_id, properties FROM analytics_events WHERE name LIKE $1 ORDER BY id",
        f"{tag}%",
    )
    assert len(events) == 6
    assert msgspec.json.decode(events[0]["properties"]) == {"n": 1}
    activities = await events_db.fetch(
        "SELECT event_id, user_id, ip_address, details FROM user_activities "
        "WHERE activity LIKE $1 ORDER BY id",
        f"{tag}%",
    )
    assert [(r["event_id"], r["user_id"], r["ip_address"]) for r in activities] == [
        (f"{tag}-a1", 41, "2001:db8::1"),
        (f"{tag}-a2", 42, "2001:db8::1"),
    ]


async def test_the_same_batch_sent_at_once_by_several_senders_is_counted_once(
    service_client: Any, events_db: asyncpg.Connection, tag: str
) -> None:
    hour = (NOW - dt.timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    batch = [event(tag, n, at=hour + dt.timedelta(seconds=n)) for n in range(200)]
    # Two orders: batches holding the same ids in opposite orders may deadlock, and the one
    # that loses is written again.
    orders = [batch, batch[::-1], batch, batch[::-1]]
    async with service_client("analytics") as client:
        answers = await asyncio.gather(
            *(client.post("/events", json=order, headers=INGEST) for order in orders)
        )
    assert [answer.status_code for answer in answers] == [200] * 4, [a.text for a in answers]
    assert sum(answer.json()["inserted"] for answer in answers) == 200
    assert await _rollups(events_db, tag) == {(f"{tag}-upload", hour): 200}


async def test_a_bad_analytics_record_refuses_the_batch_and_counts_nothing(
    service_client: Any, events_db: asyncpg.Connection, tag: str
) -> None:
    cases = [
        ({**activity(tag, 1), "user_id": "seven"}, "user_id", "Expected `int`"),
        ({**event(tag, 1), "type": "click"}, "type", "'event' or 'activity'"),
        ({**event(tag, 1), "name": "n" * 101}, "name", "length <= 100"),
        ({**activity(tag, 1), "ip_address": "1" * 46}, "ip_address", "length <= 45"),
        ({**event(tag, 1), "occurred_at": "2020-01-01T00:00:00+00:00"}, "occurred_at", "90 days"),
        ({**activity(tag, 1), "created_at": "2025-01-01T00:00:00"}, "created_at", "timezone"),
    ]
    async with service_client("analytics") as client:
        for bad, field, says in cases:
            batch = [event(tag, 7), activity(tag, 8), bad]
            answer = await client.post("/events", json=batch, headers=INGEST)
            assert answer.status_code == 400, answer.text
            problem = answer.json()
            assert (problem["index"], problem["field"]) == (2, field), problem
            assert says in problem["detail"]
        refused = await client.post(
            "/events", json=[event(tag, 1)], headers=bearer("ingest:write:logging", "db:read")
        )
        assert refused.status_code == 403
    assert await _rollups(events_db, tag) == {}
    assert (
        await events_db.fetchval(
            "SELECT count(*) FROM user_activities WHERE activity LIKE $1", f"{tag}%"
        )
        == 0
    )


# ---- through the gateway (real processes) --------------------------------------------------

MAX_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def fleet(
    database_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProcessFleet]:
    logs = tmp_path_factory.mktemp("ingest-logs")
    extra = {"MULTI_DB_INGEST_MAX_BYTES": str(MAX_BYTES)}
    with ProcessFleet(database_env, logs, **extra).running() as running:
        yield running


@pytest.fixture
def gateway(fleet: ProcessFleet) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fleet.gateway, timeout=30) as http:
        yield http


def test_batches_reach_both_roles_through_the_gateway_with_the_callers_scope(
    gateway: httpx.Client, logs_db: asyncpg.Connection, events_db: asyncpg.Connection, tag: str
) -> None:
    logs = [log(tag, 1), log(tag, 2, level="CRITICAL", error={"type": "E", "message": "m"})]
    only_logs = bearer("ingest:write:logging")
    first = gateway.post("/database/logging/logs", json=logs, headers=only_logs)
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "application/json"
    assert first.json() == {"received": 2, "inserted": 2}
    again = gateway.post(
        "/database/logging/logs", content=as_ndjson(logs), headers={**only_logs, **NDJSON}
    )
    assert again.json() == {"received": 2, "inserted": 0}

    events = [event(tag, 1), activity(tag, 1)]
    refused = gateway.post("/database/analytics/events", json=events, headers=only_logs)
    assert refused.status_code == 403, refused.text
    assert "'ingest:write' or 'ingest:write:analytics'" in refused.json()["detail"]
    for reader in (bearer("db:read"), bearer("db:read", "db:execute", "db:write")):
        for path, body in (
            ("/database/logging/logs", logs),
            ("/database/analytics/events", events),
        ):
            answer = gateway.post(path, json=body, headers=reader)
            assert answer.status_code == 403, answer.text
    stored = gateway.post("/database/analytics/events", json=events, headers=INGEST)
    assert stored.json() == {"received": 2, "inserted": 2}, stored.text
    also = gateway.post("/database/analytics/events", json=events, headers={"X-API-Key": API_KEY})
    assert also.json() == {"received": 2, "inserted": 0}


def test_the_gateway_passes_on_the_services_refusals_and_bounds_the_body(
    gateway: httpx.Client, fleet: ProcessFleet, logs_db: asyncpg.Connection, tag: str
) -> None:
    bad = [log(tag, 1), {**log(tag, 2), "level": 3}]
    answer = gateway.post("/database/logging/logs", json=bad, headers=INGEST)
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert (answer.json()["index"], answer.json()["field"]) == (1, "level")

    big = [log(tag, n, message="x" * 1000) for n in range(70)]
    too_big = gateway.post("/database/logging/logs", json=big, headers=INGEST)
    assert too_big.status_code == 413, too_big.text
    assert f"larger than {MAX_BYTES} bytes (MULTI_DB_INGEST_MAX_BYTES)" in too_big.json()["detail"]

    # Without a Content-Length (chunked): the body is cut off as it arrives.
    def chunks() -> Iterator[bytes]:
        for _ in range(MAX_BYTES // 1000 + 2):
            yield b" " * 1000

    streamed = gateway.post(
        "/database/logging/logs", content=chunks(), headers={**INGEST, **NDJSON}
    )
    assert streamed.status_code == 413, streamed.text
    # The service bounds it too, whoever sends it.
    service = f"{fleet.url('logging')}/logs"
    direct = httpx.post(service, content=chunks(), headers={**INGEST, **NDJSON}, timeout=30)
    assert direct.status_code == 413, direct.text

    wrong = gateway.post(
        "/database/logging/logs", content=b"x", headers={**INGEST, "content-type": "text/csv"}
    )
    assert wrong.status_code == 415, wrong.text
    assert gateway.post("/database/logging/logs", json=[], headers=INGEST).json() == {
        "received": 0,
        "inserted": 0,
    }


async def test_a_role_that_is_not_configured_is_a_404(settings: Settings) -> None:
    env = {"API_KEYS": API_KEY, "JWT_SECRET": JWT_SECRET, "MULTI_DB_ENV_FILE": "/dev/null"}
    core = load_settings(env, {})
    app = create_gateway_app(GatewaySettings(core=core, services={}))
    async with AsyncTestClient(app=app) as client:
        answer = await client.post("/database/logging/logs", json=[], headers=INGEST)
    assert answer.status_code == 404, answer.text
    assert "logging" in answer.json()["detail"]


def test_ingest_paths_are_in_the_gateway_document(gateway: httpx.Client, tmp_path: Path) -> None:
    document = gateway.get("/schema/openapi.json").json()
    for path in ("/database/logging/logs", "/database/analytics/events"):
        operation = document["paths"][path]["post"]
        assert set(operation["responses"]) >= {"200", "400", "403", "404", "413", "415"}
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        assert body["type"] == "array"
