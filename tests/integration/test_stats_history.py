"""Stats history end to end: the gateway samples every role into the analytics role.

Real processes (four services and the gateway, sampling every second), real PostgreSQL.
Every wait polls a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from multidb.jobs import LOCK_SPACE, BackgroundJob, JobRunner, lock_key
from multidb.plugins import get_plugin_manager
from multidb.roles import RoleSpec
from multidb.service.runtime import RoleRuntime
from multidb.settings import DatabaseSettings, Settings
from multidb_devstack.embedded import free_port
from tests.conftest import ADMIN, BUILTIN_ROLES, bearer
from tests.fleet import ProcessFleet
from tests.processes import poll, wait_ready

DEADLINE_S = 30.0


def query(database: DatabaseSettings, sql: str, *args: object) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await database.connect()
        try:
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
            return rows
        finally:
            await conn.close()

    return asyncio.run(run())


def samples_since(database: DatabaseSettings, since: datetime) -> list[asyncpg.Record]:
    return query(
        database,
        "SELECT * FROM stats_samples WHERE sampled_at >= $1 ORDER BY sampled_at",
        since,
    )


@pytest.fixture(scope="module")
def analytics_db(settings: Settings) -> DatabaseSettings:
    return settings.databases["analytics"]


@pytest.fixture(scope="module")
def fleet(
    database_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProcessFleet]:
    logs = tmp_path_factory.mktemp("stats-history")
    with ProcessFleet(database_env, logs, MULTI_DB_STATS_SAMPLE_S="1").running() as running:
        yield running


@pytest.fixture(scope="module")
def client(fleet: ProcessFleet) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fleet.gateway, timeout=10) as http:
        yield http


def test_every_role_is_sampled_and_a_stopped_service_shows_as_a_gap(
    fleet: ProcessFleet, client: httpx.Client, analytics_db: DatabaseSettings
) -> None:
    start = datetime.now(UTC)

    def every_role_sampled() -> bool:
        rows = samples_since(analytics_db, start)
        return {row["role"] for row in rows if row["status"] == "available"} == set(BUILTIN_ROLES)

    poll(every_role_sampled, "an available sample of every role")
    row = next(r for r in samples_since(analytics_db, start) if r["role"] == "default")
    assert row["table_count"] > 0
    assert row["database_size_bytes"] > 0
    assert row["sample_id"] == f"default:{int(row['sampled_at'].timestamp())}"

    fleet.stop("archive")
    stopped = datetime.now(UTC)
    try:
        gap = poll(
            lambda: [
                r
                for r in samples_since(analytics_db, stopped)
                if r["role"] == "archive" and r["status"] == "unavailable"
            ],
            "an unavailable sample of the stopped archive service",
        )
        assert "unreachable" in gap[0]["error"], gap[0]["error"]
        assert gap[0]["table_count"] is None

        answer = client.get(
            "/database/archive/stats/history",
            params={"since": stopped.isoformat(), "step": "1"},
            headers=bearer("db:read"),
        )
        assert answer.status_code == 200, answer.text
        points = answer.json()["points"]
        failed = [p for p in points if p["unavailable"] == p["samples"]]
        assert failed, points
        assert failed[0]["table_count"] is None
        assert "unreachable" in failed[0]["error"]
    finally:
        fleet.start("archive")


def test_samples_taken_while_analytics_is_down_arrive_once_it_is_back(
    fleet: ProcessFleet, client: httpx.Client, analytics_db: DatabaseSettings
) -> None:
    fleet.stop("analytics")
    # A sample is stamped with its bucket (the second it was taken, floored): the bucket the
    # stop fell in may hold a sample taken just before it, so the window starts after it.
    down_from = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    held = poll(
        lambda: (
            (s := client.get("/readyz").json()["stats_history"])["pending"] >= 16
            and s["failures"] > 0
            and s
        ),
        "four rounds of samples held while the analytics service is down",
    )
    assert held["last_error"] is not None
    down_until = datetime.now(UTC)
    fleet.start("analytics")

    poll(
        lambda: client.get("/readyz").json()["stats_history"]["pending"] == 0,
        "the held samples delivered",
    )
    rows = query(
        analytics_db,
        "SELECT role, sample_id, status FROM stats_samples WHERE sampled_at BETWEEN $1 AND $2",
        down_from,
        down_until,
    )
    by_role: dict[str, list[str]] = {}
    for row in rows:
        by_role.setdefault(row["role"], []).append(row["sample_id"])
    assert set(by_role) == set(BUILTIN_ROLES), by_role
    assert all(len(ids) >= 2 for ids in by_role.values()), by_role
    # While analytics was down its own samples say so; the others were measured.
    assert {row["status"] for row in rows if row["role"] == "analytics"} == {"unavailable"}
    assert {row["status"] for row in rows if row["role"] == "default"} == {"available"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready"
    assert ready["stats_history"]["dropped"] == 0


def _synthetic(role: str, at: datetime, i: int, *, ok: bool) -> dict[str, Any]:
    return {
        "sample_id": f"{role}:{int(at.timestamp())}",
        "role": role,
        "sampled_at": at.isoformat(),
        "status": "available" if ok else "unavailable",
        "error": None if ok else f"down {i}",
        "table_count": i if ok else None,
        "connections": 2 if ok else None,
        "cache_hit_ratio": (0.5 if i % 2 else 1.0) if ok else None,
    }


def test_history_is_downsampled_to_the_step(fleet: ProcessFleet, client: httpx.Client) -> None:
    # Within the stats retention: the analytics service's retention job, which may run at
    # any moment of the test, must not take the samples away between the two posts.
    origin = (datetime.now(UTC) - timedelta(days=2)).replace(minute=0, second=0, microsecond=0)

    def at(minutes: int) -> str:
        return (origin + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")

    # Minute 0: six good samples; minute 1: all six failed; minute 2: nothing.
    samples = [
        _synthetic("default", origin + timedelta(seconds=10 * i), i, ok=i < 6) for i in range(12)
    ]
    stored = httpx.post(f"{fleet.url('analytics')}/stats/samples", json=samples, headers=ADMIN)
    assert stored.status_code == 200, stored.text
    again = httpx.post(f"{fleet.url('analytics')}/stats/samples", json=samples, headers=ADMIN)
    assert again.json()["inserted"] == 0

    answer = client.get(
        "/database/default/stats/history",
        params={"since": at(0), "until": at(3), "step": "60"},
        headers=ADMIN,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["database"], body["step_s"]) == ("default", 60)
    assert (body["since"], body["until"]) == (at(0), at(3))
    first, second = body["points"]
    assert (first["t"], first["samples"], first["unavailable"]) == (at(0), 6, 0)
    assert (first["table_count"], first["cache_hit_ratio"], first["error"]) == (5, 0.75, None)
    assert (second["t"], second["samples"], second["unavailable"]) == (at(1), 6, 6)
    assert (second["table_count"], second["connections"], second["error"]) == (
        None,
        None,
        "down 11",
    )

    thirty = client.get(
        "/database/default/stats/history",
        params={"since": at(0), "until": at(1), "step": "30"},
        headers=ADMIN,
    ).json()
    assert [p["samples"] for p in thirty["points"]] == [3, 3]


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"step": "0"}, "must be from 1 to"),
        ({"step": " 12"}, "whole number of seconds"),
        ({"until": "0001-01-01T00:02:00Z"}, "before 1970"),
        ({"until": "0.5"}, "not an RFC 3339 timestamp"),
        ({"step": "ten"}, "whole number of seconds"),
        ({"since": "yesterday"}, "not an RFC 3339 timestamp"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "must be before"),
        ({"since": "2020-01-01T00:00:00Z", "step": "1"}, "at most 2000"),
    ],
)
def test_bad_parameters_are_a_400_that_says_why(
    client: httpx.Client, params: dict[str, str], says: str
) -> None:
    answer = client.get("/database/default/stats/history", params=params, headers=ADMIN)
    assert answer.status_code == 400, answer.text
    assert says in answer.json()["detail"]


def test_unknown_database_is_404_and_the_read_scope_is_needed(client: httpx.Client) -> None:
    assert client.get("/database/nope/stats/history", headers=ADMIN).status_code == 404
    refused = client.get("/database/default/stats/history", headers=bearer("db:execute"))
    assert refused.status_code == 403
    assert client.get("/database/default/stats/history").status_code == 401


def test_two_gateways_sampling_at_once_store_each_bucket_once(
    fleet: ProcessFleet, client: httpx.Client, analytics_db: DatabaseSettings, tmp_path: Path
) -> None:
    port = free_port()
    with (tmp_path / "gateway2.log").open("ab") as log:
        second = subprocess.Popen(
            [*fleet.command("gateway")[:-1], str(port)], env=fleet.env, stdout=log, stderr=log
        )
    try:
        wait_ready(second, f"http://127.0.0.1:{port}/readyz")
        both_from = datetime.now(UTC)
        rounds = httpx.get(f"http://127.0.0.1:{port}/readyz").json()["stats_history"]["rounds"]
        poll(
            lambda: (
                httpx.get(f"http://127.0.0.1:{port}/readyz").json()["stats_history"]["sent"]
                >= 4 * (rounds + 3)
            ),
            "three rounds sent by the second gateway",
        )
        both_until = datetime.now(UTC) - timedelta(seconds=1)
    finally:
        second.terminate()
        second.wait(timeout=20)
    rows = query(
        analytics_db,
        "SELECT role, sample_id, sampled_at FROM stats_samples WHERE sampled_at BETWEEN $1 AND $2",
        both_from,
        both_until,
    )
    buckets: dict[tuple[str, int], int] = {}
    for row in rows:
        bucket = int(row["sample_id"].rsplit(":", 1)[1])
        assert bucket == int(row["sampled_at"].timestamp())
        buckets[row["role"], bucket] = buckets.get((row["role"], bucket), 0) + 1
    assert buckets
    assert set(buckets.values()) == {1}
    assert len(buckets) >= 2 * len(BUILTIN_ROLES)


# ---- retention and the background job machinery ------------------------------------------


@pytest.fixture
async def analytics_runtime(
    settings: Settings, roles: dict[str, RoleSpec]
) -> AsyncIterator[RoleRuntime]:
    """The analytics role's runtime, not started: its jobs are run by hand."""
    spec = roles["analytics"]
    runtime = RoleRuntime(spec, settings.databases["analytics"], settings, get_plugin_manager())
    await runtime.admin  # opens nothing (min_size=0), so that close() below is allowed
    yield runtime
    await runtime.admin.close()


