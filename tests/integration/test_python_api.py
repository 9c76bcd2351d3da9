"""The spec's in-process API: get_db, get_db_for_model, the router and the fleet utilities."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Iterator

import msgspec
import pytest
from sqlalchemy import func, select, text

import multidb
from multidb import engines, multi_database_utils, router
from multidb import settings as settings_module
from multidb.engines import EngineRegistry
from multidb.multi_database_utils import MultiDatabaseUtils
from multidb.plugins import get_roles
from multidb.router import DatabaseRouter
from multidb.settings import Settings


def _reset_process_singletons() -> None:
    settings_module.get_settings.cache_clear()
    router.get_database_router.cache_clear()
    multi_database_utils.get_multi_database_utils.cache_clear()
    engines._registry = None


@pytest.fixture
async def process_env(
    monkeypatch: pytest.MonkeyPatch, database_env: dict[str, str]
) -> AsyncIterator[None]:
    for name, value in database_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MULTI_DB_ROUTING", '{"ErrorLog": "archive"}')
    _reset_process_singletons()
    yield
    await multidb.dispose_engines()
    _reset_process_singletons()


async def test_get_db_and_get_db_for_model_use_the_routed_database(process_env: None) -> None:
    from multidb_default.models import User
    from multidb_logging.models import ErrorLog

    async for db in multidb.get_db("analytics"):
        assert await db.scalar(text("SELECT current_database()")) == "ocr_analytics_db"
    async for db in multidb.get_db_for_model(User):
        assert await db.scalar(text("SELECT current_database()")) == "ocr_identity_db"
        db.add(User(username="ada", email="ada@example.org", phone="+100", hashed_password="x"))
        await db.commit()
        assert (
            await db.scalar(select(func.count()).select_from(User).where(User.username == "ada"))
            == 1
        )
        await db.execute(text("DELETE FROM users WHERE username = 'ada'"))
        await db.commit()
    # MULTI_DB_ROUTING moves ErrorLog to the archive database.
    assert multidb.get_database_router().get_database_for_model(ErrorLog) == "archive"
    async for db in multidb.get_db_for_model(ErrorLog):
        assert await db.scalar(text("SELECT current_database()")) == "ocr_archive_db"


async def test_fleet_utilities_report_every_database(process_env: None) -> None:
    utils = multidb.get_multi_database_utils()
    assert utils.get_configured_databases() == ["default", "analytics", "logging", "archive"]
    health = await multidb.health_check_all()
    assert {name: report.status for name, report in health.items()} == dict.fromkeys(
        ["default", "analytics", "logging", "archive"], "healthy"
    )
    stats = await multidb.get_database_stats_all()
    assert all(report.status == "available" for report in stats.values())
    assert stats["default"].table_count == 8
    by_database = utils.get_models_by_database()
    assert "ErrorLog" in by_database["archive"]
    assert "ErrorLog" not in by_database["logging"]
    backup = utils.get_backup_info()
    assert all("***" in info.url for info in backup.values())


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers: a hung database."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


async def test_dead_and_hung_databases_are_reported_concurrently(
    settings: Settings, silent_server: int
) -> None:
    hung = {
        name: msgspec.structs.replace(settings.databases[name], port=silent_server)
        for name in ("analytics", "archive")
    }
    dead = {"logging": msgspec.structs.replace(settings.databases["logging"], port=1)}
    fleet = msgspec.structs.replace(
        settings, health_timeout_ms=600, databases={**settings.databases, **hung, **dead}
    )
    registry = EngineRegistry(fleet.databases)
    utils = MultiDatabaseUtils(fleet, registry, DatabaseRouter(get_roles(), {}))
    try:
        started = time.monotonic()
        health = await utils.health_check_all_databases()
        elapsed = time.monotonic() - started
        stats = await utils.get_all_database_stats()
    finally:
        await registry.dispose()
    # Nothing is hidden: every configured database is in the answer.
    assert list(health) == ["default", "analytics", "logging", "archive"]
    assert health["default"].status == "healthy"
    assert health["analytics"].status == health["archive"].status == "unhealthy"
    assert health["analytics"].error == "timed out after 600 ms"
    assert health["logging"].error == "connection refused"
    assert stats["default"].status == "available"
    assert stats["logging"].status == "unavailable"
    # Two hung checks ran side by side: one deadline, not two (serial would take >= 1.2 s).
    assert elapsed < 1.15
