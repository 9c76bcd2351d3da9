"""The audit pipeline: AuditTrail batches records to a real logging service on real PostgreSQL.

Each execute through the gateway leaves exactly one ``access_logs`` row: the trail keeps a
batch until the service took it (so a restart loses nothing), the route stores each
``event_id`` once (so a batch sent again adds nothing), and what the bounded buffer cannot
hold is counted.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import httpx
import msgspec
import pytest

from multidb.audit_records import AccessRecord, fingerprint, preview
from multidb.settings import DatabaseSettings, Settings
from multidb_devstack.embedded import free_port
from multidb_gateway.audit import AuditTrail, DeliveryRefusedError
from tests.conftest import API_KEY, JWT_SECRET, bearer
from tests.fleet import ProcessFleet
from tests.processes import poll, wait_ready

ADMIN_HEADERS = {"X-API-Key": API_KEY}
DEADLINE_S = 20.0


class LoggingService:
    """The logging role's service as a real process on a fixed port: start, stop, start again."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [sys.executable, "-m", "multidb.service", "logging", "--port", str(self.port)]
        self.process = subprocess.Popen(
            command, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        wait_ready(self.process, f"{self.url}/readyz")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=20)
            self.process = None


@pytest.fixture(scope="module")
def logging_database(settings: Settings) -> DatabaseSettings:
    return settings.databases["logging"]


@pytest.fixture(scope="module")
def service_env(database_env: dict[str, str], logging_database: DatabaseSettings) -> dict[str, str]:
    return {
        **os.environ,
        **database_env,
        "API_KEYS": API_KEY,
        "JWT_SECRET": JWT_SECRET,
        "MULTI_DB_ENV_FILE": os.devnull,
    }


@pytest.fixture(scope="module")
def shared_service(service_env: dict[str, str]) -> Iterator[LoggingService]:
    """One logging service for the tests that never stop it."""
    service = LoggingService(service_env)
    service.start()
    yield service
    service.stop()


@pytest.fixture
def own_service(service_env: dict[str, str]) -> Iterator[LoggingService]:
    """A logging service (not yet started) that the test may stop and start again."""
    service = LoggingService(service_env)
    yield service
    service.stop()


@asynccontextmanager
async def sender(url: str) -> AsyncIterator[Callable[[bytes], Awaitable[None]]]:
    """What the gateway gives AuditTrail: POST the batch, raise on anything but 2xx."""
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def send(body: bytes) -> None:
            headers = {**ADMIN_HEADERS, "content-type": "application/json"}
            async with session.post(f"{url}/audit/access", data=body, headers=headers) as answer:
                answer.raise_for_status()

        yield send


def record(**changes: object) -> AccessRecord:
    query = "SELECT count(*)\n  FROM users WHERE created_at > :since"
    fields: dict[str, object] = {
        "event_id": uuid.uuid4().hex,
        "created_at": datetime.now(UTC),
        "request_id": uuid.uuid4().hex,
        "principal": "api-key:0123456789ab",
        "auth_method": "api_key",
        "method": "POST",
        "path": "/database/default/execute",
        "target_role": "default",
        "query_fingerprint": fingerprint(query),
        "query_preview": preview(query),
        "read_only": True,
        "outcome": "allowed",
        "status_code": 200,
        "row_count": 1,
        "duration_ms": 2.25,
        "error": None,
        "client_ip": "127.0.0.1",
    }
    fields.update(changes)
    return AccessRecord(**fields)  # type: ignore[arg-type]


async def _connect(database: DatabaseSettings) -> asyncpg.Connection:
    return await database.connect()


async def stored(database: DatabaseSettings, records: list[AccessRecord]) -> list[asyncpg.Record]:
    """The ``access_logs`` rows of ``records``' event ids (every row, duplicates included)."""
    conn = await _connect(database)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(
            "SELECT * FROM access_logs WHERE event_id = ANY($1::text[]) ORDER BY id",
            [rec.event_id for rec in records],
        )
        return rows
    finally:
        await conn.close()


async def eventually(check: Callable[[], bool], what: str, timeout_s: float = DEADLINE_S) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            pytest.fail(f"never happened within {timeout_s} s: {what}")
        await asyncio.sleep(0.02)


