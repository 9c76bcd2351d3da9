"""Hostile input, sent as a caller with an ordinary credential would, to real processes.

Every bad input answers with its documented 4xx and a message, and the whole fleet is
still healthy afterwards; the answers stay bounded in bytes whatever the query asks for.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from multidb.settings import Settings
from tests.conftest import ADMIN, bearer
from tests.fleet import ProcessFleet

EXECUTE = bearer("db:execute")
MAX_QUERY = 256 * 1024
MAX_BODY = 4 * 1024 * 1024
MAX_BYTES = 8 * 1024 * 1024


@pytest.fixture(scope="module")
def fleet(
    database_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProcessFleet]:
    with ProcessFleet(database_env, tmp_path_factory.mktemp("hostile-logs")).running() as fleet:
        yield fleet


def deep_json(depth: int) -> bytes:
    return b'{"query": "SELECT 1", "params": {"x": ' + b"[" * depth + b"]" * depth + b"}}"


# (what, raw body, status, words the problem's detail contains)
EXECUTE_CORPUS: list[tuple[str, bytes, int, str]] = [
    ("NUL byte in the query", json.dumps({"query": "SELECT 1\u0000"}).encode(), 400, "NUL"),
    ("positional parameter", json.dumps({"query": "SELECT $1"}).encode(), 400, "positional"),
    # PostgreSQL's error would quote half a character, which hangs asyncpg's connection.
    (
        "a number run into a non-ASCII letter",
        json.dumps({"query": "0\u00af"}).encode(),
        400,
        "non-ASCII",
    ),
    (
        "positional parameter beside a named one",
        json.dumps({"query": "SELECT :a, $2", "params": {"a": 1}}).encode(),
        400,
        "positional",
    ),
    ("100,000-deep JSON in params", deep_json(100_000), 400, "nested"),
    (
        "query over the byte cap",
        json.dumps({"query": "SELECT " + "1" * MAX_QUERY}).encode(),
        400,
        "longer than",
    ),
    (
        "more parameters than PostgreSQL takes",
        json.dumps({"query": "SELECT " + ",".join(f":p{i}" for i in range(70_000))}).encode(),
        400,
        "",
    ),
    ("body over the request cap", b'{"query": "' + b" " * MAX_BODY + b'SELECT 1"}', 413, ""),
    ("not JSON", b"\xff\xfe{", 400, ""),
    ("JSON of the wrong shape", b'{"query": 1}', 400, ""),
    ("unknown field", b'{"query": "SELECT 1", "bogus": true}', 400, ""),
    ("blank query", b'{"query": "   "}', 400, ""),
    (
        "NUL byte in a parameter",
        json.dumps({"query": "SELECT :a::text", "params": {"a": "x\u0000y"}}).encode(),
        400,
        "",
    ),
    (
        "a parameter of the wrong type",
        json.dumps({"query": "SELECT :a::int", "params": {"a": "not a number"}}).encode(),
        400,
        ":a",
    ),
]


def fleet_is_healthy(fleet: ProcessFleet) -> None:
    answer = httpx.get(f"{fleet.gateway}/database/health", headers=ADMIN, timeout=10)
    assert answer.status_code == 200, answer.text
    for role in ("default", "analytics", "logging", "archive"):
        direct = httpx.get(f"{fleet.url(role)}/health", headers=ADMIN, timeout=10)
        assert direct.status_code == 200, (role, direct.text)


@pytest.mark.parametrize("target", ["gateway", "service"])
def test_each_bad_execute_body_is_a_4xx_problem_and_the_fleet_stays_healthy(
    fleet: ProcessFleet, target: str
) -> None:
    url = (
        f"{fleet.gateway}/database/default/execute"
        if target == "gateway"
        else f"{fleet.url('default')}/execute"
    )
    with httpx.Client(timeout=30) as http:
        for what, body, status, words in EXECUTE_CORPUS:
            answer = http.post(
                url, content=body, headers={**EXECUTE, "content-type": "application/json"}
            )
            assert answer.status_code == status, (what, answer.status_code, answer.text[:300])
            assert answer.headers["content-type"].startswith("application/problem+json"), what
            assert words in answer.json()["detail"], (what, answer.text[:300])
            assert "Traceback" not in answer.text
    fleet_is_healthy(fleet)


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/database/health", {"Authorization": "Bearer " + "x" * 100_000}),
        ("/database/health", {"Authorization": "Basic abc"}),
        ("/database/health", {"X-API-Key": "k" * 60_000}),
        ("/database/%00/health", ADMIN),
        ("/database/" + "n" * 5000 + "/stats", ADMIN),
        ("/database/default/models?x=" + "y" * 5000, ADMIN),
        ("/database/backup/info", bearer("db:read")),
    ],
)
def test_bad_requests_to_the_read_endpoints_are_4xx(
    fleet: ProcessFleet, path: str, headers: dict[str, str]
) -> None:
    answer = httpx.get(f"{fleet.gateway}{path}", headers=headers, timeout=10)
    if path.endswith("/models?x=" + "y" * 5000):
        assert answer.status_code == 200  # an unknown query parameter is ignored
    else:
        assert 400 <= answer.status_code < 500, answer.text[:300]
        assert answer.headers["content-type"].startswith("application/problem+json")
    fleet_is_healthy(fleet)


def test_backslash_escapes_in_e_strings_are_literals_not_parameters(fleet: ProcessFleet) -> None:
    answer = httpx.post(
        f"{fleet.gateway}/database/default/execute",
        json={"query": r"SELECT E'it\'s :x' AS text, :y::int AS y", "params": {"y": 2}},
        headers=EXECUTE,
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"] == [["it's :x", 2]]


def _peak_rss_reset(pid: int) -> None:
    # Writing 5 resets the kernel's high-water mark (VmHWM) to the current RSS.
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


# Documented in README: the peak above idle of one execute with a capped result.
RSS_BOUND_MB = 64


def test_a_multi_gigabyte_result_is_cut_at_the_byte_cap_with_bounded_memory(
    fleet: ProcessFleet,
) -> None:
    pids = {name: fleet.processes[name].pid for name in ("default", "gateway")}
    for pid in pids.values():
        _peak_rss_reset(pid)
    idle = {name: _peak_rss_mb(pid) for name, pid in pids.items()}
    # 5,000 rows of 1 MB: 5 GB if nothing stopped it.
    answer = httpx.post(
        f"{fleet.gateway}/database/default/execute",
        json={"query": "SELECT repeat('x', 1000000) AS blob FROM generate_series(1, 5000)"},
        headers=EXECUTE,
        timeout=30,
    )
    assert answer.status_code == 200, answer.text[:300]
    body = answer.json()
    assert body["truncated"] is True
    assert body["truncated_by"] == "bytes"
    assert 1 <= body["row_count"] <= 8
    assert len(answer.content) <= MAX_BYTES + 64 * 1024
    peaks = {name: _peak_rss_mb(pid) for name, pid in pids.items()}
    for name in pids:
        assert peaks[name] - idle[name] < RSS_BOUND_MB, (name, idle[name], peaks[name])


def test_one_value_larger_than_the_cap_is_refused_with_a_problem(fleet: ProcessFleet) -> None:
    answer = httpx.post(
        f"{fleet.gateway}/database/default/execute",
        json={"query": "SELECT repeat('x', 9000000) AS blob"},
        headers=EXECUTE,
        timeout=30,
    )
    assert answer.status_code == 400, answer.text[:300]
    assert answer.json()["title"] == "Result too large"
    assert "left()" in answer.json()["detail"]


def test_the_row_cap_still_applies_and_says_so(fleet: ProcessFleet) -> None:
    answer = httpx.post(
        f"{fleet.gateway}/database/default/execute",
        json={"query": "SELECT g FROM generate_series(1, 5000) AS g"},
        headers=EXECUTE,
        timeout=30,
    )
    body = answer.json()
    assert (body["row_count"], body["truncated"], body["truncated_by"]) == (1000, True, "rows")
    assert body["result"][-1] == [1000]


def _short_names(count: int) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return [a + b + c for a in letters for b in letters for c in letters][:count]


def worst_inputs() -> list[dict[str, object]]:
    """The most expensive requests a caller can make within the limits, one of each kind."""
    names = _short_names(17_000)
    in_list = "SELECT 1 WHERE 1 IN (" + ",".join(f":{name}" for name in names) + ")"
    return [
        {"query": in_list, "params": dict.fromkeys(names, 1)},  # many parameters
        {"query": "SELECT 1 " + "::" * (MAX_QUERY // 2 - 8)},  # longest query, all tokens
        {"query": 'SELECT 1 AS "' + "x" * (MAX_QUERY - 32) + '"'},  # longest identifier
        {"query": "SELECT length(:s)", "params": {"s": "y" * (MAX_BODY - 4096)}},  # largest body
        {"query": "SELECT repeat('x', 1000000) FROM generate_series(1, 5000)"},  # 5 GB result
    ]


async def _health_latencies_under(
    service: str, bodies: list[bytes], seconds: float
) -> tuple[list[float], list[int]]:
    statuses: list[int] = []
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=service, timeout=30) as http:
        end = time.perf_counter() + seconds

        async def attacker(offset: int) -> None:
            index = offset
            while time.perf_counter() < end:
                body = bodies[index % len(bodies)]
                answer = await http.post(
                    "/execute",
                    content=body,
                    headers={**EXECUTE, "content-type": "application/json"},
                )
                statuses.append(answer.status_code)
                index += 1

        async def prober() -> None:
            await asyncio.sleep(0.2)
            while time.perf_counter() < end:
                started = time.perf_counter()
                answer = await http.get("/health", headers=ADMIN)
                latencies.append(time.perf_counter() - started)
                assert answer.status_code == 200
                await asyncio.sleep(0.02)

        await asyncio.gather(prober(), attacker(0))
    return latencies, statuses


def test_health_stays_fast_while_the_worst_inputs_run(fleet: ProcessFleet) -> None:
    bodies = [json.dumps(body).encode() for body in worst_inputs()]
    assert all(len(body) <= MAX_BODY for body in bodies)
    deep = deep_json(100_000)
    latencies, statuses = asyncio.run(
        _health_latencies_under(fleet.url("default"), [*bodies, deep], 4.0)
    )
    assert len(latencies) >= 50
    assert set(statuses) <= {200, 400}, statuses
    # A blocked loop shows as seconds (the quadratic scanner) or well over 100 ms (big
    # binds on the loop, 126 ms alone); this file alone measures 65-78 ms, and full-suite
    # runs 103 ms once and 171 ms once, a single probe: the attacker sends each input again
    # and again, so an input that blocks the loop delays several probes, where the
    # machine's noise delayed one. The bound catches a blocked loop, not that noise.
    assert sorted(latencies)[-2] < 0.15, sorted(latencies)[-5:]
    fleet_is_healthy(fleet)


def test_a_statement_timeout_comes_back_as_the_services_own_problem(fleet: ProcessFleet) -> None:
    # The fleet's statement timeout is 1.5 s and its per-call service deadline 1 s: the
    # gateway still waits for the service's answer rather than timing out first.
    answer = httpx.post(
        f"{fleet.gateway}/database/default/execute",
        json={"query": "SELECT pg_sleep(10)"},
        headers=EXECUTE,
        timeout=30,
    )
    assert answer.status_code == 504
    assert "ran longer than 1500 ms and was cancelled" in answer.json()["detail"]


def test_a_refused_query_with_a_nul_still_leaves_its_audit_record(
    fleet: ProcessFleet, settings: Settings
) -> None:
    request_id = uuid.uuid4().hex
    answer = httpx.post(
        f"{fleet.gateway}/database/default/execute",
        json={"query": "SELECT 'a\u0000b'"},
        headers={**EXECUTE, "X-Request-ID": request_id},
        timeout=10,
    )
    assert answer.status_code == 400

    async def preview() -> str:
        conn = await settings.databases["logging"].connect()
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                found = await conn.fetchval(
                    "SELECT query_preview FROM access_logs WHERE request_id = $1", request_id
                )
                if found is not None:
                    return str(found)
                await asyncio.sleep(0.05)
        finally:
            await conn.close()
        raise AssertionError("the audit record never arrived")

    assert asyncio.run(preview()) == "SELECT 'a\ufffdb'"
