"""A fifth role installed as a package (entry point) appears everywhere with no other change.

The package lives in ``tests/plugins/reporting``; the test installs it for real (a wheel
built and installed into a folder of its own) and puts that folder on the path, as an
installation into the environment would.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from multidb import migrations, plugins
from multidb.router import DatabaseRouter
from multidb.settings import load_settings
from multidb_devstack.embedded import EmbeddedPostgres, free_port
from tests.conftest import API_KEY, ROOT
from tests.processes import wait_ready

PACKAGE = ROOT / "tests" / "plugins" / "reporting"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    target = tmp_path_factory.mktemp("reporting-site")
    uv = os.environ.get("UV") or shutil.which("uv")
    assert uv, "uv is needed to install the test plugin"
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(PACKAGE)],
        check=True,
        capture_output=True,
    )
    sys.path.insert(0, str(target))
    plugins.get_plugin_manager.cache_clear()
    plugins.get_roles.cache_clear()
    yield target
    sys.path.remove(str(target))
    for name in [module for module in sys.modules if module.startswith("multidb_reporting")]:
        del sys.modules[name]
    plugins.get_plugin_manager.cache_clear()
    plugins.get_roles.cache_clear()


def test_fifth_role_is_discovered_configured_routed_migrated_and_served(
    installed: Path, embedded: EmbeddedPostgres | None, database_env: dict[str, str]
) -> None:
    if embedded is None:
        pytest.skip("needs the embedded server to create the fifth role's database")
    roles = plugins.get_roles()
    assert list(roles) == ["default", "analytics", "logging", "archive", "reporting"]
    spec = roles["reporting"]

    asyncio.run(embedded.create_databases([spec.database]))
    env = {**database_env, **embedded.environment({"reporting": spec}), "API_KEYS": API_KEY}
    settings = load_settings(env, roles)
    assert list(settings.databases) == ["default", "analytics", "logging", "archive", "reporting"]

    router = DatabaseRouter(roles, settings.routing)
    assert router.get_database_for_model("ReportSnapshot") == "reporting"
    assert router.models_by_database()["reporting"] == ["ReportSnapshot"]

    migrations.downgrade(spec, "base", settings.databases["reporting"])
    migrations.upgrade(spec, "head", settings.databases["reporting"])

    port = free_port()
    process_env = {
        **os.environ,
        **env,
        "MULTI_DB_ENV_FILE": os.devnull,
        "PYTHONPATH": os.pathsep.join([str(installed), os.environ.get("PYTHONPATH", "")]),
    }
    service = subprocess.Popen(
        [sys.executable, "-m", "multidb.service", "reporting", "--port", str(port)],
        env=process_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        headers = {"X-API-Key": API_KEY}
        wait_ready(service, f"{base}/readyz")
        with httpx.Client(base_url=base, timeout=5) as client:
            health = client.get("/health", headers=headers).json()
            assert health["status"] == "healthy"
            assert health["database_name"] == "ocr_reporting_db"
            assert health["detail"] == {"snapshots": 0}
            assert client.get("/stats", headers=headers).json()["detail"] == {
                "plugin": "multidb-reporting"
            }
            assert client.get("/models", headers=headers).json() == {
                "database": "reporting",
                "models": ["ReportSnapshot"],
            }
            assert client.get("/reports/ping", headers=headers).json() == {"pong": "reporting"}
            assert client.get("/reports/ping").status_code == 401
            refused = client.post(
                "/execute",
                headers=headers,
                json={"query": "SELECT * FROM report_snapshots WHERE title = 'secret'"},
            )
            assert refused.status_code == 403
            assert refused.json()["detail"] == "reporting: secret snapshots are off limits"
            allowed = client.post(
                "/execute", headers=headers, json={"query": "SELECT count(*) FROM report_snapshots"}
            )
            assert allowed.json()["result"] == [[0]]
        # The gateway discovers the new role through the same entry point, unchanged.
        gateway_port = free_port()
        gateway = subprocess.Popen(
            [sys.executable, "-m", "multidb_gateway", "--port", str(gateway_port)],
            env={**process_env, "MULTI_DB_REPORTING_SERVICE_URL": base},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            front = f"http://127.0.0.1:{gateway_port}"
            wait_ready(gateway, f"{front}/readyz")
            with httpx.Client(base_url=front, timeout=10) as client:
                configured = client.get("/database/configured", headers=headers).json()
                assert configured["databases"][-1] == "reporting"
                assert client.get("/database/models", headers=headers).json()["reporting"] == [
                    "ReportSnapshot"
                ]
                health = client.get("/database/health", headers=headers).json()
                assert health["reporting"]["status"] == "healthy"
                assert (
                    client.get("/database/reporting/stats", headers=headers).json()["status"]
                    == "available"
                )
                executed = client.post(
                    "/database/reporting/execute",
                    headers=headers,
                    json={"query": "SELECT title FROM report_snapshots WHERE title = 'secret'"},
                )
                assert executed.status_code == 403
        finally:
            gateway.terminate()
            gateway.wait(timeout=10)
    finally:
        service.terminate()
        service.wait(timeout=10)


def test_two_plugins_claiming_one_role_stop_start_up(installed: Path) -> None:
    import types

    from multidb import hookimpl
    from multidb_reporting import plugin as reporting

    impostor = types.ModuleType("impostor")
    impostor.multidb_role_spec = hookimpl(reporting.multidb_role_spec)  # type: ignore[attr-defined]
    manager = plugins.build_plugin_manager()
    manager.register(impostor, name="impostor")
    try:
        with pytest.raises(
            plugins.RoleConflictError, match="'reporting' is declared by two plugins"
        ):
            plugins.discover_roles(manager)
    finally:
        manager.unregister(impostor)