def assert_exactly_once(rows: list[asyncpg.Record], records: list[AccessRecord]) -> None:
    ids = [row["event_id"] for row in rows]
    assert len(ids) == len(set(ids)), "an event_id was stored twice"
    assert set(ids) == {rec.event_id for rec in records}


async def test_recorded_records_are_stored_exactly_once_after_stop(
    shared_service: LoggingService, logging_database: DatabaseSettings
) -> None:
    records = [record(row_count=i) for i in range(57)]
    records[3] = record(outcome="failed", status_code=400, row_count=None, error="42P01: nope")
    async with sender(shared_service.url) as send:
        trail = AuditTrail(send, batch_size=10, flush_interval_s=0.05)
        await trail.start()
        for rec in records:
            trail.record(rec)
        await trail.stop()
    status = trail.status()
    assert (status.pending, status.sent, status.dropped, status.failures) == (0, 57, 0, 0)

    rows = await stored(logging_database, records)
    assert_exactly_once(rows, records)
    # Every field lands in its own column.
    by_id = {row["event_id"]: row for row in rows}
    for rec in (records[0], records[3]):
        row = by_id[rec.event_id]
        assert {name: row[name] for name in AccessRecord.__struct_fields__} == msgspec.to_builtins(
            rec, builtin_types=(datetime,)
        )


async def test_sending_the_same_batch_twice_stores_it_once(
    shared_service: LoggingService, logging_database: DatabaseSettings
) -> None:
    records = [record() for _ in range(3)]
    body = msgspec.json.encode([*records, records[0]])  # a duplicate inside the batch, too
    url = f"{shared_service.url}/audit/access"
    async with aiohttp.ClientSession() as session:
        answers = []
        for _ in range(2):
            async with session.post(url, data=body, headers=ADMIN_HEADERS) as answer:
                assert answer.status == 200, await answer.text()
                answers.append(await answer.json())
        async with session.post(url, json=[], headers=ADMIN_HEADERS) as answer:
            assert answer.status == 200
            empty = await answer.json()
    assert answers == [{"received": 4, "inserted": 3}, {"received": 4, "inserted": 0}]
    assert empty == {"received": 0, "inserted": 0}
    assert_exactly_once(await stored(logging_database, records), records)


async def test_a_restart_of_the_logging_service_loses_nothing(
    own_service: LoggingService, logging_database: DatabaseSettings
) -> None:
    own_service.start()
    before = [record() for _ in range(10)]
    during = [record() for _ in range(25)]
    async with sender(own_service.url) as send:
        trail = AuditTrail(send, batch_size=10, flush_interval_s=0.05, max_backoff_s=0.2)
        await trail.start()
        for rec in before:
            trail.record(rec)
        await eventually(lambda: trail.status().sent == 10, "the first records delivered")

        await asyncio.to_thread(own_service.stop)
        for rec in during:
            trail.record(rec)  # never raises, never blocks
        await eventually(lambda: trail.status().failures > 0, "a failed delivery")
        status = trail.status()
        assert status.pending == 25
        assert status.last_error is not None
        assert status.last_error.startswith("ClientConnectorError"), status.last_error

        await asyncio.to_thread(own_service.start)
        await eventually(lambda: trail.status().pending == 0, "the backlog delivered")
        await trail.stop()

    status = trail.status()
    assert (status.sent, status.dropped) == (35, 0)
    assert_exactly_once(await stored(logging_database, before + during), before + during)


