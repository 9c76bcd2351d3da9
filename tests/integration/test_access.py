"""Per-database access control end to end: named keys from the keys file (made by the
``multidb key`` command), tokens chosen a secret by ``kid``, real service processes, the
gateway, real PostgreSQL, real HTTP. Every wait polls a condition with a deadline.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from multidb.auth import mint_token
from tests.conftest import ADMIN, BUILTIN_ROLES
from tests.fleet import ProcessFleet
from tests.processes import poll

NEW = "newest-jwt-secret-of-at-least-32-characters"
OLD = "older-jwt-secret-of-at-least-32-characters!"
ROTATING = f"new:{NEW},old:{OLD}"
MULTIDB = str(Path(sys.executable).parent / "multidb")


def multidb(keys_file: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The ``multidb`` command as a process, with the fleet's keys file and JWT secrets."""
    return subprocess.run(
        [MULTIDB, *argv],
        env={
            **os.environ,
            "MULTI_DB_ENV_FILE": os.devnull,
            "MULTI_DB_API_KEYS_FILE": str(keys_file),
            "JWT_SECRETS": ROTATING,
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def create_key(keys_file: Path, name: str, scopes: str) -> str:
    made = multidb(keys_file, "key", "create", name, "--scopes", scopes)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


class Keys:
    """The fleet's keys file and the keys made into it before the fleet started."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.analyst = create_key(path, "analyst", "db:read:analytics,db:execute:analytics")
        self.archivist = create_key(path, "archivist", "db:read:archive,db:admin:archive")
        self.runner = create_key(path, "runner", "db:execute:analytics")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys(tmp_path_factory.mktemp("access-keys") / "keys.toml")


@pytest.fixture(scope="module")
def fleet(
    database_env: dict[str, str], keys: Keys, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProcessFleet]:
    logs = tmp_path_factory.mktemp("access-logs")
    # No MULTI_DB_SERVICE_SECRET: the gateway signs its own calls with the newest kid.
    with ProcessFleet(
        database_env,
        logs,
        MULTI_DB_API_KEYS_FILE=str(keys.path),
        JWT_SECRETS=ROTATING,
    ).running() as running:
        yield running


def key(value: str) -> dict[str, str]:
    return {"X-API-Key": value}


def bearer_with(kid: str, secret: str, *scopes: str, subject: str = "tester") -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(secret, subject, scopes, kid=kid)}"}


def get(url: str, headers: dict[str, str], **params: Any) -> httpx.Response:
    return httpx.get(url, headers=headers, params=params, timeout=10)


def execute(
    fleet: ProcessFleet, role: str, headers: dict[str, str], *, read_only: bool = True
) -> tuple[httpx.Response, str]:
    request_id = f"access-{uuid.uuid4().hex[:12]}"
    answer = httpx.post(
        f"{fleet.gateway}/database/{role}/execute",
        json={"query": "SELECT 1 AS one", "read_only": read_only},
        headers={**headers, "X-Request-ID": request_id},
        timeout=10,
    )
    return answer, request_id


def audit_record(fleet: ProcessFleet, request_id: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        answer = get(f"{fleet.gateway}/database/audit/recent", ADMIN, limit=200)
        assert answer.status_code == 200, answer.text
        records: list[dict[str, Any]] = answer.json()["records"]
        return next((r for r in records if r["request_id"] == request_id), None)

    record: dict[str, Any] = poll(found, f"the audit record of {request_id}")
    return record


def test_a_key_scoped_to_analytics_executes_there_and_nowhere_else(
    fleet: ProcessFleet, keys: Keys
) -> None:
    analyst = key(keys.analyst)
    answer, _ = execute(fleet, "analytics", analyst)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["columns"], answer.json()["result"]) == (["one"], [[1]])

    refused, _ = execute(fleet, "default", analyst)
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "'db:execute' or 'db:execute:default'" in refused.json()["detail"]
    writing, _ = execute(fleet, "analytics", analyst, read_only=False)
    assert writing.status_code == 403
    assert "'db:write' or 'db:write:analytics'" in writing.json()["detail"]

    gateway = fleet.gateway
    for path in ("health", "stats", "models", "stats/history"):
        assert get(f"{gateway}/database/analytics/{path}", analyst).status_code == 200, path
        assert get(f"{gateway}/database/default/{path}", analyst).status_code == 403, path
    # A role service checks its own role; analytics' history checks the database asked about.
    assert get(f"{fleet.url('analytics')}/health", analyst).status_code == 200
    assert get(f"{fleet.url('default')}/health", analyst).status_code == 403
    history = f"{fleet.url('analytics')}/stats/history"
    assert get(history, analyst, database="analytics").status_code == 200
    assert get(history, analyst, database="default").status_code == 403
    # Executing needs no db:read; reading needs no db:execute.
    runner = key(keys.runner)
    assert execute(fleet, "analytics", runner)[0].status_code == 200
    assert get(f"{gateway}/database/analytics/health", runner).status_code == 403


def test_aggregates_show_only_the_databases_the_caller_may_read(
    fleet: ProcessFleet, keys: Keys
) -> None:
    gateway, analyst = fleet.gateway, key(keys.analyst)
    health = get(f"{gateway}/database/health", analyst)
    assert health.status_code == 200, health.text
    assert list(health.json()) == ["analytics"]
    assert list(get(f"{gateway}/database/stats", analyst).json()) == ["analytics"]
    assert get(f"{gateway}/database/configured", analyst).json() == {"databases": ["analytics"]}
    assert list(get(f"{gateway}/database/models", analyst).json()) == ["analytics"]
    cached = get(f"{gateway}/database/health/cached", analyst)
    assert cached.status_code in {200, 503}
    assert list(cached.json()) == ["analytics"]
    # Administration is a scope of its own, per database as well.
    assert get(f"{gateway}/database/backup/info", analyst).status_code == 403
    backup = get(f"{gateway}/database/backup/info", key(keys.archivist))
    assert backup.status_code == 200, backup.text
    assert list(backup.json()) == ["archive"]

    # A caller who may read no configured database is refused, not shown an empty fleet.
    for headers in (key(keys.runner), bearer_with("new", NEW, "db:read:nosuchrole")):
        for path in ("health", "health/cached", "stats", "configured", "models"):
            refused = get(f"{gateway}/database/{path}", headers)
            assert refused.status_code == 403, (path, refused.text)
            assert "db:read" in refused.json()["detail"]
    # API_KEYS still hold every scope on every database.
    assert list(get(f"{gateway}/database/health", ADMIN).json()) == BUILTIN_ROLES
    assert list(get(f"{gateway}/database/backup/info", ADMIN).json()) == BUILTIN_ROLES


def test_the_openapi_document_says_aggregates_filter(fleet: ProcessFleet) -> None:
    paths = httpx.get(f"{fleet.gateway}/schema/openapi.json", timeout=10).json()["paths"]
    for path in ("health", "health/cached", "stats", "configured", "models", "backup/info"):
        description = paths[f"/database/{path}"]["get"]["description"]
        assert "Filtered, not refused: only the databases the caller may" in description, path
        assert "none of the configured databases gets 403" in description, path
    recent = paths["/database/audit/recent"]["get"]["description"]
    assert "Filtered, not refused" in recent


def test_every_audit_record_names_the_key_or_the_token_subject(
    fleet: ProcessFleet, keys: Keys
) -> None:
    allowed, allowed_id = execute(fleet, "analytics", key(keys.analyst))
    assert allowed.status_code == 200
    refused, refused_id = execute(fleet, "default", key(keys.analyst))
    assert refused.status_code == 403
    token = bearer_with("new", NEW, "db:execute:archive", subject="nightly-report")
    by_token, token_id = execute(fleet, "archive", token)
    assert by_token.status_code == 200, by_token.text

    record = audit_record(fleet, allowed_id)
    assert (record["principal"], record["auth_method"]) == ("api-key:analyst", "api_key")
    assert record["outcome"] == "allowed"
    record = audit_record(fleet, refused_id)
    assert (record["principal"], record["outcome"]) == ("api-key:analyst", "refused")
    assert record["target_role"] == "default"
    record = audit_record(fleet, token_id)
    assert (record["principal"], record["auth_method"]) == ("nightly-report", "jwt")
    for value in (keys.analyst, NEW):
        assert value not in str(record)

    # An admin of one database sees that database's records only; no admin, none.
    mine = get(f"{fleet.gateway}/database/audit/recent", key(keys.archivist), limit=200)
    assert mine.status_code == 200, mine.text
    records = mine.json()["records"]
    assert token_id in [r["request_id"] for r in records]
    assert {r["target_role"] for r in records} == {"archive"}
    assert (
        len(
            get(f"{fleet.gateway}/database/audit/recent", key(keys.archivist), limit=1).json()[
                "records"
            ]
        )
        == 1
    )
    assert get(f"{fleet.gateway}/database/audit/recent", key(keys.analyst)).status_code == 403


def test_keys_file_round_trip_through_the_cli_against_running_processes(
    fleet: ProcessFleet, keys: Keys
) -> None:
    made = create_key(keys.path, "temporary", "db:read:default")
    health = f"{fleet.gateway}/database/default/health"
    service = f"{fleet.url('default')}/health"
    # No restart: the processes see the file change on the next request.
    assert get(health, key(made)).status_code == 200
    assert get(service, key(made)).status_code == 200
    assert get(f"{fleet.gateway}/database/analytics/health", key(made)).status_code == 403

    listed = multidb(keys.path, "key", "list")
    assert listed.returncode == 0, listed.stderr
    names = [line.split()[0] for line in listed.stdout.splitlines()[1:]]
    assert names == ["analyst", "archivist", "runner", "temporary"]
    assert "db:read:default" in listed.stdout
    assert made not in listed.stdout
    assert made[5:12] not in listed.stdout

    revoked = multidb(keys.path, "key", "revoke", "temporary")
    assert revoked.returncode == 0, revoked.stderr
    for url in (health, service):
        refused = get(url, key(made))
        assert refused.status_code == 401
        assert refused.json()["detail"] == "invalid API key"
    assert get(f"{fleet.gateway}/database/analytics/health", key(keys.analyst)).status_code == 200


def test_token_rotation_old_kid_valid_until_removed_unknown_kid_refused(
    fleet: ProcessFleet, keys: Keys
) -> None:
    minted = multidb(keys.path, "token", "--scopes", "db:read:analytics", "--subject", "rotor")
    assert minted.returncode == 0, minted.stderr
    newest = minted.stdout.strip()
    assert jwt.get_unverified_header(newest)["kid"] == "new"
    url = f"{fleet.gateway}/database/analytics/health"
    new = {"Authorization": f"Bearer {newest}"}
    old = bearer_with("old", OLD, "db:read:analytics")
    assert get(url, new).status_code == 200
    assert get(url, old).status_code == 200
    unknown = get(url, bearer_with("elsewhere", OLD, "db:read:analytics"))
    assert unknown.status_code == 401
    assert unknown.json()["detail"].startswith("invalid token: unknown key id (kid) 'elsewhere'")

    # The old secret is removed: its tokens stop working, the newest one's keep working.
    fleet.stop("gateway")
    fleet.start("gateway", {"JWT_SECRETS": f"new:{NEW}"})
    try:
        assert get(url, new).status_code == 200
        refused = get(url, old)
        assert refused.status_code == 401
        assert refused.json()["detail"].startswith("invalid token: unknown key id (kid) 'old'")
        assert OLD not in refused.text
    finally:
        fleet.stop("gateway")
        fleet.start("gateway")


def test_a_services_cross_database_routes_need_the_scope_on_every_database(
    fleet: ProcessFleet,
) -> None:
    # The audit trail and the stats samples speak of every database: a per-database admin
    # of the service's own role may neither read nor write them, and a database named
    # twice in a query is refused rather than checked once and used the other time.
    kid, secret = "new", NEW
    logging_admin = bearer_with(kid, secret, "db:admin:logging")
    analytics_admin = bearer_with(kid, secret, "db:admin:analytics")
    default_reader = bearer_with(kid, secret, "db:read:default")
    assert get(f"{fleet.url('logging')}/audit/access", logging_admin).status_code == 403
    posted = httpx.post(
        f"{fleet.url('logging')}/audit/access", json=[], headers=logging_admin, timeout=10
    )
    assert posted.status_code == 403
    posted = httpx.post(
        f"{fleet.url('analytics')}/stats/samples", json=[], headers=analytics_admin, timeout=10
    )
    assert posted.status_code == 403
    history = f"{fleet.url('analytics')}/stats/history?database=default&database=analytics"
    twice = httpx.get(history, headers=default_reader, timeout=10)
    assert twice.status_code == 400, twice.text
    assert "give 'database' once" in twice.json()["detail"]
    once = get(f"{fleet.url('analytics')}/stats/history", default_reader, database="analytics")
    assert once.status_code == 403
    # The bare scope still reaches them.
    every = bearer_with(kid, secret, "db:admin")
    assert get(f"{fleet.url('logging')}/audit/access", every).status_code == 200
