"""An unexpected error leaves a trace in the log (type and where), never a secret or a trace
in the response.

A plugin registered for real with the service's plugin manager raises in its health
detail hook and in a route it adds, with a message quoting a password, as a driver error
might; the archive service runs in-process against its real database.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from litestar import get

from multidb import hookimpl
from multidb.plugins import get_plugin_manager
from tests.conftest import ADMIN

SECRET = "hunter2-do-not-log"
HERE = Path(__file__).name


class FaultyPlugin:
    """Raises where a buggy plugin would, quoting a secret in the message."""

    @hookimpl
    def multidb_health_detail(self, role: str, connection: asyncpg.Connection) -> None:
        if role == "archive":
            msg = f"could not connect to postgresql://app:{SECRET}@db/archive"
            raise RuntimeError(msg)

    @hookimpl
    def multidb_stats_detail(self, role: str, connection: asyncpg.Connection) -> None:
        if role == "archive":
            raise KeyError(SECRET)

    @hookimpl
    def multidb_service_routes(self, role: str) -> list[Any] | None:
        if role != "archive":
            return None

        @get("/explode")
        async def explode() -> None:
            msg = f"password={SECRET}"
            raise ValueError(msg)

        return [explode]


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self, logger: str) -> list[str]:
        return [r.getMessage() for r in self.records if r.name == logger]


@pytest.fixture
def multidb_log() -> Iterator[Records]:
    """What the ``multidb`` loggers say (the app's own logging set-up replaces pytest's)."""
    handler = Records()
    logger = logging.getLogger("multidb")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def faulty() -> Iterator[None]:
    manager = get_plugin_manager()
    plugin = FaultyPlugin()
    manager.register(plugin, name="faulty-test-plugin")
    try:
        yield
    finally:
        manager.unregister(plugin)


async def test_a_raising_plugin_is_logged_with_its_location_and_answered_without_a_trace(
    faulty: None, service_client: Any, multidb_log: Records
) -> None:
    async with service_client("archive") as client:
        health = await client.get("/health", headers=ADMIN)
        exploded = await client.get("/explode", headers=ADMIN)
        stats = await client.get("/stats", headers=ADMIN)

    assert health.status_code == 503
    assert health.json() == {"database": "archive", "status": "unhealthy", "error": "RuntimeError"}
    assert exploded.status_code == 500
    assert exploded.headers["content-type"] == "application/problem+json"
    assert exploded.json() == {
        "status": 500,
        "title": "Internal error",
        "detail": "the server failed to answer this request",
    }
    assert stats.json() == {"database": "archive", "status": "unavailable", "error": "KeyError"}
    for answer in (health, exploded, stats):
        assert SECRET not in answer.text
        assert HERE not in answer.text

    health_line, stats_line = multidb_log.lines("multidb.probes")
    assert health_line.startswith("health check of archive failed unexpectedly: RuntimeError at ")
    assert f"{HERE}:" in health_line
    assert "in multidb_health_detail" in health_line
    assert stats_line.startswith("stats of archive failed unexpectedly: KeyError at ")
    assert "in multidb_stats_detail" in stats_line

    error_lines = multidb_log.lines("multidb.errors")
    assert len(error_lines) == 1, error_lines
    assert error_lines[0].startswith("unhandled ValueError at ")
    assert f"{HERE}:" in error_lines[0]
    assert "in explode" in error_lines[0]

    for record in multidb_log.records:
        assert SECRET not in record.getMessage()
        assert record.exc_info is None  # a formatted traceback would quote the message
