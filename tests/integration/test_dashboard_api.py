"""The dashboard's page and assets, and the recent-audit endpoints it reads.

Real processes (four services and the gateway), real PostgreSQL, real HTTP. Every wait
polls a condition with a deadline.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN, bearer
from tests.fleet import ProcessFleet
from tests.processes import poll

READ_ONLY = bearer("db:read")


@pytest.fixture(scope="module")
def fleet(
    database_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProcessFleet]:
    logs = tmp_path_factory.mktemp("dashboard-api")
    with ProcessFleet(database_env, logs).running() as running:
        yield running


def execute(fleet: ProcessFleet, query: str) -> str:
    """Run ``query`` through the gateway; the request id its audit record carries."""
    request_id = f"dash-{uuid.uuid4().hex[:12]}"
    answer = httpx.post(
        f"{fleet.gateway}/database/default/execute",
        json={"query": query},
        headers={**ADMIN, "X-Request-ID": request_id},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return request_id


def recent(fleet: ProcessFleet, **params: Any) -> httpx.Response:
    return httpx.get(
        f"{fleet.gateway}/database/audit/recent", params=params, headers=ADMIN, timeout=10
    )


def test_the_page_and_its_assets_need_no_credential_and_allow_only_self(
    fleet: ProcessFleet,
) -> None:
    page = httpx.get(f"{fleet.gateway}/dashboard", timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "default-src 'none'" in policy
    assert "unsafe" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    # Every script is a file of the gateway's: nothing inline for the policy to allow.
    scripts = re.findall(r"<script[^>]*>", page.text)
    assert scripts
    assert all(re.search(r'src="/dashboard/static/', tag) for tag in scripts)
    assert "http://" not in page.text
    assert "https://" not in page.text
    for asset in (
        "dashboard.js",
        "dashboard.css",
        "vendor/uplot/uPlot.iife.min.js",
        "vendor/uplot/uPlot.min.css",
        "vendor/uplot/LICENSE",
    ):
        answer = httpx.get(f"{fleet.gateway}/dashboard/static/{asset}", timeout=10)
        assert answer.status_code == 200, asset
        assert "content-security-policy" in answer.headers
    missing = httpx.get(f"{fleet.gateway}/dashboard/static/../dashboard.py", timeout=10)
    assert missing.status_code == 404
    # The exclusion is the dashboard's own paths, not a prefix of others.
    assert httpx.get(f"{fleet.gateway}/dashboards", timeout=10).status_code in {401, 404}


def test_recent_audit_lists_an_execute_newest_first(fleet: ProcessFleet) -> None:
    first = execute(fleet, "SELECT 1 AS dashboard_first")
    second = execute(fleet, "SELECT 2 AS dashboard_second")

    def both() -> list[dict[str, Any]] | None:
        answer = recent(fleet, limit=50)
        assert answer.status_code == 200, answer.text
        records: list[dict[str, Any]] = answer.json()["records"]
        ids = [record["request_id"] for record in records]
        return records if first in ids and second in ids else None

    records = poll(both, "both executes in /database/audit/recent")
    ids = [record["request_id"] for record in records]
    assert ids.index(second) < ids.index(first)
    times = [record["created_at"] for record in records]
    assert times == sorted(times, reverse=True)
    mine = records[ids.index(second)]
    assert mine["outcome"] == "allowed"
    assert mine["target_role"] == "default"
    assert mine["query_preview"] == "SELECT 2 AS dashboard_second"
    assert mine["status_code"] == 200

    assert len(recent(fleet, limit=1).json()["records"]) == 1
    assert len(recent(fleet).json()["records"]) <= 20


def test_recent_audit_needs_admin_and_a_sane_limit(fleet: ProcessFleet) -> None:
    url = f"{fleet.gateway}/database/audit/recent"
    assert httpx.get(url, timeout=10).status_code == 401
    refused = httpx.get(url, headers=READ_ONLY, timeout=10)
    assert refused.status_code == 403
    assert "db:admin" in refused.json()["detail"]
    for limit in ("0", "201", "-1", "many"):
        answer = recent(fleet, limit=limit)
        assert answer.status_code == 400, (limit, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
    # The logging service checks its callers too.
    service = f"{fleet.url('logging')}/audit/access"
    assert httpx.get(service, headers=READ_ONLY, timeout=10).status_code == 403
    assert httpx.get(service, params={"limit": 1}, headers=ADMIN, timeout=10).status_code == 200


def test_recent_audit_is_503_while_logging_is_down(fleet: ProcessFleet) -> None:
    fleet.stop("logging")
    try:
        answer = recent(fleet)
        assert answer.status_code == 503
        assert "logging service" in answer.json()["detail"]
    finally:
        fleet.start("logging")
    assert recent(fleet).status_code == 200
