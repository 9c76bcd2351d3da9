"""Test fixtures: real PostgreSQL (embedded, or the servers the environment names)."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from multidb import migrations
from multidb.auth import mint_token
from multidb.plugins import get_roles
from multidb.roles import RoleSpec
from multidb.service import create_role_app
from multidb.settings import Settings, load_settings, read_environment
from multidb_devstack.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "test-api-key-0123456789"
JWT_SECRET = "test-jwt-secret-with-enough-length-for-hs256"
BUILTIN_ROLES = ["default", "analytics", "logging", "archive"]
SPEC_MODELS = {
    "default": ["User", "People", "Media", "IdentityDocument", "AuditLog", "OCRJob", "Mediable"],
    "analytics": ["AnalyticsEvent", "UserActivity", "SystemMetrics"],
    "logging": ["ApplicationLog", "ErrorLog", "AccessLog"],
    "archive": ["ArchivedMedia", "ArchivedPeople", "ArchivedUser"],
}


def _named_servers() -> dict[str, str] | None:
    env = read_environment()
    return env if env.get("DB_HOST") else None


@pytest.fixture(scope="session")
def roles() -> dict[str, RoleSpec]:
    return get_roles()


@pytest.fixture(scope="session")
def embedded() -> Iterator[EmbeddedPostgres | None]:
    """The embedded cluster of the test run (None when the environment names servers)."""
    if _named_servers() is not None:
        yield None
        return
    server = EmbeddedPostgres(ROOT / ".data" / "test-pg")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def database_env(
    embedded: EmbeddedPostgres | None,
    roles: dict[str, RoleSpec],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    """The spec's variables pointing every role at a real, migrated database."""
    if embedded is None:
        env = _named_servers() or {}
    else:
        asyncio.run(embedded.create_databases(spec.database for spec in roles.values()))
        env = embedded.environment(roles)
    # Scheduled backups and drills only where a test asks for them.
    for spec in roles.values():
        env[f"MULTI_DB_{spec.name.upper()}_BACKUP_INTERVAL"] = "off"
        env[f"MULTI_DB_{spec.name.upper()}_DRILL_INTERVAL"] = "off"
    env["MULTI_DB_BACKUP_DIR"] = str(tmp_path_factory.mktemp("backups"))
    # The archive service's scheduled mover too (tests start runs themselves).
    env["MULTI_DB_ARCHIVE_INTERVAL"] = "off"
    settings = load_settings(env, roles)
    for name, spec in roles.items():
        migrations.upgrade(spec, "head", settings.databases[name])
    return env


@pytest.fixture(scope="session")
def settings(database_env: dict[str, str], roles: dict[str, RoleSpec]) -> Settings:
    env = {
        **database_env,
        "API_KEYS": API_KEY,
        "JWT_SECRET": JWT_SECRET,
        "MULTI_DB_EXECUTE_TIMEOUT_MS": "1500",
        "MULTI_DB_EXECUTE_MAX_ROWS": "50",
    }
    return load_settings(env, roles)


def token(*scopes: str, secret: str = JWT_SECRET, lifetime_s: int = 3600) -> str:
    return mint_token(secret, "tester", scopes, lifetime_s)


def bearer(*scopes: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(*scopes)}"}


ADMIN = {"X-API-Key": API_KEY}


@pytest.fixture
def service_client(settings: Settings) -> object:
    """A factory: ``async with service_client("analytics") as client`` (real app, real DB)."""

    def open_client(role: str, override: Settings | None = None) -> AsyncTestClient:  # type: ignore[type-arg]
        return AsyncTestClient(app=create_role_app(role, override or settings))

    return open_client


@pytest.fixture(autouse=True)
def _no_ambient_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests pass settings explicitly; a developer's .env must not leak into them.
    monkeypatch.setenv("MULTI_DB_ENV_FILE", os.devnull)


@pytest.fixture
def spare_cluster() -> Iterator[EmbeddedPostgres]:
    """A second, throw-away cluster with an archive database: safe to stop mid-test.

    Its folder is not under pytest's ``tmp_path``: every pytest session that starts sets
    ``/tmp/pytest-of-<user>`` back to 0700, and the cluster's own system user (we run as
    root) then can no longer reach its data folder to stop or start it."""
    folder = ROOT / ".data" / f"spare-{secrets.token_hex(4)}"
    server = EmbeddedPostgres(folder)
    try:
        server.start()
        asyncio.run(server.create_databases(["ocr_archive_db"]))
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
