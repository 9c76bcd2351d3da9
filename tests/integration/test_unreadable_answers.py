"""A service answer that is not our JSON (a proxy's error page) is a failure, not a body.

The archive role's SERVICE_URL points at ``tests/garbage_service.py``, a real HTTP server
that answers HTML, text and JSON of the wrong shape. The gateway must report the role as
unhealthy/unavailable, emit only valid JSON, and keep its background checks running.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from multidb_devstack.embedded import free_port
from tests.conftest import ADMIN
from tests.fleet import ProcessFleet
from tests.processes import wait_ready

DEADLINE_S = 20.0
UNREADABLE = "service answered an unreadable body"


@pytest.fixture
def garbage() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.garbage_service", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, f"{url}/readyz")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def gateway(database_env: dict[str, str], garbage: str, tmp_path: Path) -> Iterator[httpx.Client]:
    fleet = ProcessFleet(database_env, tmp_path, MULTI_DB_ARCHIVE_SERVICE_URL=garbage)
    try:
        fleet.start("default")
        fleet.start("gateway")
        with httpx.Client(base_url=fleet.gateway, headers=ADMIN, timeout=10) as client:
            yield client
    finally:
        fleet.close()


def poll(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while not (found := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"never happened within {DEADLINE_S} s: {what}")
        time.sleep(0.05)
    return found


def test_unreadable_answers_are_reported_and_never_passed_on(
    gateway: httpx.Client, garbage: str
) -> None:
    health = gateway.get("/database/health")
    assert health.status_code == 503
    body = health.json()  # valid JSON, whatever the archive service said
    assert body["default"]["status"] == "healthy"
    assert body["archive"]["status"] == "unhealthy"
    assert body["archive"]["error"].startswith(f"{UNREADABLE} (503: JSON is malformed")

    stats = gateway.get("/database/stats")
    assert stats.status_code == 200
    assert stats.json()["archive"]["status"] == "unavailable"
    assert stats.json()["archive"]["error"].startswith(f"{UNREADABLE} (200: JSON is malformed")

    backup = gateway.get("/database/backup/info")
    assert backup.status_code == 200
    archive = backup.json()["archive"]
    assert archive["status"] == "unavailable"
    assert archive["error"] == f"{UNREADABLE} (200: Expected `str`, got `int` - at `$.host`)"

    one = gateway.get("/database/archive/health")
    assert one.status_code == 502
    assert one.json() == {
        "database": "archive",
        "status": "unhealthy",
        "error": body["archive"]["error"],
    }


def test_background_health_checks_go_on_after_unreadable_answers(
    gateway: httpx.Client, garbage: str
) -> None:
    def hits() -> int:
        return int(httpx.get(f"{garbage}/hits", timeout=5).text)

    seen = hits()
    # Several rounds of the monitor met the garbage and it is still checking.
    poll(lambda: hits() >= seen + 3, "three more background checks of the archive service")

    def cached() -> dict[str, Any] | None:
        answer = gateway.get("/database/health/cached")
        fresh = answer.json()
        return fresh if answer.status_code == 503 and "age_s" in fresh["archive"] else None

    body = poll(cached, "a cached answer for the archive role")
    assert body["archive"]["status"] == "unhealthy"
    assert body["archive"]["error"].startswith(UNREADABLE)
    assert body["default"]["status"] == "healthy"
    assert body["default"]["age_s"] < 2.0  # refreshed every 0.2 s by the fleet's settings
