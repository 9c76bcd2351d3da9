"""Backups through the gateway: ``/database/{name}/backups...`` forwarded to the role's
service. Real processes (four services and the gateway), real PostgreSQL, real
pg_dump/pg_restore; every wait polls a condition with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ADMIN, bearer
from tests.fleet import ProcessFleet
from tests.processes import poll

WAIT_S = 60.0
PROBLEM = "application/problem+json"
UNKNOWN_ID = "0123456789ab"
MALFORMED = "malformed backup id"
WHAT_AN_ID_IS = "an id is 12 lowercase hex digits"


@pytest.fixture(scope="module")
def fleet(
    database_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProcessFleet]:
    logs = tmp_path_factory.mktemp("gateway-backups-logs")
    folder = tmp_path_factory.mktemp("gateway-backups")
    with ProcessFleet(database_env, logs, MULTI_DB_BACKUP_DIR=str(folder)).running() as running:
        yield running


@pytest.fixture(scope="module")
def client(fleet: ProcessFleet) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fleet.gateway, timeout=10) as http:
        yield http


def _manifest(client: httpx.Client, role: str, backup_id: str) -> dict[str, Any]:
    answer = client.get(f"/database/{role}/backups/{backup_id}", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    manifest: dict[str, Any] = answer.json()
    assert (manifest["id"], manifest["role"]) == (backup_id, role)
    return manifest


def _until(client: httpx.Client, role: str, backup_id: str, field: str) -> dict[str, Any]:
    """The manifest once ``field`` (``verification``, ``last_drill``) is set, or it failed."""

    def done() -> dict[str, Any] | None:
        manifest = _manifest(client, role, backup_id)
        finished = manifest["status"] == "failed" or manifest.get(field) is not None
        return manifest if finished else None

    found: dict[str, Any] = poll(done, f"{field} of backup {backup_id} of {role}", WAIT_S)
    return found


def _start(client: httpx.Client, role: str) -> str:
    answer = client.post(f"/database/{role}/backups", headers=ADMIN)
    assert answer.status_code == 202, answer.text
    started = answer.json()
    assert started["role"] == role
    assert started["operation"] == "backup"
    assert started["status"] == "running"
    backup_id: str = started["id"]
    return backup_id


def _idle(client: httpx.Client, role: str) -> None:
    """Wait until no backup operation of ``role`` runs (before the next test starts one)."""

    def idle() -> bool:
        info = client.get("/database/backup/info", headers=ADMIN).json()
        return info[role]["backups"]["running"] is None

    poll(idle, f"no backup operation of {role} running", WAIT_S)


def test_a_backup_through_the_gateway_is_verified_listed_and_drilled(
    client: httpx.Client, fleet: ProcessFleet
) -> None:
    backup_id = _start(client, "default")
    manifest = _until(client, "default", backup_id, "verification")
    assert manifest["status"] == "ok", manifest
    assert manifest["trigger"] == "api"
    assert manifest["verification"]["passed"] is True, manifest["verification"]
    assert manifest["size_bytes"] > 0

    listed = client.get("/database/default/backups", headers=ADMIN)
    assert listed.status_code == 200, listed.text
    assert listed.headers["content-type"] == "application/json"
    assert listed.json()["role"] == "default"
    assert backup_id in [backup["id"] for backup in listed.json()["backups"]]
    _idle(client, "default")

    drill = client.post(f"/database/default/backups/{backup_id}/drill", headers=ADMIN)
    assert drill.status_code == 202, drill.text
    assert drill.json() == {
        "id": backup_id,
        "role": "default",
        "operation": "drill",
        "status": "running",
    }
    drilled = _until(client, "default", backup_id, "last_drill")
    assert drilled["last_drill"]["passed"] is True, drilled["last_drill"]
    assert drilled["last_drill"]["differences"] == []
    _idle(client, "default")

    # The drill's result is a record in the logging role's database too, and the manifest
    # knows the logging service took it.
    drill_id = drilled["last_drill"]["drill_id"]

    def recorded() -> dict[str, Any] | None:
        answer = httpx.get(
            f"{fleet.url('logging')}/backups/drills", params={"role": "default"}, headers=ADMIN
        )
        assert answer.status_code == 200, answer.text
        return next((d for d in answer.json()["drills"] if d["drill_id"] == drill_id), None)

    record = poll(recorded, f"drill {drill_id} recorded by the logging service", WAIT_S)
    assert (record["backup_id"], record["passed"]) == (backup_id, True)
    assert _manifest(client, "default", backup_id)["last_drill"]["recorded"] is True

    verify = client.post(f"/database/default/backups/{backup_id}/verify", headers=ADMIN)
    assert verify.status_code == 202, verify.text
    assert verify.json()["operation"] == "verify"
    _idle(client, "default")

    info = client.get("/database/backup/info", headers=ADMIN)
    assert info.status_code == 200
    state = info.json()["default"]["backups"]
    assert state["schedule"] == "off"  # the tests' setting: only what the API starts
    last = state["last_backup"]
    assert last["id"] == backup_id
    assert last["verified"] is True
    assert last["size_bytes"] == manifest["size_bytes"]
    assert last["last_drill"]["passed"] is True
    assert state["last_failure"] is None


def test_unknown_database_unknown_and_malformed_ids(client: httpx.Client) -> None:
    for method, path in (
        ("GET", "/database/nosuch/backups"),
        ("POST", "/database/nosuch/backups"),
        ("GET", f"/database/nosuch/backups/{UNKNOWN_ID}"),
        ("POST", f"/database/nosuch/backups/{UNKNOWN_ID}/verify"),
        ("POST", "/database/nosuch/backups/not-an-id/drill"),
    ):
        answer = client.request(method, path, headers=ADMIN)
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.headers["content-type"] == PROBLEM
        assert "unknown database 'nosuch'" in answer.json()["detail"]

    # An id of the right form that names no backup: the service's own 404, passed on.
    for method, suffix in (("GET", ""), ("POST", "/verify"), ("POST", "/drill")):
        answer = client.request(
            method, f"/database/archive/backups/{UNKNOWN_ID}{suffix}", headers=ADMIN
        )
        assert answer.status_code == 404, (suffix, answer.text)
        assert answer.headers["content-type"] == PROBLEM
        problem = answer.json()
        assert problem["status"] == 404
        assert problem["detail"] == f"role 'archive' has no backup '{UNKNOWN_ID}'"

    # Checked at the gateway: never sent on, and said the way the service says it.
    for bad in ("0123456789AB", "0123456789abc", "0123456789a", "zzzzzzzzzzzz", "%2e%2e"):
        for method, suffix in (("GET", ""), ("POST", "/verify"), ("POST", "/drill")):
            answer = client.request(
                method, f"/database/archive/backups/{bad}{suffix}", headers=ADMIN
            )
            assert answer.status_code == 400, (bad, suffix, answer.text)
            assert answer.headers["content-type"] == PROBLEM
            detail = answer.json()["detail"]
            assert detail.startswith(MALFORMED), detail
            assert detail.endswith(WHAT_AN_ID_IS), detail


def test_a_second_start_while_one_runs_is_a_409(fleet: ProcessFleet) -> None:
    async def both() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=fleet.gateway, timeout=10) as http:
            return list(
                await asyncio.gather(
                    http.post("/database/analytics/backups", headers=ADMIN),
                    http.post("/database/analytics/backups", headers=ADMIN),
                )
            )

    answers = asyncio.run(both())
    assert sorted(answer.status_code for answer in answers) == [202, 409], [
        answer.text for answer in answers
    ]
    started = next(answer for answer in answers if answer.status_code == 202).json()
    refused = next(answer for answer in answers if answer.status_code == 409)
    assert refused.headers["content-type"] == PROBLEM
    assert refused.json()["status"] == 409
    assert "a backup operation of role 'analytics' is running" in refused.json()["detail"]

    with httpx.Client(base_url=fleet.gateway, timeout=10) as client:
        # A drill of a backup still being written is refused too.
        early = client.post(f"/database/analytics/backups/{started['id']}/drill", headers=ADMIN)
        if early.status_code != 202:  # the backup may already be complete
            assert early.status_code == 409, early.text
        manifest = _until(client, "analytics", started["id"], "verification")
        assert manifest["status"] == "ok", manifest
        _idle(client, "analytics")


def test_db_admin_on_the_named_database_is_needed(client: httpx.Client) -> None:
    paths = [
        ("GET", "/database/default/backups"),
        ("POST", "/database/default/backups"),
        ("GET", f"/database/default/backups/{UNKNOWN_ID}"),
        ("POST", f"/database/default/backups/{UNKNOWN_ID}/verify"),
        ("POST", f"/database/default/backups/{UNKNOWN_ID}/drill"),
    ]
    for scopes in (("db:admin:analytics",), ("db:read", "db:execute", "db:write")):
        for method, path in paths:
            answer = client.request(method, path, headers=bearer(*scopes))
            assert answer.status_code == 403, (scopes, method, path, answer.text)
            assert "db:admin" in answer.json()["detail"]
    assert client.get("/database/default/backups").status_code == 401

    # db:admin:default reaches the service, which checks the same credentials.
    mine = bearer("db:admin:default")
    listed = client.get("/database/default/backups", headers=mine)
    assert listed.status_code == 200, listed.text
    assert listed.json()["role"] == "default"
    unknown = client.get(f"/database/default/backups/{UNKNOWN_ID}", headers=mine)
    assert unknown.status_code == 404, unknown.text
    assert client.get("/database/default/backups", headers=bearer("db:admin")).status_code == 200


def test_a_service_that_is_down_is_a_503_and_calls_are_counted_by_route(
    fleet: ProcessFleet, client: httpx.Client
) -> None:
    fleet.stop("archive")
    try:
        for method, path in (
            ("GET", "/database/archive/backups"),
            ("POST", "/database/archive/backups"),
            ("GET", f"/database/archive/backups/{UNKNOWN_ID}"),
        ):
            answer = client.request(method, path, headers=ADMIN)
            assert answer.status_code == 503, (method, path, answer.text)
            assert answer.headers["content-type"] == PROBLEM
            assert "the archive service unreachable" in answer.json()["detail"]
    finally:
        fleet.start("archive")

    # The metrics name the service's route, never an id asked for.
    text = client.get("/metrics").text
    paths = {
        sample.labels["path"]
        for family in text_string_to_metric_families(text)
        if family.name == "multidb_gateway_service_call_duration_seconds"
        for sample in family.samples
    }
    assert {"/backups", "/backups/{id}"} <= paths
    assert not any(UNKNOWN_ID in path for path in paths), paths


def test_options_lists_every_method_of_the_path(client: httpx.Client) -> None:
    answer = client.options("/database/default/backups")
    assert answer.status_code == 204
    assert answer.headers["allow"] == "GET, OPTIONS, POST"
    assert client.options("/database/default/health").headers["allow"] == "GET, OPTIONS"
