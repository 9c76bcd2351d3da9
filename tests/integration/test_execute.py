"""Execute: answer shape, named parameters, value encoding, the row cap and error classes."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ADMIN, bearer


@pytest.fixture
async def client(service_client: Any) -> Any:
    async with service_client("default") as client:
        yield client


async def test_spec_example_shape(client: Any) -> None:
    response = await client.post(
        "/execute", json={"query": "SELECT COUNT(*) FROM users", "params": {}}, headers=ADMIN
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["database"] == "default"
    assert body["query"] == "SELECT COUNT(*) FROM users"
    assert body["params"] == {}
    assert body["result"] == [[0]]
    assert body["columns"] == ["count"]
    assert body["row_count"] == 1
    assert body["truncated"] is False
    assert body["duration_ms"] >= 0


async def test_named_parameters_are_bound_and_converted(client: Any) -> None:
    query = (
        "SELECT :n::int + 1 AS n, :when::timestamptz AS when, :id::uuid AS id, :d::date AS d,"
        " :amount::numeric * 2 AS amount, :doc::jsonb -> 'a' AS a, :n::int AS again, '10:30'::time AS t"
    )
    params = {
        "n": 41,
        "when": "2026-01-02T03:04:05Z",
        "id": "9b2f2c8e-4a7b-4c1e-9d3e-1f2a3b4c5d6e",
        "d": "2026-02-03",
        "amount": "1.10",
        "doc": {"a": [1, "x"]},
    }
    response = await client.post("/execute", json={"query": query, "params": params}, headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json()["result"] == [
        [
            42,
            "2026-01-02T03:04:05Z",
            "9b2f2c8e-4a7b-4c1e-9d3e-1f2a3b4c5d6e",
            "2026-02-03",
            "2.20",
            [1, "x"],
            41,
            "10:30:00",
        ]
    ]


async def test_values_that_look_like_sql_stay_values(client: Any) -> None:
    hostile = "x'); DROP TABLE users; --"
    response = await client.post(
        "/execute", json={"query": "SELECT :v AS v", "params": {"v": hostile}}, headers=ADMIN
    )
    assert response.json()["result"] == [[hostile]]
    check = await client.post(
        "/execute", json={"query": "SELECT count(*) FROM users"}, headers=ADMIN
    )
    assert check.status_code == 200


async def test_bytes_intervals_and_nulls(client: Any) -> None:
    query = (
        "SELECT '\\x6869'::bytea AS b, interval '1 day 2 hours' AS i, NULL AS nothing, true AS yes"
    )
    response = await client.post("/execute", json={"query": query}, headers=ADMIN)
    assert response.json()["result"] == [["aGk=", "P1DT7200S", None, True]]


async def test_row_cap_truncates(client: Any) -> None:
    response = await client.post(
        "/execute", json={"query": "SELECT generate_series(1, 500) AS n"}, headers=ADMIN
    )
    body = response.json()
    assert body["row_count"] == 50
    assert body["truncated"] is True
    assert body["result"][-1] == [50]
    exact = await client.post(
        "/execute", json={"query": "SELECT generate_series(1, 50) AS n"}, headers=ADMIN
    )
    assert exact.json()["truncated"] is False


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"query": ""}, 400, "length >= 1"),
        ({"query": "   "}, 400, "must not be empty"),
        ({"query": 5}, 400, "Expected `str`"),
        ({"query": "SELECT 1", "params": [1]}, 400, "Expected `object`"),
        ({"query": "SELECT 1", "read_only": "no"}, 400, "Expected `bool`"),
        ({"params": {}}, 400, "missing required field `query`"),
        ({"query": "SELECT :a"}, 400, "missing parameter(s): :a"),
        ({"query": "SELECT 1", "params": {"b": 1}}, 400, "unknown parameter(s): :b"),
        ({"query": "SELECT :a::int", "params": {"a": "seven"}}, 400, "parameter :a must be a int4"),
        ({"query": "SELEC 1"}, 400, "syntax error"),
        ({"query": "SELECT * FROM no_such_table"}, 400, "does not exist"),
        ({"query": "SELECT 1/0"}, 400, "division by zero"),
    ],
)
async def test_bad_input_is_a_clear_4xx(
    client: Any, body: dict[str, Any], status: int, needle: str
) -> None:
    response = await client.post("/execute", json=body, headers=ADMIN)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert needle in response.text


async def test_sql_error_carries_sqlstate(client: Any) -> None:
    response = await client.post("/execute", json={"query": "SELECT 1/0"}, headers=ADMIN)
    assert response.json()["sqlstate"] == "22012"


async def test_malformed_json_is_400(client: Any) -> None:
    response = await client.post(
        "/execute", content=b'{"query": ', headers={**ADMIN, "content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_execute_needs_the_execute_scope(client: Any) -> None:
    response = await client.post("/execute", json={"query": "SELECT 1"}, headers=bearer("db:read"))
    assert response.status_code == 403
    ok = await client.post("/execute", json={"query": "SELECT 1"}, headers=bearer("db:execute"))
    assert ok.status_code == 200
