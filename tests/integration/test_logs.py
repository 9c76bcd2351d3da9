"""Structured logs of real processes: JSON lines with their fields, and never a secret.

The four role services and the gateway run as real processes (``ProcessFleet``, each
writing its output to a log file) against the embedded PostgreSQL, at DEBUG level. The
secret scan drives every endpoint the OpenAPI documents list (so routes added later are
driven too), every execute failure, a service killed mid-run and a database stopped
mid-run, then reads every response and every log line for the configured secrets.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from multidb import migrations
from multidb.execute_logins import derive_logins
from multidb.plugins import get_roles
from multidb.settings import load_settings
from multidb_devstack.embedded import EmbeddedPostgres
from tests.conftest import API_KEY, BUILTIN_ROLES, JWT_SECRET, bearer, token
from tests.fleet import GATEWAY, ProcessFleet

SERVICE_SECRET = "service-secret-" + uuid.uuid4().hex  # the gateway's own credential
LEADING = ["timestamp", "level", "logger", "process"]
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture(scope="module")
def fleet(
    database_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProcessFleet]:
    logs = tmp_path_factory.mktemp("fleet-logs")
    with ProcessFleet(
        database_env,
        logs,
        MULTI_DB_LOG_LEVEL="DEBUG",
        MULTI_DB_LOG_FORMAT="json",
        MULTI_DB_SERVICE_SECRET=SERVICE_SECRET,
    ).running() as fleet:
        yield fleet


def log_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of ``path`` as a JSON object (fails on a line that is not one)."""
    lines = []
    for number, text in enumerate(path.read_text().splitlines(), 1):
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            pytest.fail(f"{path.name}:{number} is not JSON: {text!r}")
        assert isinstance(line, dict), text
        assert list(line)[: len(LEADING)] == LEADING, text
        assert TIMESTAMP.match(line["timestamp"]), text
        lines.append(line)
    return lines


def execute_lines(path: Path, request_id: str) -> list[dict[str, Any]]:
    return [
        line
        for line in log_lines(path)
        if line["event"] == "execute" and line.get("request_id") == request_id
    ]


def wait_for_line(path: Path, request_id: str) -> dict[str, Any]:
    """The execute line of ``request_id``; written after the answer, so poll a moment."""
    deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=10)
    while dt.datetime.now(dt.UTC) < deadline:
        found = execute_lines(path, request_id)
        if found:
            assert len(found) == 1, "one execute line per request"
            return found[0]
    pytest.fail(f"no execute line for {request_id} in {path.name}")


def test_an_execute_is_one_json_line_with_the_callers_request_id(fleet: ProcessFleet) -> None:
    marker = "param-value-" + uuid.uuid4().hex
    request_id = "logs-" + uuid.uuid4().hex
    response = httpx.post(
        f"{fleet.gateway}/database/default/execute",
        json={"query": "SELECT :marker::text AS m, 2 AS n", "params": {"marker": marker}},
        headers={"X-API-Key": API_KEY, "X-Request-ID": request_id},
        timeout=10,
    )
    assert response.status_code == 200, response.text

    service = wait_for_line(fleet.logs / "default.log", request_id)
    assert service["level"] == "info"
    assert service["logger"] == "multidb.service.execute"
    assert (service["process"], service["role"]) == ("service", "default")
    assert (service["outcome"], service["status_code"], service["rows"]) == ("ok", 200, 1)
    assert isinstance(service["duration_ms"], float)
    assert service["principal"].startswith("api-key:")

    gateway = wait_for_line(fleet.logs / f"{GATEWAY}.log", request_id)
    assert gateway["process"] == "gateway"
    assert "role" not in gateway
    assert (gateway["target_role"], gateway["outcome"], gateway["status_code"]) == (
        "default",
        "ok",
        200,
    )
    assert gateway["rows"] == 1
    assert gateway["duration_ms"] >= service["duration_ms"]
    for name in [*BUILTIN_ROLES, GATEWAY]:
        assert marker not in (fleet.logs / f"{name}.log").read_text(), "a parameter was logged"


@pytest.mark.parametrize(
    ("body", "status", "service_outcome", "gateway_outcome"),
    [
        ({"query": "SELECT 1/0"}, 400, "SQLError", "SQLError"),
        (
            {"query": "DELETE FROM users", "read_only": False},
            403,
            None,
            "PermissionDeniedException",
        ),
        ({"query": 7}, 400, None, "BadRequestError"),
    ],
)
def test_failed_executes_say_their_error_class(
    fleet: ProcessFleet,
    body: dict[str, Any],
    status: int,
    service_outcome: str | None,
    gateway_outcome: str,
) -> None:
    request_id = "logs-" + uuid.uuid4().hex
    headers = {**bearer("db:execute"), "X-Request-ID": request_id}
    answer = httpx.post(
        f"{fleet.gateway}/database/default/execute", json=body, headers=headers, timeout=10
    )
    assert answer.status_code == status, answer.text
    gateway = wait_for_line(fleet.logs / f"{GATEWAY}.log", request_id)
    assert (gateway["outcome"], gateway["status_code"]) == (gateway_outcome, status)
    if service_outcome is not None:
        service = wait_for_line(fleet.logs / "default.log", request_id)
        assert (service["outcome"], service["status_code"]) == (service_outcome, status)


