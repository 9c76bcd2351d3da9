"""Each role's service: the spec's shapes, probes, redaction, the auth matrix, a dead database."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import pytest

from multidb.plugins import get_roles
from multidb.settings import DatabaseSettings, Settings
from multidb_devstack.embedded import EmbeddedPostgres
from tests.conftest import ADMIN, BUILTIN_ROLES, JWT_SECRET, SPEC_MODELS, bearer, token


@pytest.mark.parametrize("role", BUILTIN_ROLES)
async def test_every_role_answers_the_spec_shapes(
    service_client: Any, settings: Settings, role: str
) -> None:
    database = settings.databases[role]
    async with service_client(role) as client:
        health = await client.get("/health", headers=ADMIN)
        assert health.status_code == 200
        body = health.json()
        assert body["database"] == role
        assert body["status"] == "healthy"
        assert body["test_query"] == 1
        assert body["database_name"] == database.database
        assert body["version"].startswith("PostgreSQL ")

        stats = (await client.get("/stats", headers=ADMIN)).json()
        assert stats["database"] == role
        assert stats["status"] == "available"
        # The role's tables (its models' and its own, such as stats history) plus its
        # Alembic version table.
        assert stats["table_count"] == len(get_roles()[role].metadata.tables) + 1
        assert stats["deadlocks"] == 0
        assert stats["database_size"].endswith(("kB", "MB", "bytes"))
        assert stats["database_size_bytes"] > 0
        assert stats["connections"] >= 1
        assert 0 <= stats["cache_hit_ratio"] <= 1

        models = (await client.get("/models", headers=ADMIN)).json()
        assert models == {"database": role, "models": SPEC_MODELS[role]}

        backup = (await client.get("/backup/info", headers=ADMIN)).json()
        # The role's backups (tests/integration/test_backups.py): the schedule is off here.
        assert backup.pop("backups")["schedule"] == "off"
        assert backup == {
            "host": database.host,
            "port": database.port,
            "database": database.database,
            "username": database.username,
            "url": f"postgresql://{database.username}:***@{database.host}:{database.port}/{database.database}",
            # TLS: the mode and certificate paths at most, never a key's content.
            "sslmode": database.sslmode,
            "sslrootcert": database.sslrootcert or None,
            "sslcert": database.sslcert or None,
            "sslkey": database.sslkey or None,
        }
        assert database.password not in (await client.get("/backup/info", headers=ADMIN)).text


async def test_probes_need_no_auth_and_readiness_checks_migrations(service_client: Any) -> None:
    async with service_client("logging") as client:
        assert (await client.get("/livez")).json() == {"status": "alive"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["revision"] == ready.json()["head"]
        schema = await client.get("/schema/openapi.json")
        assert schema.status_code == 200
        assert "/execute" in schema.json()["paths"]


ENDPOINTS = [
    ("GET", "/health", "db:read"),
    ("GET", "/stats", "db:read"),
    ("GET", "/models", "db:read"),
    ("GET", "/backup/info", "db:admin"),
    ("POST", "/execute", "db:execute"),
]


@pytest.mark.parametrize(("method", "path", "scope"), ENDPOINTS)
async def test_auth_matrix(service_client: Any, method: str, path: str, scope: str) -> None:
    body = {"query": "SELECT 1"} if method == "POST" else None
    others = {"db:read", "db:execute", "db:write", "db:admin"} - {scope}
    cases = [
        ({}, 401),
        ({"X-API-Key": "wrong-key"}, 401),
        ({"Authorization": "Bearer not-a-jwt"}, 401),
        ({"Authorization": "Basic dXNlcjpwdw=="}, 401),
        ({"Authorization": f"Bearer {token(scope, lifetime_s=-10)}"}, 401),
        (
            {
                "Authorization": f"Bearer {token(scope, secret='another-secret-of-sufficient-length-x')}"
            },
            401,
        ),
        (bearer(*others), 403),
        (bearer(scope), 200),
        (ADMIN, 200),
    ]
    async with service_client("archive") as client:
        for headers, expected in cases:
            response = await client.request(method, path, json=body, headers=headers)
            assert response.status_code == expected, (headers, response.text)
            if expected >= 400:
                assert response.headers["content-type"].startswith("application/problem+json")
                assert JWT_SECRET not in response.text


async def test_hashed_api_keys_are_accepted(service_client: Any, settings: Settings) -> None:
    import hashlib

    stored = "sha256:" + hashlib.sha256(b"hashed-key-123").hexdigest()
    hashed = msgspec.structs.replace(settings, api_keys=(stored,))
    async with service_client("archive", hashed) as client:
        assert (
            await client.get("/models", headers={"X-API-Key": "hashed-key-123"})
        ).status_code == 200
        assert (await client.get("/models", headers={"X-API-Key": stored})).status_code == 401


def _pointed_at(settings: Settings, role: str, database: DatabaseSettings) -> Settings:
    return msgspec.structs.replace(settings, databases={**settings.databases, role: database})


async def test_unreachable_database_is_503_not_a_hang(
    service_client: Any, settings: Settings
) -> None:
    closed = msgspec.structs.replace(settings.databases["archive"], port=1)
    async with service_client("archive", _pointed_at(settings, "archive", closed)) as client:
        started = time.monotonic()
        health = await client.get("/health", headers=ADMIN)
        assert health.status_code == 503
        assert health.json()["status"] == "unhealthy"
        assert health.json()["error"] == "connection refused"
        stats = await client.get("/stats", headers=ADMIN)
        assert stats.status_code == 503
        assert stats.json()["status"] == "unavailable"
        execute = await client.post("/execute", json={"query": "SELECT 1"}, headers=ADMIN)
        assert execute.status_code == 503
        assert (await client.get("/readyz")).status_code == 503
        assert (await client.get("/livez")).status_code == 200
        assert time.monotonic() - started < 5


async def test_database_stopped_mid_run_gives_503_then_recovers(
    service_client: Any, settings: Settings, spare_cluster: EmbeddedPostgres, roles: Any
) -> None:
    database = spare_cluster.database_settings(roles["archive"])
    async with service_client("archive", _pointed_at(settings, "archive", database)) as client:
        assert (await client.get("/health", headers=ADMIN)).status_code == 200
        assert (
            await client.post("/execute", json={"query": "SELECT 1"}, headers=ADMIN)
        ).status_code == 200
        await asyncio.to_thread(spare_cluster.stop)
        started = time.monotonic()
        health = await client.get("/health", headers=ADMIN)
        assert health.status_code == 503
        assert health.json()["status"] == "unhealthy"
        assert health.json()["error"]
        assert time.monotonic() - started < settings.health_timeout_ms / 1000 + 0.5
        assert (
            await client.post("/execute", json={"query": "SELECT 1"}, headers=ADMIN)
        ).status_code == 503
        await asyncio.to_thread(spare_cluster.start)
        assert (await client.get("/health", headers=ADMIN)).status_code == 200
        assert (
            await client.post("/execute", json={"query": "SELECT 1"}, headers=ADMIN)
        ).status_code == 200


async def test_login_without_createrole_gives_a_clear_503_on_execute(
    service_client: Any, settings: Settings
) -> None:
    admin = settings.databases["archive"]
    conn = await admin.connect()
    await conn.execute("DROP ROLE IF EXISTS plain_login")
    await conn.execute("CREATE ROLE plain_login LOGIN PASSWORD 'plain-pw'")
    await conn.close()
    plain = msgspec.structs.replace(admin, username="plain_login", password="plain-pw")
    async with service_client("archive", _pointed_at(settings, "archive", plain)) as client:
        assert (await client.get("/health", headers=ADMIN)).status_code == 200
        response = await client.post("/execute", json={"query": "SELECT 1"}, headers=ADMIN)
        assert response.status_code == 503
        assert "execute logins not ready" in response.json()["detail"]
        assert "plain-pw" not in response.text