async def _insert(database: DatabaseSettings, role: str, ages_days: list[float]) -> list[str]:
    now = datetime.now(UTC)
    ids = [f"{role}:{int((now - timedelta(days=age)).timestamp())}" for age in ages_days]
    conn = await database.connect()
    try:
        await conn.executemany(
            "INSERT INTO stats_samples (sample_id, role, sampled_at, status) "
            "VALUES ($1, $2, $3, 'available') ON CONFLICT DO NOTHING",
            [(i, role, now - timedelta(days=age)) for i, age in zip(ids, ages_days, strict=True)],
        )
    finally:
        await conn.close()
    return ids


async def _present(database: DatabaseSettings, ids: list[str]) -> set[str]:
    conn = await database.connect()
    try:
        rows = await conn.fetch(
            "SELECT sample_id FROM stats_samples WHERE sample_id = ANY($1::text[])", ids
        )
        return {row["sample_id"] for row in rows}
    finally:
        await conn.close()


async def test_retention_prunes_old_samples_with_one_leader(
    analytics_runtime: RoleRuntime, analytics_db: DatabaseSettings
) -> None:
    old, recent = await _insert(analytics_db, "retention-test", [40, 29])
    runner = analytics_runtime.jobs
    assert "stats-retention" in runner.jobs

    # Another replica holds the lead: this one skips the round and deletes nothing.
    holder = await analytics_db.connect()
    try:
        async with holder.transaction():
            key = lock_key("analytics", "stats-retention")
            assert await holder.fetchval(
                "SELECT pg_try_advisory_xact_lock($1, $2)", LOCK_SPACE, key
            )
            assert await runner.run_once("stats-retention") is False
    finally:
        await holder.close()
    assert await _present(analytics_db, [old, recent]) == {old, recent}

    assert await runner.run_once("stats-retention") is True
    assert await _present(analytics_db, [old, recent]) == {recent}
    status = runner.job_status("stats-retention")
    assert status is not None
    assert (status.runs, status.skipped, status.failures) == (1, 1, 0)


