"""Queries over the logging and analytics roles' own data: ``GET /logs`` and
``GET /events/rollup``, on the services and through the gateway.

Real processes (the four services and the gateway), real PostgreSQL. Rows are inserted
with SQL over several days (so several daily partitions), each test under its own logger
or event name so rows other tests leave behind never count, and removed afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from multidb.settings import DatabaseSettings, Settings
from multidb_logging.log_search import MAX_LIMIT, build_sql, parse_query
from tests.conftest import ADMIN, bearer
from tests.fleet import ProcessFleet

LOGGER_PREFIX = "test.logq."
EVENT_PREFIX = "test.rollup."
# Days in the past, inside the retention window, where no other test writes.
TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
BASE = TODAY - timedelta(days=6)


def run(database: DatabaseSettings, sql: str, *args: object) -> list[asyncpg.Record]:
    async def go() -> list[asyncpg.Record]:
        conn = await database.connect()
        try:
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
            return rows
        finally:
            await conn.close()

    return asyncio.run(go())


def insert_logs(database: DatabaseSettings, rows: list[dict[str, Any]]) -> list[int]:
    """Insert application log rows; their ids, in the order given."""

    async def go() -> list[int]:
        conn = await database.connect()
        try:
            ids = []
            for row in rows:
                ids.append(
                    await conn.fetchval(
                        "INSERT INTO application_logs "
                        "(level, logger, message, context, request_id, created_at) "
                        "VALUES ($1, $2, $3, $4::jsonb, $5, $6) RETURNING id",
                        row.get("level", "INFO"),
                        row["logger"],
                        row.get("message", "hello"),
                        row.get("context", "{}"),
                        row.get("request_id"),
                        row["created_at"],
                    )
                )
            return ids
        finally:
            await conn.close()

    return asyncio.run(go())


@pytest.fixture(scope="module")
def logging_db(settings: Settings) -> Iterator[DatabaseSettings]:
    # The days used here lie in [today - retention, today]: their partitions exist.
    database = settings.databases["logging"]
    yield database
    run(database, "DELETE FROM application_logs WHERE logger LIKE $1", LOGGER_PREFIX + "%")


@pytest.fixture(scope="module")
def analytics_db(settings: Settings) -> Iterator[DatabaseSettings]:
    database = settings.databases["analytics"]
    yield database
    run(database, "DELETE FROM analytics_event_rollups WHERE name LIKE $1", EVENT_PREFIX + "%")


@pytest.fixture(scope="module")
def fleet(
    database_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProcessFleet]:
    logs = tmp_path_factory.mktemp("log-queries")
    with ProcessFleet(database_env, logs).running() as running:
        yield running


@pytest.fixture(scope="module")
def logging_service(fleet: ProcessFleet) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fleet.url("logging"), timeout=10, headers=ADMIN) as http:
        yield http


@pytest.fixture(scope="module")
def analytics_service(fleet: ProcessFleet) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fleet.url("analytics"), timeout=10, headers=ADMIN) as http:
        yield http


@pytest.fixture(scope="module")
def gateway(fleet: ProcessFleet) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fleet.gateway, timeout=10) as http:
        yield http


def a_logger() -> str:
    return f"{LOGGER_PREFIX}{uuid.uuid4().hex[:12]}"


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


WINDOW = {"since": iso(BASE), "until": iso(BASE + timedelta(days=5))}


def get_logs(client: httpx.Client, path: str = "/logs", **params: Any) -> dict[str, Any]:
    answer = client.get(path, params={**WINDOW, **params})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_filters_level_minimum_logger_request_id_and_window(
    logging_db: DatabaseSettings, logging_service: httpx.Client
) -> None:
    logger, other = a_logger(), a_logger()
    levels = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
    rows = [
        {
            "logger": logger,
            "level": level,
            "created_at": BASE + timedelta(days=day, hours=i),
            "request_id": f"req-{day}",
            "message": f"{level} on day {day}",
            "context": f'{{"n": {day * 10 + i}}}',
        }
        for day in range(4)
        for i, level in enumerate(levels)
    ]
    ids = insert_logs(logging_db, [*rows, {"logger": other, "created_at": BASE}])
    by_id = dict(zip(ids, rows, strict=False))

    every = get_logs(logging_service, logger=logger)
    assert every["next_cursor"] is None
    assert len(every["logs"]) == 20
    times = [(entry["created_at"], entry["id"]) for entry in every["logs"]]
    assert times == sorted(times, reverse=True)
    first = every["logs"][0]
    assert set(first) == {
        "id", "created_at", "level", "logger", "message", "context", "request_id", "event_id",
    }  # fmt: skip
    assert first["context"] == {"n": 34}
    assert first["message"] == "CRITICAL on day 3"
    assert by_id[first["id"]]["level"] == "CRITICAL"

    warning = get_logs(logging_service, logger=logger, level="warning")["logs"]
    assert sorted({entry["level"] for entry in warning}) == ["CRITICAL", "ERROR", "WARNING"]
    assert len(warning) == 12
    assert [e["created_at"] for e in warning] == sorted([e["created_at"] for e in warning])[::-1]
    assert len(get_logs(logging_service, logger=logger, level="CRITICAL")["logs"]) == 4
    assert len(get_logs(logging_service, logger=logger, level="DEBUG")["logs"]) == 20

    day2 = get_logs(logging_service, logger=logger, request_id="req-2")["logs"]
    assert {entry["message"] for entry in day2} == {f"{level} on day 2" for level in levels}
    window = get_logs(
        logging_service,
        logger=logger,
        since=iso(BASE + timedelta(days=1)),
        until=iso(BASE + timedelta(days=2, hours=2)),
    )["logs"]
    assert {entry["message"] for entry in window} == {
        *(f"{level} on day 1" for level in levels),
        "DEBUG on day 2",
        "INFO on day 2",
    }
    # The default window is the last 24 hours: these rows are older.
    assert logging_service.get("/logs", params={"logger": logger}).json()["logs"] == []


def test_q_is_a_case_insensitive_substring_with_percent_and_underscore_literal(
    logging_db: DatabaseSettings, logging_service: httpx.Client
) -> None:
    logger = a_logger()
    token = uuid.uuid4().hex[:8]
    messages = [
        f"{token} Disk 100% FULL_now",
        f"{token} disk 100x fullXnow",  # what % and _ would match as wildcards
        f"{token} path C:\\temp\\x",
        "unrelated",
    ]
    insert_logs(
        logging_db,
        [
            {"logger": logger, "message": text, "created_at": BASE + timedelta(hours=i)}
            for i, text in enumerate(messages)
        ],
    )

    def found(q: str) -> list[str]:
        return [e["message"] for e in get_logs(logging_service, logger=logger, q=q)["logs"]]

    assert found("DISK 100% full_NOW") == [messages[0]]
    assert found("100%") == [messages[0]]
    assert found("_") == [messages[0]]
    assert found("\\temp\\") == [messages[2]]
    assert found("%") == [messages[0]]
    assert sorted(found(token)) == sorted(messages[:3])
    assert found("nowhere to be found") == []


def test_keyset_pages_cover_every_row_once_in_order_while_rows_arrive(
    logging_db: DatabaseSettings, logging_service: httpx.Client
) -> None:
    logger = a_logger()
    # Five rows share each timestamp: the id breaks the tie.
    rows: list[dict[str, Any]] = [
        {"logger": logger, "created_at": BASE + timedelta(hours=7 * (i // 5)), "message": "old"}
        for i in range(53)
    ]
    original = insert_logs(logging_db, rows)
    newest = max(row["created_at"] for row in rows)

    seen: list[tuple[str, int]] = []
    above: list[int] = []
    below: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"logger": logger, "limit": 7, "since": iso(BASE)}
        if cursor is not None:
            params["cursor"] = cursor
        # No until: the window ends now, so rows arriving meanwhile are inside it.
        page = logging_service.get("/logs", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        seen += [(entry["created_at"], entry["id"]) for entry in body["logs"]]
        # Rows arrive between pages: newer ones and one at the newest time paged (above
        # the cursor: never shown), and an old one (below it: shown in its place).
        late_now, late_tie, late_old = insert_logs(
            logging_db,
            [
                {"logger": logger, "created_at": datetime.now(UTC), "message": "late"},
                {"logger": logger, "created_at": newest, "message": "late"},
                {"logger": logger, "created_at": BASE + timedelta(minutes=1), "message": "late"},
            ],
        )
        above += [late_now, late_tie]
        below.append(late_old)
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert len(body["logs"]) == 7
    ids = [row_id for _, row_id in seen]
    assert len(ids) == len(set(ids)), "a row was shown twice"
    assert seen == sorted(seen, reverse=True), "pages out of order"
    assert set(original) <= set(ids), "a row was never shown"
    assert not set(above) & set(ids), "a row above the cursor was shown"
    assert set(ids) - set(original) <= set(below)
    assert len(ids) > len(original)  # old rows that arrived early enough were shown


def test_a_page_stops_at_its_byte_budget_and_goes_on_from_there(
    logging_db: DatabaseSettings, logging_service: httpx.Client
) -> None:
    logger = a_logger()
    big = "x" * (1024 * 1024)
    ids = insert_logs(
        logging_db,
        [
            {"logger": logger, "message": big, "created_at": BASE + timedelta(minutes=i)}
            for i in range(3)
        ],
    )
    first = get_logs(logging_service, logger=logger, limit=10)
    assert [entry["id"] for entry in first["logs"]] == [ids[2], ids[1]]
    assert first["next_cursor"] is not None
    second = get_logs(logging_service, logger=logger, limit=10, cursor=first["next_cursor"])
    assert [entry["id"] for entry in second["logs"]] == [ids[0]]
    assert second["next_cursor"] is None


def _cursor_of(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"cursor": "not-a-cursor"}, "not a cursor this service gave out"),
        ({"cursor": _cursor_of('["2026-01-01T00:00:00", 5]')}, "not a cursor"),
        ({"cursor": _cursor_of('{"created_at": 1}')}, "not a cursor"),
        ({"cursor": _cursor_of('["2026-01-01T00:00:00Z", -1]')}, "not a cursor"),
        ({"cursor": "A" * 300}, "at most 200 characters"),
        ({"since": "yesterday"}, "timestamp (like 2026-11-29T04:00:00Z)"),
        ({"until": "2026-13-01T00:00:00Z"}, "timestamp (like"),
        ({"since": "0001-01-01T00:00:00Z"}, "before 1970"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "must be before"),
        ({"limit": "0"}, "from 1 to 500"),
        ({"limit": str(MAX_LIMIT + 1)}, "from 1 to 500"),
        ({"limit": "ten"}, "not a whole number"),
        ({"limit": "-3"}, "not a whole number"),
        ({"level": "LOUD"}, "not one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ({"logger": "x" * 256}, "at most 255 characters"),
        ({"q": "a\x00b"}, "NUL"),
        ({"limit": ["5", "6"]}, "give 'limit' once"),
    ],
)
def test_bad_parameters_are_a_400_that_says_why(
    logging_service: httpx.Client, gateway: httpx.Client, params: dict[str, Any], says: str
) -> None:
    for client, path, headers in (
        (logging_service, "/logs", {}),
        (gateway, "/database/logging/logs", ADMIN),
    ):
        answer = client.get(path, params=params, headers=headers)
        assert answer.status_code == 400, answer.text
        assert says in answer.json()["detail"], answer.text


def test_a_one_day_window_reads_one_partition(logging_db: DatabaseSettings) -> None:
    day = BASE + timedelta(days=2)
    query = parse_query(
        level="ERROR",
        since=iso(day),
        until=iso(day + timedelta(days=1)),
        logger=None,
        request_id=None,
        q=None,
        limit=None,
        cursor=None,
        now=datetime.now(UTC),
    )
    sql, args = build_sql(query)
    plan = "\n".join(row[0] for row in run(logging_db, f"EXPLAIN {sql}", *args))
    read = set(re.findall(r"application_logs_p\d{8}", plan))
    assert read == {f"application_logs_p{day:%Y%m%d}"}, plan


# The rollups


def insert_rollups(database: DatabaseSettings, name: str, counts: dict[datetime, int]) -> None:
    async def go() -> None:
        conn = await database.connect()
        try:
            await conn.executemany(
                "INSERT INTO analytics_event_rollups (name, bucket, events) VALUES ($1, $2, $3)",
                [(name, bucket, events) for bucket, events in counts.items()],
            )
        finally:
            await conn.close()

    asyncio.run(go())


def test_rollup_by_hour_and_by_day_from_the_rollup_table(
    analytics_db: DatabaseSettings, analytics_service: httpx.Client, gateway: httpx.Client
) -> None:
    name = f"{EVENT_PREFIX}{uuid.uuid4().hex[:12]}"
    day = datetime(2026, 3, 28, tzinfo=UTC)  # a DST change in Europe: UTC days regardless
    counts = {
        day + timedelta(hours=0): 1,
        day + timedelta(hours=5): 2,
        day + timedelta(hours=23): 3,
        day + timedelta(days=1, hours=1): 10,
        day + timedelta(days=3): 100,  # outside the range asked
    }
    insert_rollups(analytics_db, name, counts)
    insert_rollups(analytics_db, f"{name}.other", {day: 1000})
    span = {"since": iso(day), "until": iso(day + timedelta(days=2))}

    hourly = analytics_service.get("/events/rollup", params={"name": name, **span})
    assert hourly.status_code == 200, hourly.text
    body = hourly.json()
    assert (body["name"], body["step"]) == (name, "hour")
    assert len(body["points"]) == 48
    assert body["points"][0] == {"t": iso(day), "events": 1}
    assert body["points"][-1] == {"t": iso(day + timedelta(hours=47)), "events": 0}
    assert {p["t"]: p["events"] for p in body["points"] if p["events"]} == {
        iso(bucket): events for bucket, events in counts.items() if events < 100
    }

    for client, path, headers in (
        (analytics_service, "/events/rollup", {}),
        (gateway, "/database/analytics/events/rollup", ADMIN),
    ):
        daily = client.get(path, params={"name": name, "step": "day", **span}, headers=headers)
        assert daily.status_code == 200, daily.text
        assert daily.json()["points"] == [
            {"t": iso(day), "events": 6},
            {"t": iso(day + timedelta(days=1)), "events": 10},
        ]
    # A range that starts mid-bucket starts at that bucket.
    mid = analytics_service.get(
        "/events/rollup",
        params={
            "name": name,
            "since": iso(day + timedelta(hours=5, minutes=30)),
            "until": iso(day + timedelta(hours=6, minutes=1)),
        },
    ).json()
    assert mid["points"] == [
        {"t": iso(day + timedelta(hours=5)), "events": 2},
        {"t": iso(day + timedelta(hours=6)), "events": 0},
    ]


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({}, "name: required"),
        ({"name": ""}, "name: required"),
        ({"name": "x" * 101}, "at most 100 characters"),
        ({"name": ["a", "b"]}, "give 'name' once"),
        ({"name": "a", "step": "minute"}, "not one of hour, day"),
        (
            {"name": "a", "since": "2020-01-01T00:00:00Z", "until": "2021-01-01T00:00:00Z"},
            "at most 2000",
        ),
        (
            {"name": "a", "step": "day", "since": "2000-01-01T00:00:00Z"},
            "at most 2000",
        ),
        ({"name": "a", "since": "noon"}, "timestamp (like"),
        ({"name": "a", "since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "before"),
    ],
)
def test_bad_rollup_parameters_are_a_400_that_says_why(
    analytics_service: httpx.Client, gateway: httpx.Client, params: dict[str, Any], says: str
) -> None:
    for client, path, headers in (
        (analytics_service, "/events/rollup", {}),
        (gateway, "/database/analytics/events/rollup", ADMIN),
    ):
        answer = client.get(path, params=params, headers=headers)
        assert answer.status_code == 400, answer.text
        if "name" not in params and client is gateway:
            says = "Missing required query parameter 'name'"  # the gateway's own check
        assert says in answer.json()["detail"], answer.text


def test_through_the_gateway_with_the_read_scope_of_that_database(
    fleet: ProcessFleet, logging_db: DatabaseSettings, gateway: httpx.Client
) -> None:
    logger = a_logger()
    insert_logs(logging_db, [{"logger": logger, "created_at": BASE + timedelta(hours=1)}])
    logs_path, rollup_path = "/database/logging/logs", "/database/analytics/events/rollup"
    params = {**WINDOW, "logger": logger}

    for headers in (ADMIN, bearer("db:read"), bearer("db:read:logging")):
        answer = gateway.get(logs_path, params=params, headers=headers)
        assert answer.status_code == 200, answer.text
        assert [entry["logger"] for entry in answer.json()["logs"]] == [logger]
    refused = gateway.get(logs_path, params=params, headers=bearer("db:read:analytics"))
    assert refused.status_code == 403
    assert "logging" in refused.json()["detail"]
    assert gateway.get(logs_path, params=params, headers=bearer("db:execute")).status_code == 403
    assert gateway.get(logs_path, params=params).status_code == 401

    rollup = {"name": "anything"}
    assert gateway.get(rollup_path, params=rollup, headers=bearer("db:read:analytics")).is_success
    assert (
        gateway.get(rollup_path, params=rollup, headers=bearer("db:read:logging")).status_code
        == 403
    )
    assert gateway.get(rollup_path, params=rollup).status_code == 401
    # The services check the scope themselves too.
    direct = httpx.get(
        f"{fleet.url('logging')}/logs", params=params, headers=bearer("db:read:analytics")
    )
    assert direct.status_code == 403