def test_human_format_when_asked(
    database_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    human = ProcessFleet(database_env, tmp_path_factory.mktemp("human-logs"))
    human.start("default", {"MULTI_DB_LOG_FORMAT": "human"})
    try:
        request_id = "human-" + uuid.uuid4().hex
        httpx.post(
            f"{human.url('default')}/execute",
            json={"query": "SELECT 1"},
            headers={"X-API-Key": API_KEY, "X-Request-ID": request_id},
            timeout=10,
        )
    finally:
        human.close()
    lines = [
        line for line in (human.logs / "default.log").read_text().splitlines() if request_id in line
    ]
    assert len(lines) == 1, lines
    line = lines[0]
    assert not line.startswith("{")
    assert re.match(r"^\d{4}-\d\d-\d\dT[\d:.]+Z \[info\s*\] execute\s", line), line
    assert "[default multidb.service.execute]" in line
    assert f"request_id={request_id}" in line
    assert "outcome=ok" in line
    assert "status_code=200" in line
    assert "\x1b[" not in line, "no colours when the output is not a terminal"


@pytest.mark.parametrize(
    ("variable", "value"),
    [("MULTI_DB_LOG_LEVEL", "LOUD"), ("MULTI_DB_LOG_FORMAT", "xml")],
)
@pytest.mark.parametrize("program", ["service", "gateway", "cli"])
def test_a_bad_log_setting_is_one_line_naming_it(
    fleet: ProcessFleet, program: str, variable: str, value: str
) -> None:
    command = {
        "service": [sys.executable, "-m", "multidb.service", "default", "--port", "1"],
        "gateway": [sys.executable, "-m", "multidb_gateway", "--port", "1"],
        "cli": [sys.executable, "-m", "multidb.cli", "roles"],
    }[program]
    done = subprocess.run(
        command,
        env={**fleet.env, variable: value},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert f"configuration error: {variable}: must be one of" in lines[0]
    assert repr(value.upper() if "LEVEL" in variable else value) in lines[0]


# ---- the secret scan ------------------------------------------------------------------------


def _secrets(fleet: ProcessFleet, extra: dict[str, str]) -> dict[str, str]:
    """What must never be shown: name -> value, from the fleet's own environment."""
    settings = load_settings({**fleet.env, **extra}, get_roles())
    found = {
        "API key": API_KEY,
        "JWT secret": JWT_SECRET,
        "service secret": SERVICE_SECRET,
    }
    for role, database in settings.databases.items():
        assert database.password, "the test database has a password to leak"
        found[f"{role} database password"] = database.password
        logins = derive_logins(database)
        found[f"{role} reader password"] = logins.reader.password
        found[f"{role} writer password"] = logins.writer.password
    for source in (fleet.env, extra):
        for name, value in source.items():
            if name.endswith("PASSWORD") and value:
                found[name] = value
    return found


class Recorder:
    """Every request goes through here: its response (status, headers, body) is kept."""

    def __init__(self) -> None:
        self.client = httpx.Client(timeout=15)
        self.responses: list[tuple[str, httpx.Response]] = []

    def __call__(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = self.client.request(method, url, **kwargs)
        self.responses.append((f"{method} {url}", response))
        return response

    def texts(self) -> Iterator[tuple[str, str]]:
        for what, response in self.responses:
            headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
            yield what, f"{response.status_code}\n{headers}\n{response.text}"


def _credentials() -> list[dict[str, str]]:
    every_scope = bearer("db:read", "db:execute", "db:write", "db:admin")
    return [
        {"X-API-Key": API_KEY},
        every_scope,
        bearer("db:read"),
        {},
        {"X-API-Key": "wrong-key"},
        {"Authorization": "Bearer not.a.token"},
        {"Authorization": "Bearer " + token("db:read", secret="another-secret-" + "x" * 32)},
        {"X-API-Key": API_KEY, **every_scope},  # both at once: refused
    ]


EXECUTE_BODIES: list[Any] = [
    {"query": "SELECT COUNT(*) FROM users"},
    {"query": "SELECT :v::text", "params": {"v": "a value"}},
    {"query": "SELECT 1/0"},
    {"query": "SELECT pg_sleep(10)"},
    {"query": "DELETE FROM users"},
    {"query": "DELETE FROM users", "read_only": False},
    {"query": "SELECT $1"},
    {"query": "SELECT * FROM pg_authid"},
    {"query": "SELECT 1; SELECT 2"},
    {"query": 7},
    {"query": "SELECT 1", "params": {"x": {"deep": [1, 2]}}},
    b"{not json",
    b"",
]


def _drive_schema(call: Recorder, base: str, credentials: list[dict[str, str]]) -> int:
    """Every operation of the OpenAPI document at ``base``: returns how many were driven."""
    schema = call("GET", f"{base}/schema/openapi.json").json()
    call("GET", f"{base}/schema/swagger")
    driven = 0
    for template, operations in schema["paths"].items():
        for name in ("default", "analytics", "nope"):
            path = re.sub(r"\{name\}", name, template)
            path = re.sub(r"\{[^}]+\}", "x", path)
            for method in operations:
                if method not in {"get", "post", "put", "patch", "delete"}:
                    continue
                driven += 1
                for headers in credentials:
                    if method == "get":
                        call("GET", f"{base}{path}", headers=headers)
                        continue
                    bodies = EXECUTE_BODIES if path.endswith("/execute") else [{}, [], b"[{"]
                    for body in bodies if headers is credentials[0] else bodies[:2]:
                        kwargs: dict[str, Any] = (
                            {"content": body} if isinstance(body, bytes) else {"json": body}
                        )
                        call(
                            method.upper(),
                            f"{base}{path}",
                            headers={**headers, "content-type": "application/json"},
                            **kwargs,
                        )
    return driven


def _drive_everything(call: Recorder, fleet: ProcessFleet) -> None:
    credentials = _credentials()
    assert _drive_schema(call, fleet.gateway, credentials) >= 10
    for role in BUILTIN_ROLES:
        if role in fleet.processes:
            assert _drive_schema(call, fleet.url(role), credentials[:5]) >= 6
    for path in ("/livez", "/readyz", "/database/health/cached"):
        call("GET", f"{fleet.gateway}{path}", headers=credentials[0])


def wait_health(call: Recorder, fleet: ProcessFleet, role: str, status: str) -> None:
    """Until both the live and the cached health of ``role`` say ``status``: the cached one
    alone may still show the process that was there before, and the gateway logs a change
    only once its background check has seen it."""
    headers = _credentials()[0]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        live = call("GET", f"{fleet.gateway}/database/{role}/health", headers=headers)
        cached = call("GET", f"{fleet.gateway}/database/health/cached", headers=headers)
        if live.json()["status"] == status == cached.json()[role]["status"]:
            return
    pytest.fail(f"{role} never turned {status}")


def test_no_secret_in_any_response_or_log_line(
    fleet: ProcessFleet, spare_cluster: EmbeddedPostgres, tmp_path: Path
) -> None:
    roles = get_roles()
    spare_env = spare_cluster.environment({"archive": roles["archive"]})
    migrations.upgrade(
        roles["archive"], "head", load_settings(spare_env, roles).databases["archive"]
    )
    secrets = _secrets(fleet, spare_env)
    call = Recorder()

    _drive_everything(call, fleet)
    # A service gone: the gateway reports it (and logs why).
    fleet.stop("analytics", signal.SIGKILL)
    _drive_everything(call, fleet)
    fleet.start("analytics")
    # A database gone under a running service: the service's errors are logged too.
    fleet.stop("archive")
    fleet.start("archive", spare_env)
    wait_health(call, fleet, "archive", "healthy")  # so its database going away is logged
    spare_cluster.stop()
    wait_health(call, fleet, "archive", "unhealthy")
    _drive_everything(call, fleet)
    cli = subprocess.run(
        [sys.executable, "-m", "multidb.cli", "health", "--url", fleet.gateway],
        env={**fleet.env, "MULTI_DB_LOG_LEVEL": "DEBUG"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cli.returncode == 1, cli.stderr  # archive is down
    fleet.stop("archive")
    fleet.start("archive")
    call.client.close()

    statuses = {response.status_code for _, response in call.responses}
    assert {200, 400, 401, 403, 404, 503, 504} <= statuses, statuses
    assert len(call.responses) > 500

    found = []
    for what, text in [*call.texts(), ("multidb health", cli.stdout + cli.stderr)]:
        found += [f"{name} in the answer to {what}" for name, v in secrets.items() if v in text]
    logs = sorted(fleet.logs.glob("*.log"))
    assert [path.stem for path in logs] == sorted([*BUILTIN_ROLES, GATEWAY])
    levels: set[str] = set()
    unhealthy: list[tuple[str, str]] = []
    for path in logs:
        lines = log_lines(path)
        assert lines, f"{path.name} is empty"
        levels |= {line["level"] for line in lines}
        unhealthy += [
            (line["target_role"], line["error"])
            for line in lines
            if line["event"] == "role unhealthy"
        ]
        text = path.read_text()
        found += [f"{name} in {path.name}" for name, v in secrets.items() if v in text]
    assert found == []
    assert {"info", "warning"} <= levels, levels
    # The failures were logged, with what was wrong: the scan read real error lines.
    assert ("analytics", "service unreachable: connection refused") in unhealthy, unhealthy
    database_errors = [error for role, error in unhealthy if role == "archive"]
    assert any("unreachable" not in error for error in database_errors), unhealthy
