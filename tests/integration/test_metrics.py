"""``/metrics`` on the role services and the gateway: real apps, real PostgreSQL, real processes."""

from __future__ import annotations

import contextlib
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from multidb.metrics import PoolWatch
from multidb.settings import Settings
from multidb_devstack.embedded import free_port
from tests.conftest import ADMIN, BUILTIN_ROLES, bearer
from tests.fleet import GATEWAY, ProcessFleet

POOLS = {"admin", "reader", "writer"}


def samples(text: str) -> list[Sample]:
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def value(text: str, name: str, **labels: str) -> float:
    """The one sample called ``name`` whose labels include ``labels``."""
    found = [
        s.value for s in samples(text) if s.name == name and labels.items() <= s.labels.items()
    ]
    assert len(found) == 1, f"{name} {labels}: {found}"
    return found[0]


async def scrape(client: Any) -> str:
    answer = await client.get("/metrics", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    text: str = answer.text
    return text


async def test_a_service_exposes_its_database_pools_and_executes(service_client: Any) -> None:
    async with service_client("default") as client:
        role = {"role": "default"}
        before = await scrape(client)
        assert value(before, "multidb_database_up", **role) == 1
        assert value(before, "multidb_migration_at_head", **role) == 1
        assert value(before, "multidb_database_size_bytes", **role) > 0
        assert value(before, "multidb_database_tables", **role) >= 8
        assert value(before, "multidb_database_connections", **role) >= 1
        assert value(before, "multidb_database_commits_total", **role) > 0
        assert value(before, "multidb_database_deadlocks_total", **role) >= 0
        assert value(before, "multidb_database_temp_bytes_total", **role) >= 0
        assert 0 < value(before, "multidb_database_cache_hit_ratio", **role) <= 1
        assert value(before, "multidb_stats_sample_failures_total", **role) == 0
        assert value(before, "multidb_stats_sample_age_seconds", **role) >= 0
        pools = {
            s.labels["pool"]: s.value
            for s in samples(before)
            if s.name == "multidb_pool_max_connections"
        }
        assert set(pools) == POOLS
        assert all(size >= 1 for size in pools.values())
        for pool in POOLS:
            assert value(before, "multidb_pool_waiting_tasks", pool=pool, **role) == 0
            assert value(before, "multidb_pool_in_use_connections", pool=pool, **role) == 0

        ok = {"outcome": "ok", **role}
        sql_error = {"outcome": "sql_error", **role}
        query = {"query": "SELECT n FROM generate_series(1, 7) AS n", "params": {}}
        assert (await client.post("/execute", json=query, headers=ADMIN)).status_code == 200
        wrong = {"query": "SELECT * FROM no_such_table", "params": {}}
        assert (await client.post("/execute", json=wrong, headers=ADMIN)).status_code == 400
        assert (await client.get("/health", headers=ADMIN)).status_code == 200

        after = await scrape(client)
        count = "multidb_execute_requests_total"
        assert value(after, count, **ok) == value(before, count, **ok) + 1
        assert value(after, count, **sql_error) == value(before, count, **sql_error) + 1
        rows = "multidb_execute_rows_total"
        assert value(after, rows, **role) == value(before, rows, **role) + 7
        assert value(after, "multidb_execute_result_bytes_total", **role) >= len("[[1],[2]]")
        assert value(after, "multidb_execute_duration_seconds_count", **role) >= 2
        assert value(after, "multidb_health_check_duration_seconds_count", **role) >= 1
        served = {"role": "default", "method": "POST", "route": "/execute", "status": "400"}
        assert value(after, "multidb_http_requests_total", **served) >= 1


async def test_metrics_need_a_read_credential_off_loopback(
    service_client: Any, settings: Settings
) -> None:
    # The test client calls from "testclient", not a loopback address.
    async with service_client("analytics") as client:
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/metrics", headers=bearer("db:execute"))).status_code == 403
        assert (await client.get("/metrics", headers=bearer("db:read"))).status_code == 200
    strict = msgspec.structs.replace(settings, metrics_access="credential")
    async with service_client("analytics", strict) as client:
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/metrics", headers=bearer("db:read"))).status_code == 200


class RecordingWatch(PoolWatch):
    """The admin pool, recording every statement its connections run (a test hook)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.statements: list[str] = []

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        def record(query: Any) -> None:
            self.statements.append(query.query)

        async with super().acquire() as conn:
            conn.add_query_logger(record)
            try:
                yield conn
            finally:
                conn.remove_query_logger(record)


async def test_stats_per_request_never_scans_the_catalog(
    service_client: Any, settings: Settings
) -> None:
    """What grows with the tables (pg_class, pg_database_size) runs only in the sampler."""
    # One background round, at start-up: afterwards only the requests' own statements run.
    once = msgspec.structs.replace(settings, metrics_sample_s=3600.0)
    async with service_client("archive", once) as client:
        runtime = client.app.state.runtime
        first = (await client.get("/stats", headers=ADMIN)).json()
        assert first["table_count"] >= 3
        assert first["table_count_age_s"] >= 0
        assert first["database_size_age_s"] >= 0
        poll(lambda: runtime.sampler.last_duration_s is not None, "the first round ends")
        watch = RecordingWatch(runtime.admin)
        runtime.admin_watch = watch
        for _ in range(3):
            stats = (await client.get("/stats", headers=ADMIN)).json()
            assert stats["table_count"] == first["table_count"]
            await scrape(client)
        assert watch.statements, "the stats query itself is recorded"
        assert all("pg_class" not in sql for sql in watch.statements), watch.statements
        assert all("pg_database_size" not in sql for sql in watch.statements)


async def test_a_dead_database_shows_as_down_and_sample_failures(
    service_client: Any, settings: Settings
) -> None:
    database = msgspec.structs.replace(settings.databases["archive"], port=free_port())
    dead = msgspec.structs.replace(
        settings,
        databases={**settings.databases, "archive": database},
        metrics_sample_s=0.1,
        health_timeout_ms=300,
    )
    async with service_client("archive", dead) as client:
        deadline = time.monotonic() + 10
        while True:
            text = await scrape(client)
            if value(text, "multidb_stats_sample_failures_total", role="archive") >= 2:
                break
            assert time.monotonic() < deadline, text
        assert value(text, "multidb_database_up", role="archive") == 0
        assert (await client.get("/livez")).status_code == 200


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - our own URL
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def poll(condition: Callable[[], bool], what: str, within_s: float = 15) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_the_fleet_exposes_calls_errors_audit_and_bounded_routes(
    database_env: dict[str, str], tmp_path: Path
) -> None:
    fleet = ProcessFleet(database_env, tmp_path)
    with fleet.running():
        gateway = fleet.gateway
        # Loopback: no credential needed, on the gateway and on every service.
        for name in [*BUILTIN_ROLES, GATEWAY]:
            status, text = get(f"{fleet.url(name)}/metrics")
            assert status == 200, (name, text)
        query = msgspec.json.encode({"query": "SELECT 1", "params": {}})
        request = urllib.request.Request(  # noqa: S310
            f"{gateway}/database/default/execute",
            data=query,
            headers={**ADMIN, "content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            assert answer.status == 200
        for _ in range(20):
            assert get(f"{gateway}/database/{secrets.token_hex(6)}/health", ADMIN)[0] == 404
            assert get(f"{gateway}/no/such/{secrets.token_hex(6)}")[0] == 404
        assert get(f"{gateway}/database/health", ADMIN)[0] == 200

        def gateway_metrics() -> str:
            return get(f"{gateway}/metrics")[1]

        poll(
            lambda: value(gateway_metrics(), "multidb_gateway_audit_sent_total") >= 1,
            "the execute's audit record is delivered",
        )
        text = gateway_metrics()
        routes = {
            s.labels["route"] for s in samples(text) if s.name == "multidb_http_requests_total"
        }
        assert "/database/{name}/health" in routes
        assert routes <= {
            "/database/{name}/health",
            "/database/{name}/execute",
            "/database/health",
            "/metrics",
            "/readyz",
        }, routes
        assert value(text, "multidb_gateway_audit_pending") >= 0
        assert value(text, "multidb_gateway_audit_dropped_total") == 0
        for role in BUILTIN_ROLES:
            assert value(text, "multidb_gateway_role_healthy", role=role) == 1
        assert (
            value(
                text,
                "multidb_gateway_service_call_duration_seconds_count",
                role="default",
                path="/execute",
            )
            == 1
        )
        service = get(f"{fleet.url('default')}/metrics")[1]
        assert value(service, "multidb_execute_requests_total", role="default", outcome="ok") == 1

        fleet.stop("archive")
        assert get(f"{gateway}/database/archive/health", ADMIN)[0] == 503
        text = gateway_metrics()
        errors = "multidb_gateway_service_call_errors_total"
        unreachable = {"role": "archive", "path": "/health", "kind": "unreachable"}
        assert value(text, errors, **unreachable) >= 1
        poll(
            lambda: value(gateway_metrics(), "multidb_gateway_role_healthy", role="archive") == 0,
            "the cached health sees the stopped service",
        )


def test_credential_mode_closes_loopback_too(database_env: dict[str, str], tmp_path: Path) -> None:
    fleet = ProcessFleet(database_env, tmp_path, MULTI_DB_METRICS_ACCESS="credential")
    try:
        fleet.start("default")
        fleet.start(GATEWAY)
        for name in ("default", GATEWAY):
            assert get(f"{fleet.url(name)}/metrics")[0] == 401
            assert get(f"{fleet.url(name)}/metrics", bearer("db:execute"))[0] == 403
            status, text = get(f"{fleet.url(name)}/metrics", bearer("db:read"))
            assert status == 200
            assert any(s.name.startswith("multidb_") for s in samples(text))
    finally:
        fleet.close()


@pytest.mark.parametrize("value_", ["open", ""])
def test_a_bad_access_mode_is_one_line_naming_the_variable(value_: str) -> None:
    from multidb.plugins import get_roles
    from multidb.settings import SettingsError, load_settings

    if not value_:
        assert load_settings({}, get_roles()).metrics_access == "loopback"
        return
    with pytest.raises(SettingsError, match=r"^MULTI_DB_METRICS_ACCESS: must be loopback or"):
        load_settings({"MULTI_DB_METRICS_ACCESS": value_}, get_roles())
