"""The OpenAPI documents are the real contract: schemathesis, every check on, finds nothing.

It runs against a live gateway and a live role service (real processes, real PostgreSQL),
authenticated through the documents' own security schemes; its configuration lives beside
this file and says only what the contract says (execute answers a schema-valid body that
is not valid SQL with 400).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.archiving import own_databases
from tests.conftest import API_KEY, BUILTIN_ROLES
from tests.fleet import ProcessFleet

CONFIG = Path(__file__).with_name("schemathesis.toml")
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
MIN_CASES = 1000


@pytest.fixture(scope="module")
def fleet(
    database_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProcessFleet]:
    # Its own default and archive databases: the archive runs schemathesis starts may move
    # rows by id, which must not be the suite's.
    with (
        own_databases(database_env) as env,
        ProcessFleet(env, tmp_path_factory.mktemp("contract-logs")).running() as fleet,
    ):
        yield fleet


def _schemathesis(url: str, report: Path) -> dict[str, Any]:
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(CONFIG),
        "run",
        f"{url}/schema/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        "50",
        "--seed",
        "1",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    run = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "MULTIDB_TEST_API_KEY": API_KEY, "NO_COLOR": "1"},
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    result: dict[str, Any] = json.loads(report.read_text())
    return result


def test_schemathesis_finds_no_failure_in_the_gateway_or_a_service(
    fleet: ProcessFleet, tmp_path: Path
) -> None:
    cases = 0
    for name, url in (("gateway", fleet.gateway), ("default", fleet.url("default"))):
        report = _schemathesis(url, tmp_path / f"{name}.json")
        assert report["complete"], name
        assert report["test_cases"]["with_failures"] == 0, (name, report["failures"])
        assert report["errors"] == [], name
        cases += report["test_cases"]["generated"]
    assert cases >= MIN_CASES
    for role in BUILTIN_ROLES:  # and nothing it sent hurt the fleet
        assert httpx.get(f"{fleet.url(role)}/readyz", timeout=10).status_code == 200


def test_the_documents_let_a_client_authenticate_and_run_an_execute(
    fleet: ProcessFleet,
) -> None:
    gateway = httpx.get(f"{fleet.gateway}/schema/openapi.json", timeout=10).json()
    schemes = gateway["components"]["securitySchemes"]
    assert schemes["BearerToken"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": schemes["BearerToken"]["description"],
    }
    assert (schemes["ApiKey"]["type"], schemes["ApiKey"]["in"]) == ("apiKey", "header")
    assert schemes["ApiKey"]["name"] == "X-API-Key"
    execute = gateway["paths"]["/database/{name}/execute"]["post"]
    assert execute["security"] == [{"BearerToken": []}, {"ApiKey": []}]
    body = execute["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["query"]
    assert set(body["properties"]) == {"query", "params", "read_only", "consistency", "min_lsn"}
    name = next(p for p in execute["parameters"] if p["name"] == "name")
    assert name["schema"]["enum"] == BUILTIN_ROLES
    for status in ("400", "401", "403", "404", "413", "429", "503", "504"):
        assert "application/problem+json" in execute["responses"][status]["content"], status
    assert "security" not in gateway["paths"]["/livez"]["get"]
    # What the Swagger page sends once "Authorize" holds a key: it runs.
    answer = httpx.post(
        f"{fleet.gateway}/database/default/execute",
        json={"query": "SELECT 1 AS one", "params": {}},
        headers={"X-API-Key": API_KEY},
        timeout=10,
    )
    assert answer.json()["result"] == [[1]]
    assert httpx.get(f"{fleet.gateway}/schema/swagger", timeout=10).status_code == 200
