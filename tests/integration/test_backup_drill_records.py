"""Drill results in the logging role: ``POST /backups/drills`` stores each once,
``GET /backups/drills`` lists them newest first (the real service app, real PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from multidb.settings import Settings
from multidb_logging.drills_route import DrillList
from tests.conftest import ADMIN, bearer

ORIGIN = datetime(2026, 1, 1, tzinfo=UTC)


def drill(n: int, role: str = "default", **changes: Any) -> dict[str, Any]:
    """The n-th drill of ``role``, finished n minutes after ORIGIN, as a sender encodes it."""
    started = ORIGIN + timedelta(minutes=n)
    record: dict[str, Any] = {
        "drill_id": f"{role}-drill-{n}",
        "role": role,
        "backup_id": f"{n:012x}",
        "started_at": started.isoformat(),
        "finished_at": (started + timedelta(seconds=30)).isoformat(),
        "duration_s": 30.0,
        "passed": n % 2 == 0,
        "differences": [] if n % 2 == 0 else [f"public.users: 3 rows, manifest says {n}"],
    }
    return {**record, **changes}


async def _stored_ids(settings: Settings) -> list[str]:
    conn = await settings.databases["logging"].connect()
    try:
        rows = await conn.fetch("SELECT drill_id FROM backup_drills ORDER BY drill_id")
        return [row["drill_id"] for row in rows]
    finally:
        await conn.close()


@pytest.fixture
async def client(service_client: Any, settings: Settings) -> AsyncIterator[Any]:
    conn = await settings.databases["logging"].connect()
    try:
        await conn.execute("DELETE FROM backup_drills")
    finally:
        await conn.close()
    async with service_client("logging") as logging_service:
        yield logging_service


async def test_a_batch_is_stored_once_however_often_it_is_sent(
    client: Any, settings: Settings
) -> None:
    batch = [drill(1), drill(2), drill(3, differences=["NUL \x00 in a restore error"])]
    first = await client.post("/backups/drills", json=batch, headers=ADMIN)
    assert first.status_code == 200, first.text
    assert first.json() == {"received": 3, "stored": 3}

    again = await client.post("/backups/drills", json=batch, headers=ADMIN)
    assert again.json() == {"received": 3, "stored": 0}
    # A record twice in one batch, beside a new one: the new one alone is stored.
    mixed = await client.post("/backups/drills", json=[drill(4), drill(4), drill(1)], headers=ADMIN)
    assert mixed.json() == {"received": 3, "stored": 1}
    assert await _stored_ids(settings) == [f"default-drill-{n}" for n in (1, 2, 3, 4)]

    listed = await client.get("/backups/drills", headers=ADMIN)
    assert listed.status_code == 200, listed.text
    third = next(d for d in listed.json()["drills"] if d["drill_id"] == "default-drill-3")
    assert third["differences"] == ["NUL \ufffd in a restore error"]
    assert third["backup_id"] == "000000000003"
    assert (third["passed"], third["duration_s"]) == (False, 30.0)
    assert third["finished_at"] == "2026-01-01T00:03:30Z"
    recorded = datetime.fromisoformat(third["recorded_at"])
    assert abs(datetime.now(UTC) - recorded) < timedelta(minutes=1)


@pytest.mark.parametrize(
    ("bad", "field", "says"),
    [
        (drill(9, backup_id="NOT-HEX"), "backup_id", "matching regex"),
        ({k: v for k, v in drill(9).items() if k != "role"}, "role", "missing required field"),
        ({**drill(9), "comment": "hi"}, "comment", "unknown field"),
        (drill(9, started_at="2026-01-01T00:09:00"), "started_at", "timezone"),
        (drill(9, duration_s=-1), "duration_s", ">= 0"),
        (drill(9, passed="yes"), "passed", "Expected `bool`"),
        (drill(9, differences=["ok", "x" * 1001]), "differences[1]", "length <= 1000"),
        (drill(9, drill_id=""), "drill_id", "length >= 1"),
        (drill(9, finished_at="2026-01-01T00:00:00Z"), "finished_at", "before started_at"),
    ],
)
async def test_a_malformed_record_is_refused_naming_its_index_and_field(
    client: Any, settings: Settings, bad: dict[str, Any], field: str, says: str
) -> None:
    answer = await client.post("/backups/drills", json=[drill(1), drill(2), bad], headers=ADMIN)
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    problem = answer.json()
    assert (problem["index"], problem["field"]) == (2, field)
    assert problem["detail"].startswith(f"drill record 2, field '{field}': "), problem
    assert says in problem["detail"], problem
    # The batch is refused whole: the good records before the bad one are not stored.
    assert await _stored_ids(settings) == []


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"[]", "1 to 100 drill records, this one 0"),
        (msgspec.json.encode([drill(n) for n in range(101)]), "1 to 100 drill records"),
        (msgspec.json.encode(drill(1)), "not a JSON array"),
        (b'[{"drill_id": ', "not a JSON array"),
        (b"[" * 10_000 + b"]" * 10_000, "nested too deeply"),
    ],
)
async def test_a_body_that_is_not_a_batch_is_refused(client: Any, body: bytes, says: str) -> None:
    answer = await client.post(
        "/backups/drills",
        content=body,
        headers={**ADMIN, "content-type": "application/json"},
    )
    assert answer.status_code == 400, answer.text
    assert says in answer.json()["detail"]
    assert (await client.get("/readyz")).status_code == 200


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        (bearer("db:read", "db:execute", "db:write"), 403),
        # The bare scope: drills of every role live here, so one role's admin is not enough.
        (bearer("db:admin:logging"), 403),
        (bearer("db:admin:default"), 403),
        (bearer("db:admin"), 200),
    ],
)
async def test_both_routes_need_the_bare_admin_scope(
    client: Any, settings: Settings, headers: dict[str, str], status: int
) -> None:
    posted = await client.post("/backups/drills", json=[drill(1)], headers=headers)
    assert posted.status_code == status, posted.text
    listed = await client.get("/backups/drills", headers=headers)
    assert listed.status_code == status, listed.text
    assert await _stored_ids(settings) == (["default-drill-1"] if status == 200 else [])


async def test_the_list_is_newest_first_filtered_by_role_and_limited(client: Any) -> None:
    # Sent out of order, in two batches.
    batch = [drill(n, "default") for n in (3, 1, 5)] + [drill(n, "archive") for n in (4, 2)]
    stored = await client.post("/backups/drills", json=batch, headers=ADMIN)
    assert stored.json() == {"received": 5, "stored": 5}

    async def ids(**params: Any) -> list[str]:
        answer = await client.get("/backups/drills", params=params, headers=ADMIN)
        assert answer.status_code == 200, answer.text
        listed = msgspec.json.decode(answer.content, type=DrillList)  # the documented shape
        return [d.drill_id for d in listed.drills]

    newest_first = ["default-drill-5", "archive-drill-4", "default-drill-3", "archive-drill-2"]
    assert await ids() == [*newest_first, "default-drill-1"]
    assert await ids(role="default") == ["default-drill-5", "default-drill-3", "default-drill-1"]
    assert await ids(role="archive", limit=1) == ["archive-drill-4"]
    assert await ids(limit=4) == newest_first
    assert await ids(role="no-such-role") == []

    for limit in (0, 501, "many"):
        answer = await client.get("/backups/drills", params={"limit": limit}, headers=ADMIN)
        assert answer.status_code == 400, (limit, answer.text)
    assert len(await ids(limit=500)) == 5


async def test_the_service_documents_the_batch_it_accepts(client: Any) -> None:
    document = (await client.get("/schema/openapi.json")).json()
    post = document["paths"]["/backups/drills"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert (body["type"], body["minItems"], body["maxItems"]) == ("array", 1, 100)
    assert body["items"]["additionalProperties"] is False
    assert "drill_id" in body["items"]["required"]
    assert "get" in document["paths"]["/backups/drills"]