async def test_overflow_is_counted_and_logged_once_per_episode(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens: every send fails
    caplog.set_level(logging.WARNING, logger="multidb.gateway.audit")
    async with sender(nobody) as send:
        trail = AuditTrail(send, capacity=5, batch_size=2, flush_interval_s=0.05)
        await trail.start()
        for _ in range(8):
            trail.record(record())
        status = trail.status()
        assert (status.pending, status.dropped) == (5, 3)
        overflow = [r for r in caplog.records if "dropping records" in r.getMessage()]
        assert len(overflow) == 1

        await eventually(lambda: trail.status().failures > 0, "a failed delivery")
        assert trail.status().pending == 5  # the failed batch is kept
        await trail.stop(timeout_s=0.3)
    status = trail.status()
    assert (status.pending, status.sent, status.dropped) == (0, 0, 8)
    trail.record(record())  # after stop: dropped, not raised
    assert trail.status().dropped == 9


async def test_a_failed_batch_is_retried_first_and_in_order() -> None:
    bodies: list[bytes] = []
    failures_left = 2

    async def flaky(body: bytes) -> None:
        nonlocal failures_left
        if failures_left:
            failures_left -= 1
            raise ConnectionResetError("logging service went away")
        bodies.append(body)

    records = [record() for _ in range(7)]
    trail = AuditTrail(flaky, batch_size=3, flush_interval_s=0.01, max_backoff_s=0.02)
    await trail.start()
    for rec in records:
        trail.record(rec)
    await eventually(lambda: trail.status().sent == 7, "every record delivered")
    await trail.stop()
    batches = [msgspec.json.decode(body, type=list[AccessRecord]) for body in bodies]
    assert [len(batch) for batch in batches] == [3, 3, 1]
    assert [rec for batch in batches for rec in batch] == records
    status = trail.status()
    assert (status.failures, status.dropped) == (2, 0)
    assert status.last_error == "ConnectionResetError: logging service went away"


async def test_the_route_needs_admin_and_a_valid_body(shared_service: LoggingService) -> None:
    url = f"{shared_service.url}/audit/access"
    good = msgspec.json.encode([record()])
    json_type = {"content-type": "application/json"}
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=good, headers=json_type) as answer:
            assert answer.status == 401
        read_only = {**bearer("db:read"), **json_type}
        async with session.post(url, data=good, headers=read_only) as answer:
            assert answer.status == 403
            assert answer.content_type == "application/problem+json"
            assert "db:admin" in (await answer.json())["detail"]
        admin = {**bearer("db:read", "db:admin"), **json_type}
        async with session.post(url, data=good, headers=admin) as answer:
            assert answer.status == 200
            assert await answer.json() == {"received": 1, "inserted": 1}

        raw = msgspec.to_builtins(record())
        malformed: list[bytes] = [
            b"{not json",
            b'{"event_id": "a"}',
            msgspec.json.encode([{**raw, "surprise": True}]),
            msgspec.json.encode([{**raw, "event_id": "short"}]),
            msgspec.json.encode([{**raw, "outcome": "maybe"}]),  # refused by the table's check
            msgspec.json.encode([raw] * 1001),
        ]
        for body in malformed:
            async with session.post(
                url, data=body, headers={**ADMIN_HEADERS, **json_type}
            ) as answer:
                assert answer.status == 400, (body[:80], await answer.text())
                assert answer.content_type == "application/problem+json"


SERVICE_SECRET = "internal-service-secret-for-the-audit-tests-0123"
HASHED_ONLY = {
    "API_KEYS": "sha256:" + hashlib.sha256(API_KEY.encode()).hexdigest(),
    "JWT_SECRET": "",  # empty: unset
    "MULTI_DB_SERVICE_SECRET": SERVICE_SECRET,
}


def _rows_of(database: DatabaseSettings, request_id: str) -> list[asyncpg.Record]:
    async def fetch() -> list[asyncpg.Record]:
        conn = await _connect(database)
        try:
            rows: list[asyncpg.Record] = await conn.fetch(
                "SELECT * FROM access_logs WHERE request_id = $1", request_id
            )
            return rows
        finally:
            await conn.close()

    return asyncio.run(fetch())


@pytest.fixture
def hashed_fleet(database_env: dict[str, str], tmp_path: Path) -> Iterator[ProcessFleet]:
    """Gateway, default and logging services with hashed API keys only and no JWT_SECRET."""
    fleet = ProcessFleet(database_env, tmp_path, **HASHED_ONLY)
    try:
        yield fleet
    finally:
        fleet.close()


