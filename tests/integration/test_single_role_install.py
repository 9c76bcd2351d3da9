"""Each role deployable alone: its image's install, replayed without Docker.

Every target's build stages run as the Dockerfile says (tests/dockerfile.py: the same
``COPY`` and ``uv sync --package ... --no-dev`` steps, offline from uv's cache) and install
exactly the locked dependencies of what the target runs. Then the ``analytics`` install's
own ``multidb migrate analytics`` migrates a new database from nothing and its
``python -m multidb.service analytics`` serves it: no development stack, no other role.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import msgspec
import pytest

from multidb.execute_logins import derive_logins
from multidb.migrations import head_revision
from multidb.roles import RoleSpec
from multidb.settings import DatabaseSettings, load_settings, variable_name
from multidb_devstack.embedded import free_port
from tests.conftest import API_KEY, JWT_SECRET
from tests.dockerfile import (
    installed_distributions,
    locked_distributions,
    replay,
    stages,
    targets,
    uv_sync_packages,
)
from tests.processes import wait_ready

ROLE = "analytics"
FRESH_DATABASE = "multidb_single_role_install"


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    staging = tmp_path_factory.mktemp("image-analytics")
    replay(f"build-{ROLE}", staging, staging / ".venv")
    return staging / ".venv"


TARGETS = targets()


@pytest.mark.parametrize("target", TARGETS)
def test_each_image_holds_exactly_the_locked_install_of_what_it_runs(
    target: str, venv: Path, tmp_path: Path
) -> None:
    if target == ROLE:
        installed_venv = venv
    else:
        installed_venv = tmp_path / ".venv"
        replay(f"build-{target}", tmp_path, installed_venv)
    [command] = [c for c in stages()[f"build-{target}"].runs() if "--no-editable" in c]
    packages = uv_sync_packages(command)
    installed = installed_distributions(installed_venv)
    locked = locked_distributions(*packages)
    assert set(installed) == set(locked)
    for name, version in locked.items():
        if version != "workspace":
            assert installed[name] == version, name
    assert not {"pgserver", "multidb-devstack", "psutil", "cryptography"} & set(installed)
    roles_installed = {name for name in installed if name.startswith("multidb-")}
    if target == "gateway":
        assert roles_installed == {
            "multidb-gateway",
            *(f"multidb-{role}" for role in TARGETS if role != "gateway"),
        }
    else:
        assert roles_installed == {f"multidb-{target}"}, "no other role, no gateway"
    # Installed, not editable: nothing points back at the sources, which the image lacks.
    site = installed_venv.glob("lib/python*/site-packages/*.pth")
    assert not [path.name for path in site if "multidb" in path.name]


def _run(
    venv: Path, *args: str, env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / args[0]), *args[1:]],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.fixture
def fresh_database(
    database_env: dict[str, str], roles: dict[str, RoleSpec]
) -> Iterator[DatabaseSettings]:
    """A new, empty database on the suite's server, dropped afterwards."""
    suite = load_settings(database_env, roles).databases[ROLE]
    admin = msgspec.structs.replace(suite, database="postgres")
    fresh = msgspec.structs.replace(suite, database=FRESH_DATABASE)

    async def statement(sql: str) -> None:
        conn = await admin.connect()
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(statement(f'DROP DATABASE IF EXISTS "{FRESH_DATABASE}" WITH (FORCE)'))
    asyncio.run(statement(f'CREATE DATABASE "{FRESH_DATABASE}"'))
    yield fresh
    asyncio.run(statement(f'DROP DATABASE IF EXISTS "{FRESH_DATABASE}" WITH (FORCE)'))
    for login in (derive_logins(fresh).reader, derive_logins(fresh).writer):
        with contextlib.suppress(asyncpg.PostgresError):
            asyncio.run(statement(f'DROP ROLE IF EXISTS "{login.username}"'))


def test_the_role_alone_migrates_and_serves_a_new_database(
    venv: Path,
    fresh_database: DatabaseSettings,
    database_env: dict[str, str],
    roles: dict[str, RoleSpec],
    tmp_path: Path,
) -> None:
    spec = roles[ROLE]
    # Only this role's database variables, as its container gets them; no .env, no .data.
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "MULTI_DB_ENV_FILE": os.devnull,
        **{k: v for k, v in database_env.items() if k.startswith(spec.prefix)},
        variable_name(spec, "database"): FRESH_DATABASE,
    }

    found = _run(
        venv,
        "python",
        "-c",
        "from multidb.plugins import get_roles; print(*get_roles())",
        env=env,
        cwd=tmp_path,
    )
    assert found.stdout.split() == [ROLE], found.stderr
    no_stack = _run(venv, "multidb", "up", env=env, cwd=tmp_path)
    assert no_stack.returncode == 2, "no development stack: `multidb up` is no command here"
    assert "invalid choice: 'up'" in no_stack.stderr

    migrated = _run(venv, "multidb", "migrate", ROLE, env=env, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr

    async def current_revision() -> str | None:
        conn = await fresh_database.connect()
        try:
            revision: str | None = await conn.fetchval(
                f"SELECT version_num FROM {spec.version_table}"
            )
            return revision
        finally:
            await conn.close()

    assert asyncio.run(current_revision()) == head_revision(spec)

    port = free_port()
    service = subprocess.Popen(
        [str(venv / "bin" / "python"), "-m", "multidb.service", ROLE, "--port", str(port)],
        env={**env, "API_KEYS": API_KEY, "JWT_SECRET": JWT_SECRET},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_ready(service, f"http://127.0.0.1:{port}/readyz", timeout_s=60)
        health = httpx.get(
            f"http://127.0.0.1:{port}/health", headers={"X-API-Key": API_KEY}, timeout=10
        )
        assert health.status_code == 200, health.text
        assert health.json()["database_name"] == FRESH_DATABASE
    finally:
        service.terminate()
        service.wait(timeout=30)
