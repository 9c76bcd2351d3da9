"""The whole stack as real processes with TLS on (every role ``verify-full`` to its database):
execute on every role, read every endpoint, fail on purpose, then scan every log line and
every response body for secrets (database passwords, the execute logins' passwords, private
keys, the JWT secret, the API key, the token used): 0 found."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from multidb.execute_logins import derive_logins
from multidb.roles import RoleSpec
from multidb.settings import Settings, variable_name
from multidb_devstack.embedded import EmbeddedPostgres
from tests.conftest import ADMIN, API_KEY, BUILTIN_ROLES, JWT_SECRET, token
from tests.fleet import ProcessFleet

PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")


def _key_material(path: Path) -> list[str]:
    """The base64 lines of a PEM private key: none of them may show up anywhere."""
    return [line for line in path.read_text().splitlines() if line and "-----" not in line]


def _exercise(fleet: ProcessFleet, client: httpx.Client, bearer: str, bodies: list[str]) -> None:
    """Every endpoint of the gateway and the services, executes that work and that fail."""

    def call(method: str, url: str, **options: Any) -> httpx.Response:
        response = client.request(method, url, **options)
        bodies.append(f"{response.headers}\n{response.text}")
        return response

    for path in (
        "/readyz",
        "/database/health",
        "/database/health/cached",
        "/database/stats",
        "/database/configured",
        "/database/models",
        "/database/backup/info",
        "/metrics",
    ):
        assert call("GET", path, headers=ADMIN).status_code == 200, path
    for role in BUILTIN_ROLES:
        url = f"/database/{role}/execute"
        answer = call("POST", url, json={"query": "SELECT current_user, version()"}, headers=ADMIN)
        assert answer.status_code == 200, answer.text
        assert answer.json()["result"][0][0].endswith("_reader")
        with_token = {"Authorization": f"Bearer {bearer}"}
        answer = call("POST", url, json={"query": "SELECT 1"}, headers=with_token)
        assert answer.status_code == 200, answer.text
        # Failures on purpose: the password hashes, DDL as the writer, a bad statement.
        for body in (
            {"query": "SELECT rolpassword FROM pg_authid"},
            {"query": "CREATE TABLE leak_probe (x int)", "read_only": False},
            {"query": "SELEC 1"},
        ):
            assert call("POST", url, json=body, headers=ADMIN).status_code == 400
        for kind in ("health", "stats", "models"):
            assert call("GET", f"/database/{role}/{kind}", headers=ADMIN).is_success
        # The service itself, too.
        service = fleet.url(role)
        for path in ("/backup/info", "/health", "/readyz", "/metrics"):
            assert call("GET", f"{service}{path}", headers=ADMIN).is_success, path
    assert call("GET", "/database/health", headers={"X-API-Key": "no"}).status_code == 401
    bad_token = {"Authorization": "Bearer not.a.token"}
    assert call("GET", "/database/health", headers=bad_token).status_code == 401


@pytest.mark.timeout(300)
def test_the_stack_with_tls_leaks_no_secret_into_logs_or_responses(
    database_env: dict[str, str],
    settings: Settings,
    roles: dict[str, RoleSpec],
    embedded: EmbeddedPostgres | None,
    tmp_path: Path,
) -> None:
    if embedded is not None:
        for role in BUILTIN_ROLES:
            assert database_env[variable_name(roles[role], "sslmode")] == "verify-full"
            assert database_env[variable_name(roles[role], "sslrootcert")] == str(embedded.ca_file)
    logs = tmp_path / "logs"
    logs.mkdir()
    fleet = ProcessFleet(database_env, logs)
    bearer = token("db:read", "db:execute")
    bodies: list[str] = []
    with fleet.running(), httpx.Client(base_url=fleet.gateway, timeout=30) as client:
        _exercise(fleet, client, bearer, bodies)

    # The processes have stopped: their logs are complete.
    log_texts = {path.name: path.read_text(errors="replace") for path in logs.iterdir()}
    if embedded is not None:
        log_texts["tls-front.log"] = (embedded.folder / "tls-front.log").read_text(errors="replace")
    for name in [*BUILTIN_ROLES, "gateway"]:
        assert log_texts[f"{name}.log"].strip(), f"{name} logged nothing: the scan would be empty"
    lines = [line for text in log_texts.values() for line in text.splitlines()]

    secrets = {"API key": API_KEY, "JWT secret": JWT_SECRET, "bearer token": bearer}
    for role, database in settings.databases.items():
        secrets[f"{role} database password"] = database.password
        logins = derive_logins(database)
        secrets[f"{role} reader password"] = logins.reader.password
        secrets[f"{role} writer password"] = logins.writer.password
    if embedded is not None:
        for key_file in (embedded.ca_key_file, embedded.server_key_file):
            for number, line in enumerate(_key_material(key_file)):
                secrets[f"{key_file.name} line {number}"] = line
    assert all(secrets.values())

    found = [
        f"{what} in {where}"
        for where, text in [*(("log", line) for line in lines), *(("response", b) for b in bodies)]
        for what, secret in secrets.items()
        if secret in text
    ]
    found += [
        f"a private key in a {where}"
        for where, text in [*(("log", line) for line in lines), *(("response", b) for b in bodies)]
        if PRIVATE_KEY.search(text)
    ]
    assert found == [], found
    # The scan saw real traffic: a line per execute at least, and every answer.
    assert len(lines) > 20
    assert len(bodies) > 50
