"""Each role's service started alone, as a real process, answers /health for its database."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from multidb_devstack.embedded import free_port
from tests.conftest import API_KEY, BUILTIN_ROLES
from tests.processes import wait_ready


@pytest.fixture
def service_env(database_env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **database_env, "API_KEYS": API_KEY, "MULTI_DB_ENV_FILE": os.devnull}


@pytest.fixture
def started(service_env: dict[str, str]) -> Iterator[dict[str, int]]:
    ports = {role: free_port() for role in BUILTIN_ROLES}
    commands = {
        role: [sys.executable, "-m", "multidb.service", role, "--port", str(port)]
        for role, port in ports.items()
    }
    # One role through plain uvicorn on its package's module-level app.
    commands["analytics"] = [
        sys.executable,
        "-m",
        "uvicorn",
        "multidb_analytics.app:app",
        "--port",
        str(ports["analytics"]),
    ]
    processes = {
        role: subprocess.Popen(
            command, env=service_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for role, command in commands.items()
    }
    try:
        for role, process in processes.items():
            wait_ready(process, f"http://127.0.0.1:{ports[role]}/readyz")
        yield ports
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait(timeout=10)


def test_each_service_alone_answers_health(
    started: dict[str, int], database_env: dict[str, str]
) -> None:
    names = {
        "default": "ocr_identity_db",
        "analytics": "ocr_analytics_db",
        "logging": "ocr_logging_db",
        "archive": "ocr_archive_db",
    }
    for role, port in started.items():
        response = httpx.get(
            f"http://127.0.0.1:{port}/health", headers={"X-API-Key": API_KEY}, timeout=5
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["database"], body["status"], body["database_name"]) == (
            role,
            "healthy",
            names[role],
        )


SECRETS = {"JWT_SECRET", "MULTI_DB_SERVICE_SECRET"}
PROGRAMS = {
    "service": ["-m", "multidb.service", "default"],
    "gateway": ["-m", "multidb_gateway"],
    "cli": ["-m", "multidb.cli", "migrate", "--status"],
}


SHARED_CASES = [
    ("DB_PORT", "abc", "DB_PORT: expected `int`, got `str` (got 'abc')"),
    ("MULTI_DB_ROUTING", "{oops", "MULTI_DB_ROUTING: must be a JSON object"),
]
GATEWAY_CASE = (
    "MULTI_DB_SERVICE_TIMEOUT_MS",
    "0",
    "MULTI_DB_SERVICE_TIMEOUT_MS: expected `int` >= 1",
)


@pytest.mark.parametrize(
    ("program", "variable", "value", "expected"),
    [(program, *case) for program in PROGRAMS for case in SHARED_CASES]
    + [("gateway", *GATEWAY_CASE)],
)
def test_bad_setting_stops_start_up_with_one_line(
    service_env: dict[str, str], program: str, variable: str, value: str, expected: str
) -> None:
    port = [] if program == "cli" else ["--port", str(free_port())]
    result = subprocess.run(
        [sys.executable, *PROGRAMS[program], *port],
        env={**service_env, variable: value},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_role_without_database_stops_start_up(service_env: dict[str, str]) -> None:
    env = {
        key: value for key, value in service_env.items() if not key.startswith("MULTI_DB_ARCHIVE_")
    }
    result = subprocess.run(
        [sys.executable, "-m", "multidb.service", "archive"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "set MULTI_DB_ARCHIVE_HOST" in result.stderr


def test_gateway_with_only_hashed_keys_and_no_secret_stops_with_one_line(
    service_env: dict[str, str],
) -> None:
    hashed = "sha256:" + hashlib.sha256(API_KEY.encode()).hexdigest()
    env = {k: v for k, v in service_env.items() if k not in SECRETS} | {"API_KEYS": hashed}
    result = subprocess.run(
        [sys.executable, "-m", "multidb_gateway", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "MULTI_DB_SERVICE_SECRET: the gateway has no credential" in lines[0]
    assert hashed not in result.stderr