async def test_a_failing_job_is_counted_rolled_back_and_runs_again(
    analytics_runtime: RoleRuntime, analytics_db: DatabaseSettings
) -> None:
    calls = 0

    async def flaky(_: RoleRuntime, conn: asyncpg.Connection) -> None:
        nonlocal calls
        calls += 1
        await conn.execute("DELETE FROM stats_samples WHERE role = 'flaky-test'")
        if calls == 1:
            await conn.execute("SELECT 1/0")

    (kept,) = await _insert(analytics_db, "flaky-test", [1])
    runner = JobRunner(analytics_runtime, [BackgroundJob(name="flaky", interval_s=0.05, run=flaky)])
    await runner.start()
    try:
        deadline = asyncio.get_running_loop().time() + DEADLINE_S
        while runner.status()[0].runs < 1:
            assert asyncio.get_running_loop().time() < deadline, runner.status()
            await asyncio.sleep(0.02)
    finally:
        await runner.stop()
    (status,) = runner.status()
    assert status.failures == 1
    assert status.last_error is not None
    assert status.last_error.startswith("22012"), status.last_error  # division_by_zero
    assert await _present(analytics_db, [kept]) == set()  # the second run went through


def _scrape(url: str) -> dict[str, float]:
    """Every sample of a ``/metrics`` answer, by name and labels (a loopback scrape)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        f"{sample.name}{sorted(sample.labels.items())}": sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_sampler_and_the_retention_job_show_in_the_metrics(fleet: ProcessFleet) -> None:
    sent = poll(
        lambda: _scrape(fleet.gateway).get("multidb_gateway_stats_history_sent_total[]", 0) > 0,
        "samples counted as sent in the gateway's metrics",
    )
    assert sent
    gateway = _scrape(fleet.gateway)
    assert gateway["multidb_gateway_stats_history_dropped_total[]"] == 0
    assert "multidb_gateway_stats_history_pending[]" in gateway
    # The analytics service's retention job: its first run comes a few seconds after start.
    job = "[('job', 'stats-retention'), ('role', 'analytics')]"
    poll(
        lambda: _scrape(fleet.url("analytics")).get(f"multidb_job_runs_total{job}", 0) >= 1,
        "a run of the retention job in the analytics service's metrics",
    )
    analytics = _scrape(fleet.url("analytics"))
    assert analytics[f"multidb_job_failures_total{job}"] == 0
    assert analytics[f"multidb_job_last_success_timestamp_seconds{job}"] > 0