def test_hashed_keys_only_audit_is_delivered_and_a_refusing_logging_service_shows(
    hashed_fleet: ProcessFleet, logging_database: DatabaseSettings, tmp_path: Path
) -> None:
    fleet = hashed_fleet
    # A logging service that does not share the gateway's secret refuses its batches.
    fleet.start("logging", env={"MULTI_DB_SERVICE_SECRET": "another-secret-" + "x" * 32})
    fleet.start("default")
    fleet.start("gateway")
    client = httpx.Client(base_url=fleet.gateway, timeout=10)
    request_id = uuid.uuid4().hex
    executed = client.post(
        "/database/default/execute",
        json={"query": "SELECT 1 AS one"},
        headers={**ADMIN_HEADERS, "X-Request-ID": request_id},
    )
    assert executed.status_code == 200, executed.text

    def refused_twice() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get("/readyz").json()
        return body if body["audit"]["rejected"] >= 2 else None

    ready = poll(refused_twice, "two refused deliveries shown by /readyz")
    assert ready["status"] == "degraded"
    audit = ready["audit"]
    assert (audit["sent"], audit["pending"], audit["refusing"]) == (0, 1, True)
    assert "refused the gateway's credentials (401" in audit["last_error"]
    assert "MULTI_DB_SERVICE_SECRET" in ready["reasons"][0]
    assert _rows_of(logging_database, request_id) == []
    # Loud, but once for the streak, not once per attempt.
    gateway_log = (tmp_path / "gateway.log").read_text()
    assert gateway_log.count("audit: the logging service refused") == 1, gateway_log

    # The same logging service with the shared secret: the kept record goes through.
    fleet.stop("logging")
    fleet.start("logging")
    rows = poll(lambda: _rows_of(logging_database, request_id), "the record in access_logs")
    assert [(row["outcome"], row["target_role"]) for row in rows] == [("allowed", "default")]
    ready = poll(
        lambda: (body := client.get("/readyz").json())["audit"]["sent"] == 1 and body,
        "the record counted as sent",
    )
    assert ready["status"] == "ready"
    assert (ready["audit"]["refusing"], ready["audit"]["pending"]) == (False, 0)
    # The health monitor authenticates with the same internal token.
    cached = poll(
        lambda: (
            (body := client.get("/database/health/cached", headers=ADMIN_HEADERS).json())[
                "default"
            ]["status"]
            == "healthy"
            and body
        ),
        "the cached health of default",
    )
    assert cached["logging"]["status"] == "healthy"
    client.close()


async def test_a_refusal_is_kept_logged_once_and_never_counted_as_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="multidb.gateway.audit")
    refusing = True
    bodies: list[bytes] = []

    async def receiver(body: bytes) -> None:
        if refusing:
            raise DeliveryRefusedError("logging service refused the gateway's credentials (401)")
        bodies.append(body)

    trail = AuditTrail(receiver, batch_size=5, flush_interval_s=0.01, max_backoff_s=0.02)
    await trail.start()
    records = [record() for _ in range(3)]
    for rec in records:
        trail.record(rec)
    await eventually(lambda: trail.status().rejected >= 3, "three refused attempts")
    status = trail.status()
    assert (status.sent, status.pending, status.dropped, status.refusing) == (0, 3, 0, True)
    assert status.last_error == (
        "DeliveryRefusedError: logging service refused the gateway's credentials (401)"
    )
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "kept, 3 pending" in errors[0].getMessage()

    refusing = False  # the configuration is fixed
    await eventually(lambda: trail.status().sent == 3, "the kept records delivered")
    await trail.stop()
    assert trail.status().refusing is False
    assert msgspec.json.decode(bodies[0], type=list[AccessRecord]) == records
    assert any("delivering again" in r.getMessage() for r in caplog.records)


async def test_records_refused_as_malformed_are_dropped_not_retried() -> None:
    calls = 0

    async def receiver(_: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise DeliveryRefusedError(
                "logging service refused the records (400)", batch_at_fault=True
            )

    trail = AuditTrail(receiver, batch_size=2, flush_interval_s=0.01, max_backoff_s=0.02)
    await trail.start()
    for _ in range(4):
        trail.record(record())
    await eventually(lambda: trail.status().pending == 0, "both batches handled")
    await trail.stop()
    status = trail.status()
    assert (status.sent, status.dropped, status.rejected, status.refusing) == (2, 2, 1, False)
